/**
 * One run of the regression job on the embedded default, as `LocalCluster` and
 * `taskgraph run regression --coordinator memory://` run it: every node in this
 * process, each with its own memory-coordinator client of one shared store and its
 * own local transport. Timed from the cluster's start to the job's end; the sums
 * are checked, so a fast wrong run is a failure, not a figure.
 */
import { LocalCluster, createLogger, nodeResources } from '@taskgraph/core';
import { idleCores, readCpuTimes } from './machine-idle.js';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';

export interface EmbeddedRunOptions {
  readonly tasks: number;
  /** The job runs epochs 0..epochs, so `epochs` advances. */
  readonly epochs: number;
  /** Cold standbys beside the tasks. Default 0. */
  readonly standbys?: number;
  /** The nodes' session TTL. Default: the runtime's (5 s), keepalives and all, as `taskgraph run` has it. */
  readonly sessionTtlMs?: number;
  /** A run that has not ended by then fails (a job whose nodes all lost their sessions waits forever). Default: 300 s. */
  readonly timeLimitMs?: number;
  /** Logs the runtime's messages at this level on stderr. Default: none. */
  readonly logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

export interface EmbeddedRunResult {
  readonly bench: 'scale';
  readonly mode: 'embedded';
  readonly tasks: number;
  readonly epochs: number;
  /** From the cluster's start (job creation included) until every node has ended. */
  readonly total_s: number;
  /** From the start until epoch 0's sum was known: every task claimed and one round done. */
  readonly startup_s: number;
  /** (total - startup) / epochs: the steady cost of one epoch. */
  readonly s_per_epoch: number;
  /** This process's CPU time (user + system) over the run: on a busy machine, what the run itself cost. */
  readonly cpu_s: number;
  /** The machine's idle cores over the run (see machine-idle.ts): how much of it others took. */
  readonly idle_cores: number | null;
  /** Every epoch's sum was exact and the job ended done. */
  readonly pass: boolean;
}

const round = (x: number, digits = 4): number => Number(x.toFixed(digits));

export async function runEmbedded(options: EmbeddedRunOptions): Promise<EmbeddedRunResult> {
  const { tasks: numTasks, epochs: numEpochs } = options;
  const store = new MemoryStore({ name: `scale-${numTasks}` });
  const network = new LocalNetwork();
  const expected = expectedSums(numTasks, numEpochs);
  const sums = new Map<number, number>();
  const cpuBefore = process.cpuUsage();
  const machineBefore = readCpuTimes();
  const started = performance.now();
  let firstSumAt: number | undefined;
  const controllerCoordinator = new MemoryCoordinator({ store, id: 'controller' });
  const cluster = new LocalCluster({
    job: `scale-${numTasks}`,
    numTasks,
    linkTypes: REGRESSION_LINK_TYPES,
    standbys: options.standbys ?? 0,
    controllerCoordinator,
    resources: async (index) => nodeResources(new MemoryCoordinator({ store, id: `node-${index}` }), new LocalTransport({ network })),
    builder: () =>
      new RegressionTaskBuilder({
        numTasks,
        numEpochs,
        onResult: (epoch, sum) => {
          if (epoch === 0 && firstSumAt === undefined) firstSumAt = performance.now();
          sums.set(epoch, sum);
        },
      }),
    linkages: () => regressionLinkages({ numTasks }),
    ...(options.sessionTtlMs === undefined ? {} : { node: { sessionTtlMs: options.sessionTtlMs } }),
    replaceLostNodes: false,
    ...(options.logLevel ? { logger: createLogger({ level: options.logLevel }) } : {}),
  });
  let done = false;
  // The runtime's own timers are unref'd (a node never holds its process open); the bench waits for the job.
  const hold = setInterval(() => undefined, 60_000);
  try {
    await cluster.start();
    const limit = options.timeLimitMs ?? 300_000;
    // A timer of our own (not AbortSignal.timeout, which Node may collect while only a combined signal holds it).
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(new Error(`the embedded run of ${numTasks} tasks did not end within ${limit / 1000} s`)), limit);
    try {
      done = (await cluster.waitUntilDone(stop.signal)).state === 'done';
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await cluster.close();
    await controllerCoordinator.close();
    clearInterval(hold);
  }
  const ended = performance.now();
  const cpu = process.cpuUsage(cpuBefore);
  const total = (ended - started) / 1000;
  const startup = ((firstSumAt ?? ended) - started) / 1000;
  const pass = done && expected.every((s, e) => sums.get(e) === s);
  return {
    bench: 'scale',
    mode: 'embedded',
    tasks: numTasks,
    epochs: numEpochs,
    total_s: round(total),
    startup_s: round(startup),
    s_per_epoch: round((total - startup) / numEpochs, 5),
    cpu_s: round((cpu.user + cpu.system) / 1e6, 3),
    idle_cores: idleCores(machineBefore, readCpuTimes()),
    pass,
  };
}
