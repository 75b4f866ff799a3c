/**
 * The application the failover part runs as `taskgraph node` processes: its tasks
 * do nothing, so a takeover costs only what the framework and the store cost (no
 * application state to rebuild).
 */
import type { Task, Topology } from '@taskgraph/api';
import { defineApp } from '@taskgraph/core';

export const IDLE_LINK = 'Peers';

class Idle implements Task {
  init(): void {}
  enterEpoch(): void {}
  metaReady(): void {}
  exit(): void {}
}

/** No neighbours in any epoch. */
export class NoNeighbors implements Topology {
  setTaskId(): void {}
  getNeighbors(): readonly number[] {
    return [];
  }
}

export default defineApp({
  name: 'idle',
  linkTypes: [IDLE_LINK],
  taskBuilder: () => ({ getTask: () => new Idle() }),
  linkages: () => ({ [IDLE_LINK]: new NoNeighbors() }),
});
