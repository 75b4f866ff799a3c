/**
 * What both sides of master/worker need of the runtime beneath the task API: its
 * internals (the address book, the lease check, the store), and which errors mean
 * that the node's hold on its task ended rather than that the application failed.
 */
import { InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { BackedUpFramework } from '@taskgraph/api';
import { RUNTIME } from '../framework.js';
import type { RuntimeInternals } from '../framework.js';

/** The errors that mean this node's hold on its task ended (not a failure of the application). */
export function endsTheTask(err: unknown): boolean {
  return TaskGraphError.is(err, 'EPOCH_CHANGED', 'ABORTED', 'CLOSED', 'LEASE_LOST', 'JOB_DONE');
}

/** The framework's runtime side, which master/worker needs (it runs on TaskGraph's core only). */
export function internalsOf(fw: BackedUpFramework, who: string): RuntimeInternals {
  const withRuntime = fw as BackedUpFramework & { [RUNTIME]?: () => RuntimeInternals };
  if (typeof withRuntime[RUNTIME] !== 'function') throw new InvalidArgumentError(`${who} runs on the TaskGraph core runtime only`);
  return withRuntime[RUNTIME]();
}
