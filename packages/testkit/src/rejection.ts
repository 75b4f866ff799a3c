/**
 * The error a test expects from a call: most assertions on TaskGraph's typed errors
 * start from "this call must reject with a TaskGraphError", then look at its code,
 * retryable flag, details or message.
 */
import { TaskGraphError } from '@taskgraph/api';

/**
 * Resolves with the TaskGraphError that `promise` rejects with. Fails when it
 * resolves instead, and rethrows a rejection that is not a TaskGraphError (so the
 * test shows that error as it is).
 */
export async function rejection(promise: Promise<unknown>): Promise<TaskGraphError> {
  let value: unknown;
  try {
    value = await promise;
  } catch (err) {
    if (TaskGraphError.is(err)) return err;
    throw err;
  }
  throw new Error(`expected a rejection with a TaskGraphError, but the promise resolved with ${typeof value}`);
}
