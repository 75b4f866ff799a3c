/** Shared by this package's tests: unique namespaces, a real etcd per file, clients closed after each test, raw etcd access. */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '@taskgraph/testkit';
import type { EventuallyOptions, EtcdServer, StartEtcdOptions } from '@taskgraph/testkit';
import { createEtcdCoordinator, type EtcdCoordinator, type EtcdCoordinatorOptions } from '../src/index.js';

let seq = 0;
const run = Math.random().toString(36).slice(2, 8);

export function namespace(label = 't'): string {
  return `${label}-${run}-${++seq}`;
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
export const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

/** How long these tests wait on etcd: leader elections, restarts and lease expiry take seconds on a busy machine. */
export const patience: EventuallyOptions = { timeoutMs: 20_000 };

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

/** A real etcd for the tests of one file or describe block, and clients of it that are closed after each test. */
export interface EtcdFixture {
  /** The running etcd (there once the block's tests run). */
  readonly server: EtcdServer;
  /** A coordinator on a fresh namespace of this etcd (`options.hosts` points it elsewhere, e.g. at a proxy). */
  coordinator(options?: Partial<EtcdCoordinatorOptions>): Promise<EtcdCoordinator>;
  /** A plain etcd3 client of this etcd, for looking at and changing etcd behind the coordinator's back. */
  raw(): Etcd3;
}

/** Starts an etcd before the tests of the file or describe block it is called in, and removes it after them. */
export function etcdFixture(options: StartEtcdOptions = {}): EtcdFixture {
  const clients = new Clients();
  let server: EtcdServer | undefined;
  beforeAll(async () => {
    server = await startEtcd(options);
  });
  afterEach(async () => {
    await clients.closeAll();
  });
  afterAll(async () => {
    await server?.cleanup();
  });
  const running = (): EtcdServer => {
    if (server === undefined) throw new Error('etcdFixture: etcd is started in beforeAll; use it inside tests and hooks');
    return server;
  };
  return {
    get server() {
      return running();
    },
    coordinator: (opts = {}) => clients.coordinator(running(), opts),
    raw: () => clients.raw(running()),
  };
}
