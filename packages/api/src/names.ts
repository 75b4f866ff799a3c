/**
 * The rules for keys, lock names and method names, shared by every backend so
 * that bad input fails the same way everywhere, before any I/O.
 */
import { InvalidArgumentError } from './errors.js';

const encoder = new TextEncoder();

/** The byte length of a string in UTF-8. */
export function utf8Length(s: string): number {
  return encoder.encode(s).length;
}

function describe(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

/** Control characters (C0, DEL, C1) never belong in a key. */
function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return true;
  }
  return false;
}

/**
 * Checks a key or lock name: non-empty, at most `maxBytes` in UTF-8, `/`-separated
 * segments that are neither empty nor `.` or `..`, no control characters.
 */
export function assertValidKey(key: unknown, maxBytes: number, what = 'key'): asserts key is string {
  if (typeof key !== 'string') throw new InvalidArgumentError(`${what} must be a string, got ${typeof key}`);
  if (key.length === 0) throw new InvalidArgumentError(`${what} must not be empty`);
  checkSegments(key, what, false);
  const n = utf8Length(key);
  if (n > maxBytes) throw new InvalidArgumentError(`${what} ${describe(key)} is ${n} bytes; the limit is ${maxBytes}`);
}

/** Checks a prefix: like a key, but it may end with `/`. */
export function assertValidPrefix(prefix: unknown, maxBytes: number): asserts prefix is string {
  if (typeof prefix !== 'string') throw new InvalidArgumentError(`prefix must be a string, got ${typeof prefix}`);
  if (prefix.length === 0) throw new InvalidArgumentError('prefix must not be empty');
  checkSegments(prefix, 'prefix', true);
  const n = utf8Length(prefix);
  if (n > maxBytes) throw new InvalidArgumentError(`prefix ${describe(prefix)} is ${n} bytes; the limit is ${maxBytes}`);
}

function checkSegments(s: string, what: string, trailingSlash: boolean): void {
  if (hasControlCharacter(s)) throw new InvalidArgumentError(`${what} ${describe(s)} contains a control character`);
  const body = trailingSlash && s.endsWith('/') ? s.slice(0, -1) : s;
  if (body.length === 0) throw new InvalidArgumentError(`${what} ${describe(s)} has an empty segment`);
  for (const segment of body.split('/')) {
    if (segment === '') throw new InvalidArgumentError(`${what} ${describe(s)} has an empty segment (leading, trailing or double "/")`);
    if (segment === '.' || segment === '..') throw new InvalidArgumentError(`${what} ${describe(s)} has a "${segment}" segment`);
  }
}

/** Checks a value against the backend's limit. */
export function assertValidValue(value: unknown, maxBytes: number, key: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new InvalidArgumentError(`value of ${describe(key)} must be a Uint8Array`);
  if (value.length > maxBytes) {
    throw new InvalidArgumentError(`value of ${describe(key)} is ${value.length} bytes; the limit is ${maxBytes}`);
  }
}

/** Checks a session TTL against the backend's range. */
export function assertValidTtl(ttlMs: unknown, range: readonly [number, number], backend: string): asserts ttlMs is number {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw new InvalidArgumentError(`session ttlMs must be a positive number, got ${String(ttlMs)}`);
  }
  if (ttlMs < range[0] || ttlMs > range[1]) {
    throw new InvalidArgumentError(`session ttlMs ${ttlMs} is outside ${backend}'s range [${range[0]}, ${range[1]}] ms`);
  }
}

const METHOD_NAME = /^[A-Za-z][A-Za-z0-9_]{0,127}$/;

/** Checks a method name: a valid gRPC method name (letters, digits, `_`; starts with a letter). */
export function assertValidMethodName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !METHOD_NAME.test(name)) {
    throw new InvalidArgumentError(
      `method name ${typeof name === 'string' ? describe(name) : String(name)} is invalid: use letters, digits and "_", starting with a letter (at most 128)`,
    );
  }
}
