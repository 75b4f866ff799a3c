/**
 * Test helpers: a real regression job run in-process on the memory store (with a
 * gate that holds it at an epoch, so a test acts on a running job without racing
 * its end), an event-stream reader, and a coordinator that counts its lists and
 * watches.
 */
import { request } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Coordinator, ListResult, WatchBatch, WatchOptions } from '@taskgraph/api';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import { eventually } from '@taskgraph/testkit';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, regressionLinkages } from '@taskgraph/workloads';

export const NAMESPACE = 'tg';

export interface RunningJob {
  readonly job: string;
  readonly store: MemoryStore;
  readonly cluster: LocalCluster;
  /** A store client of the job's namespace, for the dashboard (the test closes it). */
  readonly coordinator: Coordinator;
  /** Requests served, per task (counted as the regression job's hook sees them). */
  readonly served: Map<number, number>;
  /** Lets the job run past the gate epoch (to its end). */
  release(): void;
  close(): Promise<void>;
}

export interface JobOptions {
  readonly job?: string;
  readonly numTasks?: number;
  readonly standbys?: number;
  readonly numEpochs?: number;
  /** Requests in this epoch and later wait until release(). Default: none. */
  readonly gateEpoch?: number;
  readonly store?: MemoryStore;
}

let jobSeq = 0;

/** The seed's regression job on a LocalCluster (memory store, local transport). */
export async function startRegressionJob(o: JobOptions = {}): Promise<RunningJob> {
  const job = o.job ?? `dash-${process.pid}-${++jobSeq}`;
  const numTasks = o.numTasks ?? 7;
  const store = o.store ?? new MemoryStore();
  const network = new LocalNetwork();
  let released = false;
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const served = new Map<number, number>();
  const cluster = new LocalCluster({
    job,
    numTasks,
    linkTypes: REGRESSION_LINK_TYPES,
    standbys: o.standbys ?? 2,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: NAMESPACE }),
    resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: NAMESPACE }), await createLocalTransport({ network })),
    builder: () =>
      new RegressionTaskBuilder({
        numTasks,
        numEpochs: o.numEpochs ?? 10,
        beforeServe: async ({ taskId, epoch }) => {
          served.set(taskId, (served.get(taskId) ?? 0) + 1);
          if (o.gateEpoch !== undefined && epoch >= o.gateEpoch && !released) await gate;
        },
      }),
    linkages: () => regressionLinkages({ numTasks }),
    // kill() frees a slot at once; a long lease keeps a loaded machine from failing tasks over by itself.
    node: { sessionTtlMs: 5000 },
    logger: silentLogger,
  });
  const coordinator = await createMemoryCoordinator({ store, namespace: NAMESPACE });
  await cluster.start();
  return {
    job,
    store,
    cluster,
    coordinator,
    served,
    release: () => {
      released = true;
      open();
    },
    close: async () => {
      released = true;
      open();
      await cluster.close();
      await coordinator.close();
    },
  };
}

/** Waits until every task of the job runs on a node and the epoch reached `epoch`. */
export async function waitUntilRunning(run: RunningJob, epoch: number): Promise<void> {
  await eventually(
    `job ${run.job} runs every task at epoch ${epoch} or later`,
    async () => {
      const s = await run.cluster.controller.status();
      return s !== undefined && s.epoch >= epoch && s.tasks.every((t) => t.nodeId !== undefined);
    },
    { timeoutMs: 30_000 },
  );
}

export interface SseEvent {
  readonly event: string;
  readonly data: string;
}

/** Reads an event stream: every event it sent, in order. */
export class SseReader {
  readonly events: SseEvent[] = [];
  /** The raw text received, for framing checks. */
  raw = '';
  ended = false;
  status = 0;
  headers: IncomingMessage['headers'] = {};
  private buffer = '';
  private res: IncomingMessage | undefined;
  private readonly req;

  constructor(url: string) {
    this.req = request(url, { headers: { accept: 'text/event-stream' } }, (res) => {
      this.res = res;
      this.status = res.statusCode ?? 0;
      this.headers = res.headers;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => this.take(chunk));
      res.on('end', () => (this.ended = true));
      res.on('close', () => (this.ended = true));
      res.on('error', () => (this.ended = true));
    });
    this.req.on('error', () => (this.ended = true));
    this.req.end();
  }

  of(event: string): unknown[] {
    return this.events.filter((e) => e.event === event).map((e) => JSON.parse(e.data) as unknown);
  }

  /** Waits until the stream has an event matching `match`; resolves with its data. */
  async next<T>(what: string, event: string, match: (data: T) => boolean = () => true, from = 0): Promise<T> {
    return eventually(
      what,
      () => {
        for (let i = from; i < this.events.length; i++) {
          const e = this.events[i]!;
          if (e.event !== event) continue;
          const data = JSON.parse(e.data) as T;
          if (match(data)) return { data };
        }
        return undefined;
      },
      { timeoutMs: 20_000 },
    ).then((r) => r.data);
  }

  close(): void {
    this.req.destroy();
    this.res?.destroy();
  }

  private take(chunk: string): void {
    this.raw += chunk;
    this.buffer += chunk;
    for (let end = this.buffer.indexOf('\n\n'); end >= 0; end = this.buffer.indexOf('\n\n')) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      let any = false;
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') {
          data.push(value);
          any = true;
        }
      }
      if (any) this.events.push({ event, data: data.join('\n') });
    }
  }
}

/** A plain GET: status, headers and body. */
export function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A coordinator that counts the lists and watches made through it, and the watches open now. */
export interface CountingCoordinator extends Coordinator {
  readonly lists: string[];
  readonly watches: string[];
  open(): number;
}

export function counting(inner: Coordinator): CountingCoordinator {
  let open = 0;
  const lists: string[] = [];
  const watches: string[] = [];
  return {
    lists,
    watches,
    open: () => open,
    caps: inner.caps,
    get: (key) => inner.get(key),
    list: (prefix: string): Promise<ListResult> => {
      lists.push(prefix);
      return inner.list(prefix);
    },
    create: (key, value, options) => inner.create(key, value, options),
    update: (key, value, expect) => inner.update(key, value, expect),
    delete: (key, expect) => inner.delete(key, expect),
    deletePrefix: (prefix) => inner.deletePrefix(prefix),
    watch: (prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> => {
      watches.push(prefix);
      const source = inner.watch(prefix, options);
      return {
        async *[Symbol.asyncIterator]() {
          open++;
          try {
            yield* source;
          } finally {
            open--;
          }
        },
      };
    },
    openSession: (options) => inner.openSession(options),
    endSession: (id) => inner.endSession(id),
    acquire: (name, session, options) => inner.acquire(name, session, options),
    tryAcquire: (name, session, options) => inner.tryAcquire(name, session, options),
    holder: (name) => inner.holder(name),
    close: () => inner.close(),
  };
}
