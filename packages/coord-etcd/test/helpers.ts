/** Shared by this package's tests: unique namespaces, polling, and raw etcd access. */
import { Etcd3 } from 'etcd3';
import type { EtcdServer } from '@taskgraph/testkit';
import { createEtcdCoordinator, type EtcdCoordinator, type EtcdCoordinatorOptions } from '../src/index.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);

export function namespace(label = 't'): string {
  return `${label}-${run}-${++seq}`;
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
export const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

/** Polls `cond` until it returns something truthy; fails with `what` after `timeoutMs`. */
export async function eventually<T>(what: string, cond: () => T | Promise<T>, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/** Coordinators made by a test, closed by `closeAll`. */
export class Clients {
  readonly #made: { close(): Promise<void> | void }[] = [];

  async #close(c: { close(): Promise<void> | void }): Promise<void> {
    await c.close();
  }

  async coordinator(server: EtcdServer | string, options: Partial<EtcdCoordinatorOptions> = {}): Promise<EtcdCoordinator> {
    const hosts = typeof server === 'string' ? [server] : [...server.endpoints];
    const c = await createEtcdCoordinator({ hosts, namespace: namespace(), ...options });
    this.#made.push(c);
    return c;
  }

  /** A plain etcd3 client, for looking at and changing etcd behind the coordinator's back. */
  raw(server: EtcdServer): Etcd3 {
    const c = new Etcd3({ hosts: [...server.endpoints] });
    this.#made.push(c);
    return c;
  }

  async closeAll(): Promise<void> {
    const made = this.#made.splice(0);
    await Promise.all(made.map((c) => this.#close(c)));
  }
}
