/**
 * One simulated run: a whole job (controller, nodes with standbys and backups, the
 * real core runtime, the in-memory store and network) on virtual time, with the
 * seed's fault schedule, the invariants checked after every step, and the workload's
 * exact answer checked at the end.
 */
import type { EpochContext, Framework, InboundRequest, ListenOptions, LogFields, Logger, RoleChange, Task, TaskBuilder, Transport } from '@taskgraph/api';
import { TaskGraphError } from '@taskgraph/api';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { TaskGraphNode, createController, jobKeys, silentLogger } from '@taskgraph/core';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import type { Fault as NetFault } from '@taskgraph/transport-local';
import { describeFault, drawSchedule, healedAt } from './faults.js';
import type { Fault, FaultKind } from './faults.js';
import { Guard } from './guard.js';
import { Rng } from './rng.js';
import { Scheduler } from './scheduler.js';
import type { Actor, RunEnd } from './scheduler.js';
import { makeWorkload } from './workloads.js';
import type { Workload, WorkloadName } from './workloads.js';

export interface SimulateOptions {
  readonly seed: number;
  readonly workload: WorkloadName;
  /** The fault schedule to run instead of the seed's (a shrunk one). */
  readonly faults?: readonly Fault[];
  /** Run only these faults of the seed's schedule, by index (how a shrunk failure is replayed). */
  readonly keep?: readonly number[];
  /** Session TTL of every node. Default 1000 ms. */
  readonly ttlMs?: number;
  /** After the last fault heals, the job must be done within this much virtual time. Default 60 s. */
  readonly livenessMs?: number;
  /** Stop after this many events (a guard against a run that never ends). Default 2,000,000. */
  readonly maxSteps?: number;
  /** Draw no faults (the seed still drives delays and ordering). */
  readonly noFaults?: boolean;
  /** Where the nodes' log lines go (default: nowhere), each with the virtual time and the node's name. */
  readonly log?: (line: string) => void;
}

export interface SimulateResult {
  readonly seed: number;
  readonly workload: WorkloadName;
  readonly ok: boolean;
  readonly violations: readonly string[];
  readonly faults: readonly Fault[];
  /** Faults that struck, by kind. */
  readonly injected: Readonly<Partial<Record<FaultKind, number>>>;
  readonly traceHash: string;
  readonly steps: number;
  readonly virtualMs: number;
  readonly end: RunEnd;
  readonly nodesStarted: number;
  /** How many times each invariant was checked. */
  readonly checked: Readonly<Record<string, number>>;
}

const JOB = 'sim';
const NAMESPACE = 'tg';

interface SimNode {
  readonly actor: Actor;
  readonly node: TaskGraphNode;
  readonly coordinator: MemoryCoordinator;
  readonly transport: LocalTransport;
  done: boolean;
}

export async function simulate(o: SimulateOptions): Promise<SimulateResult> {
  const workload = await makeWorkload(o.workload);
  const rng = new Rng(o.seed);
  const scheduleRng = rng.fork();
  const ttlMs = o.ttlMs ?? 1000;
  // Faults strike while the job runs: a run without faults takes about this long (virtual).
  const horizonMs = { regression: 500, 'hot-standby': 400, mapreduce: 200 }[o.workload];
  const drawn = o.noFaults ? [] : drawSchedule(scheduleRng, { horizonMs, ttlMs, maxFaults: 6, ...(workload.needsACopy ? { spacingMs: 4 * ttlMs } : {}) });
  const faults = o.faults ?? (o.keep ? o.keep.map((k) => drawn[k]).filter((f): f is Fault => f !== undefined) : drawn);
  const sched = new Scheduler(rng);
  const violations: string[] = [];
  const violate = (v: string): void => {
    if (violations.length < 50) violations.push(`${sched.now.toFixed(1)}ms: ${v}`);
  };

  const storeActor = sched.actor('store');
  const netActor = sched.actor('network');
  const ctlActor = sched.actor('controller');
  const chaos = sched.actor('chaos');
  const store = new MemoryStore({ clock: storeActor.clock, historyLimit: 100_000 });
  const network = new LocalNetwork({ clock: netActor.clock });
  // Every message takes a little while, drawn per leg: the order of deliveries varies with the seed.
  network.delayRequests({ ms: [0.5, 10] });
  network.delayResponses({ ms: [0.5, 10] });

  const checker = new Invariants(workload, store, violate, () => sched.now, () => new Set(nodes.filter((n) => !n.done && !n.actor.dead).map((n) => n.actor.name)));
  const nodes: SimNode[] = [];
  let started = 0;
  const injected: Partial<Record<FaultKind, number>> = {};
  let jobDone = false;

  const ctlClient = new MemoryCoordinator({ store, namespace: NAMESPACE, clock: ctlActor.clock, id: 'controller' });
  const controller = createController({ coordinator: ctlClient, job: JOB, logger: silentLogger, clock: ctlActor.clock });

  const startNode = (): void => {
    const actor = sched.actor(`n${started++}`);
    const coordinator = new MemoryCoordinator({ store, namespace: NAMESPACE, clock: actor.clock, id: actor.name });
    const transport = new LocalTransport({ network, name: actor.name, clock: actor.clock });
    const node = new TaskGraphNode({
      job: JOB,
      coordinator,
      transport: checker.observe(actor.name, transport),
      nodeId: actor.name,
      sessionTtlMs: ttlMs,
      attemptTimeoutMs: 2000,
      drainMs: 200,
      clock: actor.clock,
      logger: o.log ? virtualTimeLogger(o.log, () => sched.now, { node: actor.name }) : silentLogger,
    });
    node.setTaskBuilder(checker.wrapBuilder(actor.name, workload.builder()));
    for (const [lt, topo] of Object.entries(workload.linkages())) node.addLinkage(lt, topo);
    const sim: SimNode = { actor, node, coordinator, transport, done: false };
    nodes.push(sim);
    node.start().then(
      () => onEnd(sim),
      () => onEnd(sim),
    );
  };
  // A supervisor: a node that ended while the job runs (its lease lost, it failed) is replaced, as a process manager restarts it.
  const onEnd = (sim: SimNode): void => {
    sim.done = true;
    if (!jobDone && !sim.actor.dead) sched.at(chaos, rng.between(50, 300), () => (jobDone ? undefined : startNode()));
  };
  const live = (): SimNode[] => nodes.filter((n) => !n.done && !n.actor.dead);
  const pickLive = (i: number): SimNode | undefined => {
    const l = live();
    return l.length === 0 ? undefined : l[i % l.length];
  };

  const apply = (f: Fault): void => {
    injected[f.kind] = (injected[f.kind] ?? 0) + 1;
    sched.record(`fault ${describeFault(f)}`);
    const heal = (fn: () => void): void => void sched.at(chaos, f.durationMs, fn);
    switch (f.kind) {
      case 'crash': {
        const n = pickLive(f.target);
        if (!n) return;
        // kill -9: the process stops; its session is left to expire; a new process starts later.
        n.actor.dead = true;
        heal(() => (jobDone ? undefined : startNode()));
        return;
      }
      case 'pause': {
        const n = pickLive(f.target);
        if (n) n.actor.pausedUntil = Math.max(n.actor.pausedUntil, sched.now + f.durationMs);
        return;
      }
      case 'store-partition': {
        const n = pickLive(f.target);
        if (!n) return;
        n.coordinator.setUnreachable(true);
        heal(() => n.coordinator.setUnreachable(false));
        return;
      }
      case 'peer-partition': {
        const a = pickLive(f.target);
        const b = pickLive(f.param);
        if (!a || !b || a === b) return;
        sched.record(`cut ${a.actor.name} ${b.actor.name}`);
        const cut = [
          network.dropRequests({ from: `local://${a.actor.name}`, address: `local://${b.actor.name}` }),
          network.dropRequests({ from: `local://${b.actor.name}`, address: `local://${a.actor.name}` }),
        ];
        heal(() => cut.forEach((c) => c.remove()));
        return;
      }
      case 'message-delay':
      case 'message-drop':
      case 'message-duplicate': {
        const rules: NetFault[] =
          f.kind === 'message-delay'
            ? [network.delayRequests({ ms: [1, ttlMs / 2], probability: f.probability }), network.delayResponses({ ms: [1, ttlMs / 2], probability: f.probability })]
            : f.kind === 'message-drop'
              ? [network.dropRequests({ probability: f.probability }), network.dropResponses({ probability: f.probability })]
              : [network.duplicateRequests({ probability: f.probability, ms: [0, 50] })];
        heal(() => rules.forEach((r) => r.remove()));
        return;
      }
      case 'store-outage':
        store.freeze();
        heal(() => store.unfreeze());
        return;
      case 'unknown-outcome':
        // Every call that changes the store: writes, lock acquires and releases.
        store.faults.add({ op: '*', applied: true, times: f.param });
        return;
      case 'clock-jump': {
        const n = pickLive(f.target);
        if (n) sched.jump(n.actor, f.param);
        return;
      }
    }
  };
  for (const f of faults) sched.at(chaos, f.at, () => apply(f));

  const guard = new Guard();
  const onRejection = (reason: unknown): void => violate(`unhandled rejection: ${describe(reason)}${reason instanceof Error && reason.stack ? `\n${reason.stack.split('\n').slice(1, 8).join('\n')}` : ''}`);
  process.on('unhandledRejection', onRejection);
  guard.install();
  let end: RunEnd;
  try {
    // The job is created on virtual time too (its store calls are answered by events), then the nodes start.
    // createJob is idempotent: an operator whose call met a store fault runs it again.
    const create = (attempt: number): void => {
      controller
        .createJob({
          numTasks: workload.numTasks,
          linkTypes: workload.linkTypes,
          backups: workload.backups,
          ...(workload.backupTasks ? { backupTasks: workload.backupTasks } : {}),
        })
        .then(
          () => {
            const slots = workload.numTasks + (workload.backupTasks?.length ?? workload.numTasks) * workload.backups;
            for (let i = 0; i < slots + workload.standbys; i++) startNode();
          },
          (err: unknown) => {
            if (TaskGraphError.is(err, 'UNAVAILABLE') && attempt < 50) sched.at(ctlActor, 200, () => create(attempt + 1));
            else violate(`the controller could not create the job: ${describe(err)}`);
          },
        );
    };
    sched.at(ctlActor, 0, () => create(1));
    const deadline = healedAt(faults) + (o.livenessMs ?? 60_000);
    end = await sched.run({
      maxTimeMs: deadline,
      maxSteps: o.maxSteps ?? 2_000_000,
      afterStep: () => {
        checker.step(sched);
        if (!jobDone && checker.jobDone) jobDone = true;
      },
      done: () => jobDone && live().every((n) => n.done),
      onError: (err, actor) => violate(`uncaught error in an event of ${actor.name}: ${describe(err)}`),
    });
  } finally {
    guard.uninstall();
    process.off('unhandledRejection', onRejection);
  }
  for (const v of guard.violations.slice(0, 5)) violate(`nondeterminism: ${v.what} read by simulated code\n${v.stack}`);
  if (end !== 'done') violate(`liveness: the job was not done ${o.livenessMs ?? 60_000} ms after the last fault healed (run ended: ${end}, ${sched.steps} steps)`);
  else {
    const wrong = workload.verify();
    if (wrong) violate(wrong);
  }
  for (const v of workload.violations) violate(v);
  for (const n of nodes) n.actor.dead = true;
  return {
    seed: o.seed,
    workload: o.workload,
    ok: violations.length === 0,
    violations,
    faults,
    injected,
    traceHash: sched.traceHash(),
    steps: sched.steps,
    virtualMs: Math.round(sched.now),
    end,
    nodesStarted: started,
    checked: { ...checker.checked },
  };
}

/** A logger whose lines carry the virtual time (the core logger's timestamps are wall time). */
function virtualTimeLogger(write: (line: string) => void, now: () => number, base: LogFields): Logger {
  const line = (level: string, message: string, fields?: LogFields): void => {
    const all = { ...base, ...fields };
    write(`${now().toFixed(1)}ms ${level} ${message} ${JSON.stringify(all, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Error ? v.message : v))}`);
  };
  return {
    debug: (m, f) => line('debug', m, f),
    info: (m, f) => line('info', m, f),
    warn: (m, f) => line('warn', m, f),
    error: (m, f) => line('error', m, f),
    child: (fields) => virtualTimeLogger(write, now, { ...base, ...fields }),
  };
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * The invariants. Checked as things happen (a request answered, a meta delivered, a
 * task started) and after every step (the epoch).
 */
class Invariants {
  jobDone = false;
  /** How many times each invariant was checked (a run that checks nothing proves nothing). */
  readonly checked = { answers: 0, metasAtLeastOnce: 0, metasAtMostOnce: 0, epochs: 0, incarnations: 0 };
  #epoch = -1;
  #lastRevision = -1;
  /** (task, incarnation) -> the node that ran it. */
  readonly #incarnations = new Map<string, string>();
  /** Deliveries of metas: (task, incarnation, epoch, from, link type, meta). */
  readonly #metas = new Set<string>();
  /** Every lock token seen granted, and the lock (a task's primary slot or one of its backup slots) it was for. */
  readonly #tokenLocks = new Map<string, string>();
  readonly #locks: string[];
  /** Per task, the latest incarnation started (1 and up): its node and when it entered each epoch. */
  readonly #holders = new Map<number, { readonly incarnation: number; readonly node: string; readonly entered: Map<number, number> }>();
  /** Metas flagged in the current epoch, with their receivers. */
  #flags: Array<{ readonly epoch: number; readonly from: number; readonly linkType: string; readonly meta: string; readonly at: number; readonly receivers: readonly number[] }> = [];

  constructor(
    private readonly workload: Workload,
    private readonly store: MemoryStore,
    private readonly violate: (v: string) => void,
    private readonly now: () => number,
    private readonly liveNodes: () => ReadonlySet<string>,
  ) {
    this.#locks = [];
    for (let t = 0; t < workload.numTasks; t++) {
      this.#locks.push(`${NAMESPACE}/${jobKeys.taskLock(JOB, t)}`);
      if (workload.backupTasks === undefined || workload.backupTasks.includes(t)) {
        for (let b = 0; b < workload.backups; b++) this.#locks.push(`${NAMESPACE}/${jobKeys.backupLock(JOB, t, b)}`);
      }
    }
  }

  step(sched: Scheduler): void {
    for (const name of this.#locks) {
      const h = this.store.lockHolder(name);
      if (h !== undefined) this.#tokenLocks.set(String(h.token), name);
    }
    const rev = this.store.revision;
    if (rev === this.#lastRevision) return;
    this.#lastRevision = rev;
    const e = this.store.get(`${NAMESPACE}/${jobKeys.epoch(JOB)}`);
    if (e) {
      const epoch = Number(new TextDecoder().decode(e.value));
      if (epoch < this.#epoch) this.violate(`the epoch went back from ${this.#epoch} to ${epoch}`);
      this.checked.epochs++;
      if (epoch > this.#epoch) this.#epochEnded(this.#epoch);
      this.#epoch = Math.max(this.#epoch, epoch);
    }
    const s = this.store.get(`${NAMESPACE}/${jobKeys.status(JOB)}`);
    if (s && !this.jobDone) {
      const state = (JSON.parse(new TextDecoder().decode(s.value)) as { state?: string }).state;
      if (state === 'done') this.jobDone = true;
      else if (state === 'failed') this.violate('the job failed');
    }
    sched.record(`r${rev} e${this.#epoch}${this.jobDone ? ' done' : ''}`);
  }

  /**
   * At least once: when an epoch ends, every meta flagged in it has reached each
   * receiver's incarnation that held the receiver from before the flag (it had entered
   * the epoch by then) to the end of the epoch. (An incarnation that started later
   * reads the metas from the store; one that ended before the epoch did has no claim.)
   */
  #epochEnded(epoch: number): void {
    const flags = this.#flags.filter((f) => f.epoch === epoch);
    this.#flags = this.#flags.filter((f) => f.epoch > epoch);
    const live = this.liveNodes();
    for (const f of flags) {
      for (const r of f.receivers) {
        const h = this.#holders.get(r);
        const entered = h?.entered.get(epoch);
        if (h === undefined || entered === undefined || entered > f.at || !live.has(h.node)) continue;
        this.checked.metasAtLeastOnce++;
        if (!this.#metas.has(`${r}/${h.incarnation}/${epoch}/${f.from}/${f.linkType}/${f.meta}`)) {
          this.violate(`metaReady never fired: task ${r} incarnation ${h.incarnation} (on ${h.node}, in epoch ${epoch} since ${entered.toFixed(1)}ms) did not get ${JSON.stringify(f.meta)} from task ${f.from} on ${f.linkType}, flagged at ${f.at.toFixed(1)}ms, before the epoch ended`);
        }
      }
    }
  }

  #wrapFramework(taskId: number, framework: Framework): Framework {
    return new Proxy(framework, {
      get: (target, key) => {
        const v: unknown = Reflect.get(target, key, target);
        if (key === 'flagMeta' && typeof v === 'function') {
          return (ctx: EpochContext, linkType: string, meta: string) => {
            const topo = target.getTopology().get(linkType);
            const receivers = topo ? [...topo.getNeighbors(ctx.epoch)] : [];
            this.#flags.push({ epoch: ctx.epoch, from: taskId, linkType, meta, at: this.now(), receivers });
            return (v as Framework['flagMeta']).call(target, ctx, linkType, meta);
          };
        }
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }

  /**
   * A request answered: the store must not have granted the slot the request's token
   * was for (the task's primary slot; a backup slot for replication) to a newer owner.
   */
  #served(node: string, request: InboundRequest): void {
    const { to, token } = request.meta;
    const lock = this.#tokenLocks.get(token);
    if (lock === undefined) return;
    this.checked.answers++;
    const holder = this.store.lockHolder(lock);
    if (holder !== undefined && holder.token > BigInt(token)) {
      this.violate(`stale token: ${node} answered ${request.method} for task ${to} with token ${token} while the store had granted ${lock.slice(NAMESPACE.length + 1)} to ${holder.owner} with token ${holder.token}`);
    }
  }

  observe(node: string, transport: LocalTransport): Transport {
    return new Proxy(transport, {
      get: (target, key) => {
        if (key === 'listen') {
          return (options: ListenOptions) =>
            target.listen({
              ...options,
              handler: async (request: InboundRequest) => {
                const answer = await options.handler(request);
                this.#served(node, request);
                return answer;
              },
            });
        }
        const v: unknown = Reflect.get(target, key, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }

  wrapBuilder(node: string, builder: TaskBuilder): TaskBuilder {
    return { getTask: (taskId) => this.#wrapTask(node, taskId, builder.getTask(taskId)) };
  }

  #wrapTask(node: string, taskId: number, task: Task): Task {
    let incarnation = 0;
    return new Proxy(task, {
      get: (target, key) => {
        const v: unknown = Reflect.get(target, key, target);
        if (key === 'init') {
          return (id: number, framework: Framework) => {
            incarnation = framework.getIncarnation();
            // Incarnation 0 is a backup's copy (any number of them); a primary's is 1 or more, and one node's alone.
            if (incarnation > 0) {
              this.#holders.set(id, { incarnation, node, entered: new Map() });
              this.checked.incarnations++;
              const k = `${id}/${incarnation}`;
              const other = this.#incarnations.get(k);
              if (other !== undefined && other !== node) this.violate(`incarnation ${incarnation} of task ${id} ran on ${other} and on ${node}`);
              this.#incarnations.set(k, node);
            }
            return (v as (id: number, fw: Framework) => void).call(target, id, incarnation > 0 ? this.#wrapFramework(id, framework) : framework);
          };
        }
        if (key === 'becamePrimary' && typeof v === 'function') {
          // A promoted backup runs on as the task's new incarnation, in the epoch under way.
          return (ctx: EpochContext, change: RoleChange) => {
            incarnation = change.incarnation;
            this.#holders.set(taskId, { incarnation, node, entered: new Map([[ctx.epoch, this.now()]]) });
            this.checked.incarnations++;
            return (v as (...a: unknown[]) => unknown).call(target, ctx, change);
          };
        }
        if (key === 'enterEpoch' && typeof v === 'function') {
          return (ctx: EpochContext, epoch: number) => {
            const h = this.#holders.get(taskId);
            if (h !== undefined && h.incarnation === incarnation && h.node === node && !h.entered.has(epoch)) h.entered.set(epoch, this.now());
            return (v as (...a: unknown[]) => unknown).call(target, ctx, epoch);
          };
        }
        if (key === 'metaReady' && typeof v === 'function') {
          return (ctx: { epoch: number }, from: number, linkType: string, meta: string) => {
            const k = `${taskId}/${incarnation}/${ctx.epoch}/${from}/${linkType}/${meta}`;
            this.checked.metasAtMostOnce++;
            if (this.#metas.has(k)) this.violate(`metaReady fired twice for task ${taskId} incarnation ${incarnation}: epoch ${ctx.epoch}, from ${from}, ${linkType}, ${JSON.stringify(meta)}`);
            this.#metas.add(k);
            return (v as (...a: unknown[]) => unknown).call(target, ctx, from, linkType, meta);
          };
        }
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }
}
