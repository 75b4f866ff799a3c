/** Small helpers the coordinator suite's tests share. */
import assert from 'node:assert/strict';
import { TaskGraphError } from '@taskgraph/api';
import type { Coordinator, Entry, ErrorCode, WatchBatch, WatchEvent } from '@taskgraph/api';
import type { TestContext } from './context.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const bytes = (s: string): Uint8Array => encoder.encode(s);
export const text = (b: Uint8Array): string => decoder.decode(b);
export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Asserts that `action` rejects (or throws) with a TaskGraphError of one of `codes`. */
export async function rejectsWith(action: () => unknown, codes: ErrorCode | readonly ErrorCode[], what: string): Promise<unknown> {
  const want = typeof codes === 'string' ? [codes] : codes;
  let caught: unknown;
  try {
    await action();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `${what}: expected a rejection with ${want.join(' or ')}, but it succeeded`);
  assert.ok(
    TaskGraphError.is(caught, ...want),
    `${what}: expected ${want.join(' or ')}, got ${caught instanceof Error ? `${caught.name} ${(caught as { code?: unknown }).code ?? ''}: ${caught.message}` : String(caught)}`,
  );
  return caught;
}

/** Asserts an abort reason (or any value) is a TaskGraphError with one of `codes`. */
export function assertCode(value: unknown, codes: ErrorCode | readonly ErrorCode[], what: string): void {
  const want = typeof codes === 'string' ? [codes] : codes;
  assert.ok(TaskGraphError.is(value, ...want), `${what}: expected ${want.join(' or ')}, got ${String(value)}`);
}

/** A key's state as the suite compares it: value in hex and version. */
export type KeyState = Map<string, { value: string; version: string }>;

export function stateOf(entries: readonly Entry[]): KeyState {
  return new Map(entries.map((e) => [e.key, { value: hex(e.value), version: e.version }]));
}

export function applyEvents(state: KeyState, events: readonly WatchEvent[]): void {
  for (const e of events) {
    if (e.type === 'put') state.set(e.key, { value: hex(e.value), version: e.version });
    else state.delete(e.key);
  }
}

export function sameState(a: KeyState, b: KeyState): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w || w.value !== v.value || w.version !== v.version) return false;
  }
  return true;
}

export function describeState(s: KeyState): string {
  return JSON.stringify([...s].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A watch consumed in the background into arrays, ending when its signal aborts. */
export interface WatchLog {
  readonly batches: WatchBatch[];
  readonly events: WatchEvent[];
  /** Settles when the iterator ends: with the error it threw, or undefined. */
  readonly ended: Promise<unknown>;
  readonly controller: AbortController;
  /** Whether the iterator has ended. */
  finished(): boolean;
}

export function consumeWatch(t: TestContext, c: Coordinator, prefix: string, after?: string): WatchLog {
  const controller = t.controller();
  const batches: WatchBatch[] = [];
  const events: WatchEvent[] = [];
  let done = false;
  const ended = (async (): Promise<unknown> => {
    try {
      const options = after === undefined ? { signal: controller.signal } : { signal: controller.signal, after };
      for await (const batch of c.watch(prefix, options)) {
        batches.push(batch);
        events.push(...batch.events);
      }
      return undefined;
    } catch (err) {
      return err;
    } finally {
      done = true;
    }
  })();
  t.track(ended);
  return { batches, events, ended, controller, finished: () => done };
}

/** Sorts keys in UTF-8 byte order, the order `list` returns. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The kinds of live handles in this process, for leak checks. */
export function activeHandleCount(): number {
  return process.getActiveResourcesInfo().length;
}
