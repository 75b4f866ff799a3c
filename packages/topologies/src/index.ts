/**
 * Ready-made topologies. Each function returns the link types of one shape, as
 * `{ LinkType: Topology }`, to pass to `Bootstrap.addLinkage` (see `addLinkages`).
 * They are static: the neighbours do not depend on the epoch.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Bootstrap, Topology } from '@taskgraph/api';

function checkCount(numTasks: number): void {
  if (!Number.isInteger(numTasks) || numTasks < 1) throw new InvalidArgumentError(`numTasks must be a positive integer, got ${String(numTasks)}`);
}

/** A topology computed from the task id alone. */
class StaticTopology implements Topology {
  private neighbors: readonly number[] | undefined;
  constructor(
    private readonly name: string,
    private readonly numTasks: number,
    private readonly compute: (taskId: number) => number[],
  ) {}

  setTaskId(taskId: number): void {
    if (!Number.isInteger(taskId) || taskId < 0 || taskId >= this.numTasks) {
      throw new InvalidArgumentError(`${this.name}: task ${taskId} is outside 0..${this.numTasks - 1}`);
    }
    this.neighbors = Object.freeze(this.compute(taskId));
  }

  getNeighbors(_epoch: number): readonly number[] {
    if (!this.neighbors) throw new InvalidArgumentError(`${this.name}: setTaskId() was not called`);
    return this.neighbors;
  }
}

/**
 * A tree with `fanout` children per task, task 0 at the root: the children of i
 * are fanout*i+1 .. fanout*i+fanout. Link types `Parents` and `Children`.
 */
export function tree(options: { numTasks: number; fanout: number }): { Parents: Topology; Children: Topology } {
  const { numTasks, fanout } = options;
  checkCount(numTasks);
  if (!Number.isInteger(fanout) || fanout < 1) throw new InvalidArgumentError(`fanout must be a positive integer, got ${String(fanout)}`);
  return {
    Parents: new StaticTopology('tree Parents', numTasks, (id) => (id === 0 ? [] : [Math.floor((id - 1) / fanout)])),
    Children: new StaticTopology('tree Children', numTasks, (id) => {
      const out: number[] = [];
      for (let c = fanout * id + 1; c <= fanout * id + fanout && c < numTasks; c++) out.push(c);
      return out;
    }),
  };
}

/**
 * Everyone linked to everyone: `Neighbors` (all other tasks) and `Master` (a worker's
 * master, or the master's workers).
 */
export function full(options: { numTasks: number; master?: number }): { Neighbors: Topology; Master: Topology } {
  const { numTasks } = options;
  checkCount(numTasks);
  const master = options.master ?? 0;
  if (!Number.isInteger(master) || master < 0 || master >= numTasks) throw new InvalidArgumentError(`master ${master} is outside 0..${numTasks - 1}`);
  const all = (except: number) => Array.from({ length: numTasks }, (_, i) => i).filter((i) => i !== except);
  return {
    Neighbors: new StaticTopology('full Neighbors', numTasks, (id) => all(id)),
    Master: new StaticTopology('full Master', numTasks, (id) => (id === master ? all(master) : [master])),
  };
}

/** A star around `center` (default 0): `Center` (a leaf's center) and `Leaves` (the center's leaves). */
export function star(options: { numTasks: number; center?: number }): { Center: Topology; Leaves: Topology } {
  const { numTasks } = options;
  checkCount(numTasks);
  const center = options.center ?? 0;
  if (!Number.isInteger(center) || center < 0 || center >= numTasks) throw new InvalidArgumentError(`center ${center} is outside 0..${numTasks - 1}`);
  return {
    Center: new StaticTopology('star Center', numTasks, (id) => (id === center ? [] : [center])),
    Leaves: new StaticTopology('star Leaves', numTasks, (id) => (id === center ? Array.from({ length: numTasks }, (_, i) => i).filter((i) => i !== center) : [])),
  };
}

/** A ring: `Prev` and `Next` (empty for a single task). */
export function ring(options: { numTasks: number }): { Prev: Topology; Next: Topology } {
  const { numTasks } = options;
  checkCount(numTasks);
  return {
    Prev: new StaticTopology('ring Prev', numTasks, (id) => (numTasks === 1 ? [] : [(id - 1 + numTasks) % numTasks])),
    Next: new StaticTopology('ring Next', numTasks, (id) => (numTasks === 1 ? [] : [(id + 1) % numTasks])),
  };
}

/** Adds every link type of a shape to a node: `addLinkages(node, tree({ numTasks: 15, fanout: 2 }))`. */
export function addLinkages(node: Pick<Bootstrap, 'addLinkage'>, linkages: Readonly<Record<string, Topology>>): void {
  for (const [linkType, topology] of Object.entries(linkages)) node.addLinkage(linkType, topology);
}
