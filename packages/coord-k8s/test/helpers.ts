// Test plumbing: an emulator per test file, serving HTTPS as a real API server does,
// and clients that reach it through their own TCP proxy (so one client can be
// partitioned while the others still work; TLS passes through the proxy end to end),
// each with a kubeconfig written to a temporary directory that names the emulator's CA.
import { afterAll, afterEach, beforeAll } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Coordinator } from '@taskgraph/api';
import { kubeconfigText, startK8sEmulator, type K8sEmulator, type K8sEmulatorOptions } from '@taskgraph/emulators';
import { startTcpProxy, type EventuallyOptions, type TcpProxy } from '@taskgraph/testkit';
import { createK8sCoordinator, K8sCoordinator, type K8sCoordinatorOptions } from '../src/index.js';

export interface Harness {
  readonly emulator: K8sEmulator;
  readonly dir: string;
  /** The emulator's CA certificate, written in `dir` (undefined over plain HTTP). */
  readonly caFile: string | undefined;
  /** A kubeconfig file naming `server` (the emulator itself by default) and the emulator's CA. */
  kubeconfig(server?: string): Promise<string>;
  /** The emulator's URL as reached through a local port (a proxy's): its scheme, 127.0.0.1, that port. */
  serverAt(port: number): string;
  /** A client through its own proxy; closing the client closes the proxy. */
  client(prefix: string, options?: Partial<K8sCoordinatorOptions>): Promise<K8sCoordinator>;
  proxyOf(c: Coordinator): TcpProxy;
  close(): Promise<void>;
}

/** Settings that keep the tests quick on a busy machine without being timing-fragile. */
export const TEST_OPTIONS: Partial<K8sCoordinatorOptions> = {
  requestTimeoutMs: 3000,
  watchTimeoutSeconds: [30, 60],
  watchIdleTimeoutMs: 5000,
  lockPollMs: 500,
  janitorSweepIntervalMs: 10_000,
};

/** How long these tests wait for a condition: janitor sweeps and lease expiry take seconds. */
export const patience: EventuallyOptions = { timeoutMs: 20_000 };

let files = 0;

export async function startHarness(options: K8sEmulatorOptions = {}): Promise<Harness> {
  const emulator = await startK8sEmulator({ bookmarkIntervalMs: 1000, ...options });
  const dir = await mkdtemp(join(tmpdir(), 'coord-k8s-'));
  const caFile = emulator.ca === undefined ? undefined : join(dir, 'ca.crt');
  if (caFile !== undefined) await writeFile(caFile, emulator.ca ?? '');
  const serverAt = (port: number): string => `${new URL(emulator.url).protocol}//127.0.0.1:${port}`;
  const proxies = new Map<Coordinator, TcpProxy>();
  const all = new Set<TcpProxy>();
  const kubeconfig = async (server = emulator.url): Promise<string> => {
    const path = join(dir, `kubeconfig-${++files}`);
    await writeFile(path, kubeconfigText({ server, token: emulator.token ?? 'anonymous', namespace: 'default', name: 'emulator', caFile }));
    return path;
  };
  return {
    emulator,
    dir,
    caFile,
    kubeconfig,
    serverAt,
    async client(prefix, extra = {}) {
      const proxy = await startTcpProxy({ target: emulator.port });
      all.add(proxy);
      const c = await createK8sCoordinator({ ...TEST_OPTIONS, ...extra, kubeconfigPath: await kubeconfig(serverAt(proxy.port)), prefix });
      proxies.set(c, proxy);
      const close = c.close.bind(c);
      c.close = async () => {
        try {
          await close();
        } finally {
          proxy.heal();
          await proxy.close();
          all.delete(proxy);
        }
      };
      return c;
    },
    proxyOf(c) {
      const p = proxies.get(c);
      if (p === undefined) throw new Error('not a harness client');
      return p;
    },
    async close() {
      for (const p of all) await p.close();
      await emulator.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A harness for the tests of one file, and the clients a test makes on it. */
export interface K8sFixture {
  /** The file's harness; started before its tests, closed after them. */
  readonly h: Harness;
  /** A harness client, closed (with its proxy) after the test. */
  client(prefix: string, options?: Partial<K8sCoordinatorOptions>): Promise<K8sCoordinator>;
}

/** Registers the hooks of a per-file harness; after each test the emulator's faults are cleared and the test's clients closed. */
export function k8sFixture(options: K8sEmulatorOptions = {}): K8sFixture {
  let started: Harness | undefined;
  const clients: K8sCoordinator[] = [];
  const harness = (): Harness => {
    if (started === undefined) throw new Error('k8sFixture: the harness starts in beforeAll; use it inside tests and hooks');
    return started;
  };
  beforeAll(async () => {
    started = await startHarness(options);
  });
  afterEach(async () => {
    started?.emulator.faults.reset();
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await started?.close();
  });
  // The files hold `h` from the start; it reaches the harness once beforeAll has made it.
  const h: Harness = {
    get emulator() {
      return harness().emulator;
    },
    get dir() {
      return harness().dir;
    },
    get caFile() {
      return harness().caFile;
    },
    kubeconfig: (server) => harness().kubeconfig(server),
    serverAt: (port) => harness().serverAt(port),
    client: (prefix, extra) => harness().client(prefix, extra),
    proxyOf: (c) => harness().proxyOf(c),
    close: () => harness().close(),
  };
  return {
    h,
    async client(prefix, extra = {}) {
      const c = await harness().client(prefix, extra);
      clients.push(c);
      return c;
    },
  };
}
