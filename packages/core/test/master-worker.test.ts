import { ApplicationError, LeaseLostError, systemClock } from '@taskgraph/api';
import type { Caller, Clock, EpochContext, InterceptedCall, MasterFrame, MasterStart, MasterTask, UpdateLog, WorkerEvent, WorkerFrame, WorkerTask } from '@taskgraph/api';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { eventually } from '@taskgraph/testkit';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalCluster, defineMethod, masterWorkerBuilder, masterWorkerJob, masterWorkerLinkages, createLogger, nodeResources, servePeer, silentLogger } from '../src/index.js';
import { masterStorePrefix } from '../src/master-worker/index.js';
import squaresApp from './fixtures/squares-app.js';

const SQUARE = defineMethod<number, number>('square');
const FORBIDDEN = defineMethod<number, number>('forbidden');
const WHO_AM_I = defineMethod<null, string>('whoAmI');
const PEER_SQUARE = defineMethod<number, number>('peerSquare');
const enc = new TextEncoder();
const dec = new TextDecoder();

/** What the test sees of every master and worker object ever made. */
interface Seen {
  masters: SquaresMaster[];
  workers: SquaresWorker[];
  /** Served calls by method and caller, counted by the workers' interceptors. */
  calls: Map<string, number>;
  /** `square` answers only the first `limit` calls until the test raises it (holds the job mid-way). */
  gate: { limit: number; served: number };
}

/**
 * Sums the squares of 1..items: one lane per worker takes the next item, asks a
 * worker for its square, records it (in `store`, and in `update()` when it has hot
 * backups). The sum is exact only if no item is lost or counted twice.
 */
class SquaresMaster implements MasterTask {
  frame!: MasterFrame;
  readonly done = new Map<number, number>();
  readonly starts: Array<MasterStart & { doneAtStart: number }> = [];
  readonly events: string[] = [];
  sum: number | undefined;
  /** Items whose square is recorded (shipped to the backups, and in the store). */
  acked = 0;
  readonly methods = [servePeer(WHO_AM_I, (_ctx, _input, caller) => who(caller)), servePeer(FORBIDDEN, (_ctx, n: number) => n)];

  constructor(
    private readonly items: number,
    private readonly hot: boolean,
  ) {}

  setup(frame: MasterFrame): void {
    this.frame = frame;
  }

  async run(ctx: EpochContext, start: MasterStart): Promise<void> {
    if (!start.promoted) for (const [key, value] of await this.frame.store.list('sq/')) this.done.set(Number(key.slice(3)), Number(dec.decode(value)));
    this.starts.push({ ...start, doneAtStart: this.done.size });
    const pending = Array.from({ length: this.items }, (_, i) => i + 1).filter((i) => !this.done.has(i));
    const lane = async (w: number) => {
      for (let item = pending.shift(); item !== undefined; item = pending.shift()) {
        const square = await this.frame.notifyWorker(ctx, w, SQUARE, item);
        this.done.set(item, square);
        const shipped = this.hot ? this.frame.update(ctx, enc.encode(`${item}=${square}`)) : undefined;
        await this.frame.store.put(`sq/${item}`, enc.encode(String(square)));
        await shipped;
        this.acked++;
      }
    };
    await Promise.all(Array.from({ length: this.frame.getNumWorkers() }, (_, w) => lane(w)));
    this.sum = [...this.done.values()].reduce((a, b) => a + b, 0);
  }

  workerJoined(_ctx: EpochContext, e: WorkerEvent): void {
    this.events.push(`joined ${e.workerId}@${e.incarnation}`);
  }
  workerFailed(_ctx: EpochContext, e: WorkerEvent): void {
    this.events.push(`failed ${e.workerId}@${e.incarnation}`);
  }
  workerRestarted(_ctx: EpochContext, e: WorkerEvent): void {
    this.events.push(`restarted ${e.workerId}@${e.incarnation}`);
  }
  intercept(_ctx: EpochContext, call: InterceptedCall): void {
    if (call.method === FORBIDDEN.name) throw new Error(`no ${call.method} for ${who(call.caller)}`);
  }
  exit(): void {}

  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify([...this.done]));
  }
  restore(snapshot: Uint8Array): void {
    this.done.clear();
    for (const [k, v] of JSON.parse(dec.decode(snapshot)) as Array<[number, number]>) this.done.set(k, v);
  }
  applyUpdate(log: UpdateLog): void {
    const [k, v] = dec.decode(log.data).split('=').map(Number);
    this.done.set(k!, v!);
  }
}

/** A master without hot-standby hooks (it fails over cold even when the job has backups). */
class ColdSquaresMaster extends SquaresMaster {
  constructor(items: number) {
    super(items, false);
    Object.assign(this, { snapshot: undefined, restore: undefined, applyUpdate: undefined });
  }
}

class SquaresWorker implements WorkerTask {
  frame!: WorkerFrame;
  readonly masterChanges: number[] = [];
  readonly methods;

  constructor(private readonly seen: Seen) {
    this.methods = [
      servePeer(SQUARE, async (_ctx: EpochContext, n: number) => {
        const ticket = ++seen.gate.served;
        await eventually('the gate', () => ticket <= seen.gate.limit, { timeoutMs: 60_000 });
        return n * n;
      }),
      servePeer(PEER_SQUARE, (_ctx: EpochContext, n: number) => n * n),
    ];
  }

  setup(frame: WorkerFrame): void {
    this.frame = frame;
  }
  masterChanged(_ctx: EpochContext, e: { incarnation: number }): void {
    this.masterChanges.push(e.incarnation);
  }
  intercept(_ctx: EpochContext, call: InterceptedCall): void {
    const key = `${call.method} from ${who(call.caller)}`;
    this.seen.calls.set(key, (this.seen.calls.get(key) ?? 0) + 1);
  }
  exit(): void {}
}

function who(caller: Caller): string {
  return caller.role === 'master' ? 'master' : `worker ${caller.workerId}`;
}

let seq = 0;
const clusters: LocalCluster[] = [];
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.close();
});

function squaresCluster(o: { workers: number; items: number; backups?: number; standbys: number; master: () => SquaresMaster }) {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const seen: Seen = { masters: [], workers: [], calls: new Map(), gate: { limit: Infinity, served: 0 } };
  const coordinator = () => new MemoryCoordinator({ store, namespace: 'tg' });
  const job = masterWorkerJob(o.workers, o.backups ?? 0);
  // The system clock under another identity: the frames must hand out the node's own clock.
  const clock: Clock = { now: () => systemClock.now(), setTimeout: (f, ms) => systemClock.setTimeout(f, ms), clearTimeout: (h) => systemClock.clearTimeout(h) };
  const cluster = new LocalCluster({
    job: `mw-${++seq}`,
    numTasks: job.numTasks,
    linkTypes: job.linkTypes,
    backups: job.backups ?? 0,
    ...(job.backupTasks ? { backupTasks: job.backupTasks } : {}),
    standbys: o.standbys,
    controllerCoordinator: coordinator(),
    resources: async () => nodeResources(coordinator(), await createLocalTransport({ network })),
    builder: () =>
      masterWorkerBuilder(o.workers, {
        master: () => (seen.masters.push(o.master()), seen.masters.at(-1)!),
        worker: () => (seen.workers.push(new SquaresWorker(seen)), seen.workers.at(-1)!),
      }),
    linkages: () => masterWorkerLinkages(o.workers),
    node: { sessionTtlMs: 500, clock },
    logger: process.env['MW_DEBUG'] ? createLogger({ level: 'debug' }) : silentLogger,
  });
  clusters.push(cluster);
  const jobName = `mw-${seq}`;
  const expected = Array.from({ length: o.items }, (_, i) => (i + 1) ** 2).reduce((a, b) => a + b, 0);
  const finished = () => seen.masters.find((m) => m.sum !== undefined);
  return { cluster, seen, expected, finished, coordinator, job: jobName, clock };
}

describe('master/worker', () => {
  it('the master hands work to every worker and the answer is exact; the interceptors see every call with its caller', async () => {
    const { cluster, seen, expected, finished, clock } = squaresCluster({ workers: 3, items: 30, standbys: 0, master: () => new SquaresMaster(30, false) });
    await cluster.start();
    expect((await cluster.waitUntilDone()).state).toBe('done');
    expect(finished()?.sum).toBe(expected);
    // Both sides time things on the node's clock (a simulator's virtual one, say).
    expect(seen.masters[0]!.frame.getClock()).toBe(clock);
    expect(seen.workers.map((w) => w.frame.getClock() === clock)).toEqual([true, true, true]);
    const served = [...seen.calls].filter(([k]) => k.startsWith('square from master')).reduce((a, [, n]) => a + n, 0);
    expect(served).toBe(30);
    const master = seen.masters[0]!;
    expect(master.events.filter((e) => e.startsWith('joined')).sort()).toEqual(['joined 0@1', 'joined 1@1', 'joined 2@1']);
    expect(master.starts).toEqual([{ incarnation: 1, promoted: false, seq: 0, doneAtStart: 0 }]);
  });

  it('workers call the master and each other; an interceptor rejects a call with a typed error', async () => {
    const { cluster, seen } = squaresCluster({ workers: 2, items: 1, standbys: 0, master: () => new SquaresMaster(1, false) });
    seen.gate.limit = 0;
    await cluster.start();
    await eventually('both workers', () => seen.workers.length === 2 && seen.workers.every((w) => w.frame !== undefined));
    const [w0] = seen.workers.sort((a, b) => a.frame.getWorkerId() - b.frame.getWorkerId());
    const ctx: EpochContext = { epoch: 0, signal: new AbortController().signal };
    expect(await w0!.frame.notifyMaster(ctx, WHO_AM_I, null)).toBe('worker 0');
    expect(await w0!.frame.dataRequest(ctx, 1, PEER_SQUARE, 9)).toBe(81);
    expect(seen.calls.get('peerSquare from worker 0')).toBe(1);
    const refused = await w0!.frame.notifyMaster(ctx, FORBIDDEN, 3).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApplicationError);
    expect((refused as Error).message).toContain('no forbidden for worker 0');
    await expect(w0!.frame.dataRequest(ctx, 2, PEER_SQUARE, 1)).rejects.toThrow('worker 2 does not exist');
    seen.gate.limit = Infinity;
    expect((await cluster.waitUntilDone()).state).toBe('done');
  });

  it('a worker killed mid-job: the master hears it fail and restart in order, its call follows it, the answer is exact', async () => {
    const { cluster, seen, expected, finished } = squaresCluster({ workers: 2, items: 20, standbys: 1, master: () => new SquaresMaster(20, false) });
    seen.gate.limit = 0;
    await cluster.start();
    await eventually('both workers joined', () => seen.masters[0]?.events.length === 2);
    await cluster.kill(2);
    seen.gate.limit = Infinity;
    expect((await cluster.waitUntilDone()).state).toBe('done');
    expect(finished()?.sum).toBe(expected);
    const events = seen.masters[0]!.events.filter((e) => e.endsWith(' 1@1') || e.endsWith(' 1@2'));
    expect(events).toEqual(['joined 1@1', 'failed 1@1', 'restarted 1@2']);
  });

  it('the master killed with a hot backup: the backup is promoted with the state and run continues without redoing work', async () => {
    const { cluster, seen, expected, finished } = squaresCluster({ workers: 2, items: 40, backups: 1, standbys: 0, master: () => new SquaresMaster(40, true) });
    seen.gate.limit = 20;
    await cluster.start();
    await eventually('a backup of the master', () => cluster.backupsOf(0).length === 1);
    await eventually('20 items acknowledged', () => seen.masters.find((m) => m.starts.length > 0)?.acked === 20);
    await cluster.kill(0);
    // Heard while the work is still held back: once the job is done, workers leave and hear nothing more.
    await eventually('the workers heard of the new master', () => seen.workers.every((w) => w.masterChanges.includes(2)));
    seen.gate.limit = Infinity;
    expect((await cluster.waitUntilDone()).state).toBe('done');
    const promoted = seen.masters.find((m) => m.starts.some((s) => s.promoted))!;
    expect(promoted.starts).toEqual([{ incarnation: 2, promoted: true, seq: 20, doneAtStart: 20 }]);
    expect(finished()?.sum).toBe(expected);
  });

  it.each([
    { how: 'only a cold standby', backups: 0, standbys: 1, master: () => new SquaresMaster(40, false) },
    { how: 'a backup but a master that cannot be mirrored', backups: 1, standbys: 0, master: () => new ColdSquaresMaster(40) },
  ])('the master killed with $how: the new master rebuilds from its store and re-runs', async ({ backups, standbys, master }) => {
    const { cluster, seen, expected, finished } = squaresCluster({ workers: 2, items: 40, backups, standbys, master });
    seen.gate.limit = 20;
    await cluster.start();
    await eventually('20 items stored', () => seen.masters.find((m) => m.starts.length > 0)?.acked === 20);
    const first = seen.masters.find((m) => m.starts.length > 0)!;
    await cluster.kill(0);
    seen.gate.limit = Infinity;
    expect((await cluster.waitUntilDone()).state).toBe('done');
    const second = seen.masters.find((m) => m !== first && m.starts.length > 0)!;
    expect(second.starts).toEqual([{ incarnation: 2, promoted: false, seq: 0, doneAtStart: 20 }]);
    expect(finished()?.sum).toBe(expected);
  });
});

describe('a worker that announces itself before the master has heard it is the primary', () => {
  it('is taken in (the master serves as soon as its address is published, before becamePrimary runs): every worker joins', async () => {
    const store = new MemoryStore();
    const network = new LocalNetwork();
    const hellos: string[] = [];
    let helloAnswered!: () => void;
    const answered = new Promise<void>((resolve) => (helloAnswered = resolve));
    // The master's address write is visible to the workers at once, but its answer waits until a worker's hello
    // was answered: the master serves by then, and its becamePrimary has not run.
    const coordinator = () =>
      new Proxy(new MemoryCoordinator({ store, namespace: 'tg' }), {
        get(target, prop, receiver) {
          const value: unknown = Reflect.get(target, prop, receiver);
          if (typeof value !== 'function') return value;
          if (prop !== 'create') return (value as (...a: unknown[]) => unknown).bind(target);
          return async (key: string, ...rest: unknown[]) => {
            const out: unknown = await (value as (...a: unknown[]) => Promise<unknown>).call(target, key, ...rest);
            if (key.endsWith('/tasks/0/addr')) await answered;
            return out;
          };
        },
      });
    const transport = async () => {
      const t = await createLocalTransport({ network });
      return new Proxy(t, {
        get(target, prop, receiver) {
          const value: unknown = Reflect.get(target, prop, receiver);
          if (typeof value !== 'function') return value;
          if (prop !== 'call') return (value as (...a: unknown[]) => unknown).bind(target);
          return async (...args: unknown[]) => {
            const call = (value as (...a: unknown[]) => Promise<Uint8Array>).apply(target, args);
            if (args[1] !== 'tgmw_hello') return call;
            return call.then(
              (v) => (hellos.push('ok'), helloAnswered(), v),
              (e: unknown) => (hellos.push(String(e)), helloAnswered(), Promise.reject(e as Error)),
            );
          };
        },
      });
    };
    const seen: SquaresMaster[] = [];
    const job = masterWorkerJob(2);
    const cluster = new LocalCluster({
      job: 'early-hello',
      numTasks: job.numTasks,
      linkTypes: job.linkTypes,
      standbys: 0,
      controllerCoordinator: new MemoryCoordinator({ store, namespace: 'tg' }),
      resources: async () => nodeResources(coordinator(), await transport()),
      builder: () =>
        masterWorkerBuilder(2, {
          master: () => (seen.push(new SquaresMaster(4, false)), seen.at(-1)!),
          worker: () => new SquaresWorker({ masters: [], workers: [], calls: new Map(), gate: { limit: Infinity, served: 0 } }),
        }),
      linkages: () => masterWorkerLinkages(2),
      node: { sessionTtlMs: 500 },
      logger: silentLogger,
    });
    clusters.push(cluster);
    await cluster.start();
    expect((await cluster.waitUntilDone()).state).toBe('done');
    expect(hellos[0]).toBe('ok');
    expect(seen[0]!.events.sort()).toEqual(['joined 0@1', 'joined 1@1']);
  });
});

describe('the README example', () => {
  it('runs as an application module: the master reports the sum of the squares', async () => {
    const store = new MemoryStore();
    const network = new LocalNetwork();
    const reports: unknown[] = [];
    const ctx = { numTasks: 3, args: {}, logger: silentLogger, report: (r: unknown) => void reports.push(r) };
    const job = masterWorkerJob(2);
    const cluster = new LocalCluster({
      job: 'readme-squares',
      numTasks: job.numTasks,
      linkTypes: squaresApp.linkTypes,
      standbys: 0,
      controllerCoordinator: new MemoryCoordinator({ store, namespace: 'tg' }),
      resources: async () => nodeResources(new MemoryCoordinator({ store, namespace: 'tg' }), await createLocalTransport({ network })),
      builder: () => squaresApp.taskBuilder(ctx),
      linkages: () => squaresApp.linkages(ctx),
      logger: silentLogger,
    });
    clusters.push(cluster);
    await cluster.start();
    expect((await cluster.waitUntilDone()).state).toBe('done');
    expect(reports).toEqual([{ sum: 30 }]);
    expect(squaresApp.paradigm).toBe('master-worker');
  });
});

describe('master/worker fencing', () => {
  it('the master store refuses to overwrite or delete a newer master’s value, and checks its keys', async () => {
    const { cluster, seen, coordinator, job } = squaresCluster({ workers: 1, items: 1, standbys: 0, master: () => new SquaresMaster(1, false) });
    seen.gate.limit = 0;
    await cluster.start();
    await eventually('the master runs', () => seen.masters[0]?.starts.length === 1);
    const store = seen.masters[0]!.frame.store;
    await store.put('a/b', enc.encode('x'));
    expect(dec.decode((await store.get('a/b'))!)).toBe('x');
    await store.put('a/b', enc.encode('y'));
    expect([...(await store.list('a/'))].map(([k, v]) => `${k}=${dec.decode(v)}`)).toEqual(['a/b=y']);
    for (const bad of ['', '../x', 'a//b', 'a/./b', 'x'.repeat(129), 'sp ace']) await expect(store.put(bad, enc.encode('x'))).rejects.toThrow('key');
    await expect(store.put('big', new Uint8Array(store.maxValueBytes + 1))).rejects.toThrow('limit');
    await store.delete('a/b');
    expect(await store.get('a/b')).toBeUndefined();
    await store.delete('a/b');
    // A value written by a (pretend) newer master: token 10^15, far above this master's.
    const c = coordinator();
    const newer = new Uint8Array([16, ...enc.encode('1000000000000000'), ...enc.encode('theirs')]);
    await c.create(`${masterStorePrefix(job)}taken`, newer);
    await expect(store.put('taken', enc.encode('mine'))).rejects.toThrow(LeaseLostError);
    await expect(store.delete('taken')).rejects.toThrow(LeaseLostError);
    expect(dec.decode((await store.get('taken'))!)).toBe('theirs');
    await c.close();
    seen.gate.limit = Infinity;
    await cluster.waitUntilDone();
  });

  it('a worker whose node left sends nothing more: its calls reject with LeaseLostError', async () => {
    const { cluster, seen } = squaresCluster({ workers: 2, items: 4, standbys: 1, master: () => new SquaresMaster(4, false) });
    seen.gate.limit = 0;
    await cluster.start();
    await eventually('both workers joined', () => seen.masters[0]?.events.length === 2);
    const victim = seen.workers.find((w) => w.frame.getWorkerId() === 1)!;
    await cluster.kill(2);
    const ctx: EpochContext = { epoch: 0, signal: new AbortController().signal };
    await expect(victim.frame.notifyMaster(ctx, WHO_AM_I, null)).rejects.toThrow(LeaseLostError);
    await expect(victim.frame.dataRequest(ctx, 0, PEER_SQUARE, 2)).rejects.toThrow(LeaseLostError);
    seen.gate.limit = Infinity;
    expect((await cluster.waitUntilDone()).state).toBe('done');
  });
});
