/**
 * The input checks of the Coordinator contract that `@taskgraph/api` does not
 * already have (keys, prefixes, values and TTLs are checked by its `assertValid*`):
 * versions, lock owners, session ids, signals. Every one throws InvalidArgumentError.
 */
import { InvalidArgumentError, utf8Length } from '@taskgraph/api';

/** A key, prefix or lock name for a message: quoted, and cut after 80 characters. */
export function describeKey(key: string): string {
  return JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}...` : key);
}

/** Checks a version passed to update or delete: any non-empty string (what it means is the backend's). */
export function assertValidVersion(version: unknown, what: string): asserts version is string {
  if (typeof version !== 'string' || version.length === 0) {
    throw new InvalidArgumentError(`${what}: version must be a non-empty string from get, list, create or update, got ${JSON.stringify(version) ?? String(version)}`);
  }
}

/** Checks a lock owner: a non-empty string of at most `maxBytes` in UTF-8 (the key limit). */
export function assertValidOwner(owner: unknown, maxBytes: number): asserts owner is string {
  if (typeof owner !== 'string' || owner.length === 0) throw new InvalidArgumentError('lock owner must be a non-empty string');
  const n = utf8Length(owner);
  if (n > maxBytes) throw new InvalidArgumentError(`lock owner is ${n} bytes; the limit is ${maxBytes}`);
}

/** Checks a session id given to endSession: a non-empty string of at most `maxBytes` in UTF-8. */
export function assertValidSessionId(id: unknown, maxBytes: number): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError(`endSession: the session id must be a non-empty string, got ${JSON.stringify(id) ?? String(id)}`);
  const n = utf8Length(id);
  if (n > maxBytes) throw new InvalidArgumentError(`endSession: the session id is ${n} bytes; the limit is ${maxBytes}`);
}

/** Checks that `signal` is an AbortSignal (a watch needs one to end it; acquire may have one). */
export function assertValidSignal(signal: unknown, what: string): asserts signal is AbortSignal {
  if (!(signal instanceof AbortSignal)) throw new InvalidArgumentError(`${what}: options.signal must be an AbortSignal, got ${typeof signal}`);
}

/** Checks a watch's `after`: absent, or a string (whether it is a revision of this backend is the backend's check). */
export function assertValidAfter(after: unknown, what: string): asserts after is string | undefined {
  if (after !== undefined && typeof after !== 'string') {
    throw new InvalidArgumentError(`${what}: after must be a revision string from list or a watch batch, got ${typeof after}`);
  }
}
