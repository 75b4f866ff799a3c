#!/usr/bin/env node
/**
 * The demo behind `npm start`: the regression job on the embedded default
 * (memory coordinator, in-process transport), 15 tasks and 2 standbys, one node
 * killed mid-job and replaced by a standby. Prints progress per epoch and the
 * final sums; exits 0 only when the sums are exactly right.
 *
 * Options: --tasks N --standbys S --epochs E --kill-at-epoch K --kill-task T
 *          --coordinator URL --transport URL (or TASKGRAPH_COORDINATOR / TASKGRAPH_TRANSPORT)
 */
import { parseArgs } from 'node:util';
import { LocalCluster, createLogger, nodeResources, resolveCoordinator, resolveTransport } from '@taskgraph/core';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, expectedSums, regressionLinkages } from '@taskgraph/workloads';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '15' },
    standbys: { type: 'string', default: '2' },
    epochs: { type: 'string', default: '10' },
    'kill-at-epoch': { type: 'string', default: '4' },
    'kill-task': { type: 'string', default: '5' },
    coordinator: { type: 'string', default: process.env['TASKGRAPH_COORDINATOR'] ?? 'memory://demo' },
    transport: { type: 'string', default: process.env['TASKGRAPH_TRANSPORT'] ?? 'local://' },
    help: { type: 'boolean', default: false },
  },
});

function int(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<number> {
  if (values.help) {
    console.log('usage: demo [--tasks 15] [--standbys 2] [--epochs 10] [--kill-at-epoch 4] [--kill-task 5] [--coordinator memory://demo] [--transport local://]');
    return 0;
  }
  const numTasks = int('tasks', values.tasks, 2);
  const standbys = int('standbys', values.standbys, 1);
  const numEpochs = int('epochs', values.epochs, 1);
  const killAt = int('kill-at-epoch', values['kill-at-epoch'], 1);
  const killTask = int('kill-task', values['kill-task'], 0);
  if (killTask >= numTasks) {
    console.error(`--kill-task must be below --tasks (${numTasks})`);
    return 2;
  }
  const logger = createLogger({ level: (process.env['TASKGRAPH_LOG_LEVEL'] as 'info' | undefined) ?? 'warn' });
  const expected = expectedSums(numTasks, numEpochs);
  const sums = new Map<number, number>();
  const job = `regression-demo-${process.pid}`;
  const started = performance.now();
  let killed = false;
  console.log(`TaskGraph regression demo: ${numTasks} tasks, ${standbys} standbys, epochs 0..${numEpochs}`);
  console.log(`coordinator ${values.coordinator}, transport ${values.transport}`);

  const controllerCoordinator = await resolveCoordinator(values.coordinator!, { logger });
  const onResult = (epoch: number, sum: number) => {
    const first = !sums.has(epoch);
    sums.set(epoch, sum);
    if (first) {
      const ok = expected[epoch] === sum;
      console.log(`epoch ${String(epoch).padStart(2)}: sum ${String(sum).padStart(5)}  ${ok ? 'ok' : `WRONG (expected ${expected[epoch]})`}`);
    }
    if (!killed && epoch + 1 === killAt) {
      killed = true;
      const victim = cluster.ownerOf(killTask);
      if (victim) {
        console.log(`killing node-${victim.index}, which runs task ${killTask}; a standby takes the task over`);
        void victim.node.kill();
      }
    }
  };
  const onTaskStart = (taskId: number, incarnation: number) => {
    if (incarnation > 1) console.log(`task ${taskId} resumed on a standby (incarnation ${incarnation})`);
  };
  const cluster: LocalCluster = new LocalCluster({
    job,
    numTasks,
    linkTypes: REGRESSION_LINK_TYPES,
    standbys,
    controllerCoordinator,
    resources: async () => {
      const coordinator = await resolveCoordinator(values.coordinator!, { logger });
      const transport = await resolveTransport(values.transport!);
      return nodeResources(coordinator, transport);
    },
    builder: () => new RegressionTaskBuilder({ numTasks, numEpochs, onResult, onTaskStart }),
    linkages: () => regressionLinkages({ numTasks }),
    node: { sessionTtlMs: Math.max(controllerCoordinator.caps.ttlRangeMs[0], 2000) },
    logger,
  });
  const stop = () => void cluster.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let status;
  try {
    await cluster.start();
    status = await cluster.waitUntilDone();
  } finally {
    await cluster.close();
    await cluster.controller.destroy().catch(() => undefined);
    await controllerCoordinator.close();
  }
  const got = expected.map((_, e) => sums.get(e));
  const right = got.every((s, e) => s === expected[e]);
  const failovers = status.tasks.reduce((n, t) => n + Math.max(0, t.incarnations - 1), 0);
  console.log(`final sums: ${got.map((s) => s ?? '-').join(', ')}`);
  console.log(`expected:   ${expected.join(', ')}`);
  console.log(`job ${status.state} in ${((performance.now() - started) / 1000).toFixed(2)} s with ${failovers} failover(s): ${right ? 'sums are exact' : 'SUMS ARE WRONG'}`);
  return right && killed && failovers >= 1 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
