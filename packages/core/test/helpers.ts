import type { Task, TaskBuilder } from '@taskgraph/api';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { TaskGraphNode, createController, silentLogger } from '../src/index.js';
import type { BootstrapOptions } from '../src/index.js';
import { tree } from '@taskgraph/topologies';

let seq = 0;

/** A memory store, a local network and helpers to make nodes and controllers on them. */
export function world() {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const job = `job-${++seq}`;
  const closers: Array<() => Promise<void>> = [];
  const coordinator = () => {
    const c = new MemoryCoordinator({ store, namespace: 'tg' });
    closers.push(() => c.close());
    return c;
  };
  return {
    store,
    network,
    job,
    coordinator,
    controller: () => createController({ coordinator: coordinator(), job, logger: silentLogger }),
    async node(builder: TaskBuilder | ((id: number) => Task), options: Partial<BootstrapOptions> = {}, numTasks = 3) {
      const transport = await createLocalTransport({ network });
      closers.push(() => transport.close());
      const c = options.coordinator ?? coordinator();
      const node = new TaskGraphNode({ job, coordinator: c, transport, sessionTtlMs: 500, logger: silentLogger, ...options });
      node.setTaskBuilder(typeof builder === 'function' ? { getTask: builder } : builder);
      const t = tree({ numTasks, fanout: 2 });
      node.addLinkage('Parents', t.Parents);
      node.addLinkage('Children', t.Children);
      return { node, coordinator: c as MemoryCoordinator, transport };
    },
    async close() {
      for (const c of closers.reverse()) await c().catch(() => undefined);
    },
  };
}

/** A task that does nothing but record what happens to it. */
export function recordingTask(log: string[], extra: Partial<Task> = {}): Task {
  return {
    init: (id) => void log.push(`init ${id}`),
    enterEpoch: (_ctx, e) => void log.push(`epoch ${e}`),
    metaReady: (_ctx, from, lt, meta) => void log.push(`meta ${from} ${lt} ${meta}`),
    exit: () => void log.push('exit'),
    ...extra,
  };
}
