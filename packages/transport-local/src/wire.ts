/**
 * What crosses the local "wire": one exchange per call, answered with bytes or
 * with an error in its serialised text form, exactly as a network transport
 * would carry it.
 */
import type { Clock, RequestMeta, TaskGraphError } from '@taskgraph/api';
import { InternalError, deserializeError, parseSerializedError, serializeError } from '@taskgraph/api';

export type WireAnswer =
  | { readonly ok: true; readonly payload: Uint8Array }
  | { readonly ok: false; readonly error: string };

/** One call in flight, seen from the network and the server. The caller's side implements it. */
export interface Exchange {
  readonly address: string;
  /** The server name the address points to. */
  readonly name: string;
  readonly method: string;
  /** The caller's transport (`local://<name>`) when it was given a name; for `from` fault rules. */
  readonly source: string | undefined;
  /** The caller's clock: answers arrive on it. */
  readonly clock: Clock;
  readonly meta: RequestMeta;
  /** The request bytes: already a private copy. */
  readonly payload: Uint8Array;
  /** True once the caller has its answer or has given up (deadline, abort, close). */
  readonly done: boolean;
  /**
   * Ties a pending timer (or similar) to the exchange: `cancel` runs when the caller
   * is done, so nothing outlives the call. Returns a function that unties it.
   */
  hold(cancel: () => void): () => void;
  /** Hands the answer to the caller. False when the caller is already done. */
  answer(answer: WireAnswer): boolean;
  /** `listener` runs once if the caller gives up before it has an answer. */
  onGiveUp(listener: (reason: TaskGraphError) => void): void;
}

export function errorAnswer(err: unknown): WireAnswer {
  return { ok: false, error: JSON.stringify(serializeError(err)) };
}

/** Rebuilds the typed error from its wire text, the way the gRPC transport does. */
export function decodeError(text: string): TaskGraphError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return new InternalError('the server answered with an error that is not valid JSON', { cause: err });
  }
  const wire = parseSerializedError(parsed);
  if (wire === undefined) return new InternalError('the server answered with an error that has no code or message');
  return deserializeError(wire);
}

/** A private copy, always a plain Uint8Array (never a view of someone's pool). */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}
