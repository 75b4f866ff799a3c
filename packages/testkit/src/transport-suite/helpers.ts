/**
 * Small helpers of the transport conformance suite: typed-error assertions,
 * deferreds, byte patterns, and a count of the process's live handles.
 */
import assert from 'node:assert/strict';
import type { ErrorCode, RequestMeta } from '@taskgraph/api';
import { TaskGraphError } from '@taskgraph/api';

/** Awaits `promise` and checks it rejects with a TaskGraphError of `code`; returns the error. */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, what: string): Promise<TaskGraphError> {
  let outcome: unknown;
  try {
    outcome = await promise;
  } catch (err) {
    assert.ok(
      TaskGraphError.is(err, code),
      `${what}: expected a TaskGraphError with code ${code}, got ${describeError(err)}`,
    );
    return err;
  }
  assert.fail(`${what}: expected a rejection with code ${code}, but it resolved with ${describeValue(outcome)}`);
}

export function describeError(err: unknown): string {
  if (TaskGraphError.is(err)) return `${err.name} [${err.code}] ${JSON.stringify(err.message)}`;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function describeValue(value: unknown): string {
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  return typeof value;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves when `signal` aborts (at once if it already has). */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/** `n` bytes of a pattern that depends on `seed`, with every byte value represented. */
export function pattern(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = (x >>> 16) & 0xff;
  }
  return out;
}

export function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.ok(actual instanceof Uint8Array, `${what}: expected a Uint8Array, got ${typeof actual}`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.length);
  if (!a.equals(b)) {
    let i = 0;
    while (a[i] === b[i]) i++;
    assert.fail(`${what}: bytes differ first at offset ${i} (${String(a[i])} != ${String(b[i])})`);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function text(s: string): Uint8Array {
  return encoder.encode(s);
}

export function untext(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

let nextRequest = 0;

export function makeMeta(overrides: Partial<RequestMeta> = {}): RequestMeta {
  nextRequest++;
  return {
    job: 'suite-job',
    from: 1,
    to: 2,
    epoch: 3,
    token: '42',
    requestId: `req-${process.pid}-${nextRequest}`,
    ...overrides,
  };
}

/** The live resources of the process that keep it running, counted by type (timers, sockets, ...). */
export function resourceCounts(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

/** The types whose count in `now` exceeds `baseline`, as "Type: now > baseline". */
export function resourceExcess(baseline: ReadonlyMap<string, number>, now: ReadonlyMap<string, number>): string[] {
  const out: string[] = [];
  for (const [type, n] of now) {
    const base = baseline.get(type) ?? 0;
    if (n > base) out.push(`${type}: ${n} > ${base}`);
  }
  return out;
}
