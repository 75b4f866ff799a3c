/**
 * The framework side: a real two-task job (embedded memory coordinator, gRPC
 * transport on 127.0.0.1) in which task 0 serves an echo method with the bytes
 * codec and task 1 calls it with `framework.dataRequest`. The calls are made
 * inside task 1's `enterEpoch` callback, with the epoch context the framework
 * gave it, exactly as an application makes them; the harness only hands that
 * callback loads to run (so framework and raw runs can be interleaved) and takes
 * the results back.
 */
import { ClosedError, InternalError } from '@taskgraph/api';
import type { EpochContext, Framework, Logger, Task, TaskBuilder } from '@taskgraph/api';
import { LocalCluster, bytesCodec, defineMethod, nodeResources, serve, silentLogger } from '@taskgraph/core';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { createGrpcTransport, optionsFromUrl } from '@taskgraph/transport-grpc';
import type { GrpcTransport } from '@taskgraph/transport-grpc';
import { runLoad } from './load.js';
import type { LoadResult, LoadSpec } from './load.js';

export const ECHO = defineMethod<Uint8Array, Uint8Array>('echo', { input: bytesCodec, output: bytesCodec });

const SERVER_TASK = 0;
const CALLER_TASK = 1;

interface Work {
  readonly payload: Uint8Array;
  readonly spec: LoadSpec;
  resolve(result: LoadResult): void;
  reject(err: unknown): void;
}

/** Loads waiting for the caller task; `next` resolves undefined once closed. */
class Inbox {
  readonly #items: Work[] = [];
  #wake: (() => void) | undefined;
  #closed = false;

  push(work: Work): void {
    if (this.#closed) {
      work.reject(new ClosedError('the framework benchmark is closed'));
      return;
    }
    this.#items.push(work);
    this.#wake?.();
  }

  async next(signal: AbortSignal): Promise<Work | undefined> {
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) return item;
      if (this.#closed || signal.aborted) return undefined;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#wake = undefined;
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.#wake = done;
        signal.addEventListener('abort', done, { once: true });
      });
    }
  }

  close(): void {
    this.#closed = true;
    for (const item of this.#items.splice(0)) item.reject(new ClosedError('the framework benchmark closed before this load ran'));
    this.#wake?.();
  }
}

class EchoServerTask implements Task {
  readonly methods = [serve(ECHO, (_ctx: EpochContext, input: Uint8Array) => input)];
  init(): void {}
  enterEpoch(): void {}
  metaReady(): void {}
  exit(): void {}
}

class CallerTask implements Task {
  #framework: Framework | undefined;

  constructor(
    private readonly inbox: Inbox,
    private readonly onReady: () => void,
  ) {}

  init(_taskId: number, framework: Framework): void {
    this.#framework = framework;
  }

  async enterEpoch(ctx: EpochContext): Promise<void> {
    const framework = this.#framework!;
    this.onReady();
    for (;;) {
      const work = await this.inbox.next(ctx.signal);
      if (work === undefined) return;
      const size = work.payload.byteLength;
      const call = async (): Promise<void> => {
        const out = await framework.dataRequest(ctx, SERVER_TASK, ECHO, work.payload);
        if (out.byteLength !== size) throw new InternalError(`the echo answered ${out.byteLength} bytes to ${size}`);
      };
      try {
        work.resolve(await runLoad(call, work.spec));
      } catch (err) {
        work.reject(err);
      }
    }
  }

  metaReady(): void {}
  exit(): void {}
}

export interface FrameworkEcho {
  /** Runs a load of `dataRequest` calls with `payload` inside the caller task. */
  run(payload: Uint8Array, spec: LoadSpec): Promise<LoadResult>;
  /** The ports of the servers the caller's transport has channels to (one per peer it called). */
  peerPorts(): number[];
  /** Channels the caller's transport holds open now. */
  channels(): number;
  close(): Promise<void>;
}

export interface FrameworkEchoOptions {
  readonly maxMessageBytes: number;
  readonly logger?: Logger;
  /** How long to wait for the job to start. Default 30 s. */
  readonly startTimeoutMs?: number;
  /** The nodes' transport, e.g. a grpcs:// URL with a job CA or a job secret. Default grpc://127.0.0.1:0. */
  readonly transportUrl?: string;
}

/** Starts the two-task job and resolves once the caller task is in its epoch. */
export async function startFrameworkEcho(options: FrameworkEchoOptions): Promise<FrameworkEcho> {
  const logger = options.logger ?? silentLogger;
  const store = new MemoryStore({ name: 'bench' });
  const transports = new Map<number, GrpcTransport>();
  const inbox = new Inbox();
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));

  const controllerCoordinator = await createMemoryCoordinator({ store, logger });
  const builder: TaskBuilder = {
    getTask: (taskId) => (taskId === SERVER_TASK ? new EchoServerTask() : new CallerTask(inbox, ready)),
  };
  const cluster = new LocalCluster({
    job: `bench-data-plane-${process.pid}`,
    numTasks: 2,
    linkTypes: ['Peers'],
    standbys: 0,
    // A benchmark measures; it does not heal. A node that failed would show as an error.
    replaceLostNodes: false,
    controllerCoordinator,
    resources: async (index) => {
      const coordinator = await createMemoryCoordinator({ store, logger });
      const transport = await createGrpcTransport({
        ...optionsFromUrl(options.transportUrl ?? 'grpc://127.0.0.1:0'),
        maxMessageBytes: options.maxMessageBytes,
        logger,
      });
      transports.set(index, transport);
      return nodeResources(coordinator, transport);
    },
    builder: () => builder,
    linkages: () => ({}),
    // A long session, so a machine too busy to run a keepalive in time does not end the job mid-run.
    node: { sessionTtlMs: 60_000, attemptTimeoutMs: 60_000 },
    logger,
  });

  const closeAll = async (): Promise<void> => {
    inbox.close();
    await cluster.close();
    await controllerCoordinator.close();
  };

  try {
    await cluster.start();
    await withTimeout(isReady, options.startTimeoutMs ?? 30_000, 'the benchmark job did not start its caller task');
  } catch (err) {
    await closeAll();
    throw err;
  }

  const caller = (): GrpcTransport => {
    const owner = cluster.ownerOf(CALLER_TASK);
    const transport = owner === undefined ? undefined : transports.get(owner.index);
    if (transport === undefined) throw new InternalError('no node runs the caller task any more');
    return transport;
  };

  return {
    run: (payload, spec) =>
      new Promise<LoadResult>((resolve, reject) => {
        inbox.push({ payload, spec, resolve, reject });
      }),
    peerPorts: () => caller().stats().peers.map((p) => Number(p.address.slice(p.address.lastIndexOf(':') + 1))),
    channels: () => caller().stats().channels,
    close: closeAll,
  };
}

async function withTimeout(promise: Promise<void>, ms: number, what: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new InternalError(`${what} within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
