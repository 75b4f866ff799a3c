// The API server is verified as a real cluster's is: over HTTPS, with the CA the
// kubeconfig names or the one `ca=` gives, and a server whose certificate that CA did
// not sign is refused with one typed, non-retryable error, for reads, writes and watches.
import { writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { TaskGraphError } from '@taskgraph/api';
import { kubeconfigText, startK8sEmulator, type K8sEmulator } from '@taskgraph/emulators';
import { rejection } from '@taskgraph/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createK8sCoordinator, type K8sCoordinator } from '../src/index.js';
import { k8sFixture, TEST_OPTIONS } from './helpers.js';

const { h, client } = k8sFixture();
const bytes = (s: string) => new TextEncoder().encode(s);

/** A kubeconfig naming the fixture's emulator and no CA at all. */
async function kubeconfigWithoutCa(name: string): Promise<string> {
  const path = join(h.dir, name);
  await writeFile(path, kubeconfigText({ server: h.emulator.url, token: h.emulator.token ?? '', namespace: 'default', name: 'emulator' }));
  return path;
}

function expectUntrusted(err: TaskGraphError): void {
  expect(err.code).toBe('INTERNAL');
  expect(err.retryable).toBe(false);
  expect(err.details['reason']).toBe('UntrustedServerCertificate');
  expect(err.message).toMatch(/presented a certificate this client does not trust \(UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
}

describe('over HTTPS', () => {
  it('the harness clients talk TLS to the emulator, verified with the CA their kubeconfig names', async () => {
    expect(h.emulator.url).toMatch(/^https:\/\//);
    const c = await client('tls-basic');
    const v = await c.create('a', bytes('1'));
    expect((await c.get('a'))?.version).toBe(v);
  });

  it('ca=<file> in the URL supplies the CA a kubeconfig does not name', async () => {
    const path = await kubeconfigWithoutCa('no-ca');
    const c = await createK8sCoordinator(`k8s://?kubeconfig=${encodeURIComponent(path)}&prefix=tls-url&ca=${encodeURIComponent(h.caFile ?? '')}`, {});
    try {
      await c.create('b', bytes('2'));
      expect((await c.list('b')).entries.map((e) => e.key)).toEqual(['b']);
    } finally {
      await c.close();
    }
  });

  it('without a CA for it, the emulator is not trusted: the system roots do not know it', async () => {
    const c = await createK8sCoordinator({ ...TEST_OPTIONS, kubeconfigPath: await kubeconfigWithoutCa('roots-only'), prefix: 'tls-roots', janitor: false });
    try {
      const err = await rejection(c.get('x'));
      expect(err.details['reason']).toBe('UntrustedServerCertificate');
      expect(err.retryable).toBe(false);
    } finally {
      await c.close();
    }
  });
});

describe('a server whose certificate the given CA did not sign', () => {
  let other: K8sEmulator;
  let otherCa: string;
  let c: K8sCoordinator;

  beforeAll(async () => {
    // Another emulator, another CA: trusting it while dialing the fixture's emulator is
    // what a replaced or impersonated API server looks like from the client.
    other = await startK8sEmulator();
    otherCa = join(h.dir, 'other-ca.crt');
    await writeFile(otherCa, other.ca ?? '');
    c = await createK8sCoordinator({ ...TEST_OPTIONS, kubeconfigPath: await h.kubeconfig(), caFile: otherCa, prefix: 'tls-wrong', janitor: false });
  });

  afterAll(async () => {
    await c?.close();
    await other?.close();
  });

  it('refuses reads with a typed error that names the cause', async () => {
    expectUntrusted(await rejection(c.get('x')));
    expectUntrusted(await rejection(c.list('x/')));
  });

  it('refuses writes with the same error, not an indeterminate outcome: nothing was sent', async () => {
    const creates = () => (h.emulator.verbsUsed().get('configmaps:create') ?? 0) + (h.emulator.verbsUsed().get('leases:create') ?? 0);
    const before = creates();
    expectUntrusted(await rejection(c.create('x', bytes('1'))));
    expectUntrusted(await rejection(c.openSession({ ttlMs: 2000 })));
    expect(creates()).toBe(before);
  });

  it('ends a watch with the same error instead of reconnecting for ever', async () => {
    const controller = new AbortController();
    const it = c.watch('w/', { signal: controller.signal })[Symbol.asyncIterator]();
    const err = await rejection(it.next());
    controller.abort();
    expectUntrusted(err);
  });
});

/** A TCP proxy whose target can be switched: what a DNS change or a hijacked address does. */
async function switchableProxy(target: number) {
  const sockets = new Set<Socket>();
  let port = target;
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    /** New connections go to `to`; open ones are dropped. */
    retarget(to: number) {
      port = to;
      for (const s of sockets) s.destroy();
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a server replaced under a running watch', () => {
  it('ends the watch with the typed error when the reconnect meets a certificate its CA did not sign', async () => {
    const other = await startK8sEmulator();
    const proxy = await switchableProxy(h.emulator.port);
    const c = await createK8sCoordinator({ ...TEST_OPTIONS, kubeconfigPath: await h.kubeconfig(h.serverAt(proxy.port)), prefix: 'tls-swap', janitor: false });
    const controller = new AbortController();
    try {
      const start = await c.list('s/');
      const it = c.watch('s/', { signal: controller.signal, after: start.revision })[Symbol.asyncIterator]();
      const first = it.next();
      await c.create('s/1', bytes('1'));
      expect((await first).done).toBe(false);
      // The watch's connection drops and its reconnect reaches another server.
      proxy.retarget(other.port);
      expectUntrusted(await rejection(it.next()));
    } finally {
      controller.abort();
      await c.close();
      await proxy.close();
      await other.close();
    }
  });
});

describe('the CA option', () => {
  it('is checked when the coordinator is made: a missing file, a file without a certificate, a plain-HTTP server', async () => {
    const path = await h.kubeconfig();
    const missing = await rejection(createK8sCoordinator({ kubeconfigPath: path, caFile: join(h.dir, 'nope.crt') }));
    expect(missing.code).toBe('INVALID_ARGUMENT');
    expect(missing.message).toMatch(/could not read the CA file .*nope\.crt/);
    const junk = join(h.dir, 'junk.crt');
    await writeFile(junk, 'not a certificate');
    const notPem = await rejection(createK8sCoordinator({ kubeconfigPath: path, caFile: junk }));
    expect(notPem.code).toBe('INVALID_ARGUMENT');
    expect(notPem.message).toMatch(/holds no PEM certificate/);
    const plain = await rejection(createK8sCoordinator({ kubeconfigPath: await h.kubeconfig('http://127.0.0.1:9'), caFile: h.caFile ?? '' }));
    expect(plain.code).toBe('INVALID_ARGUMENT');
    expect(plain.message).toMatch(/is not an https:\/\/ URL/);
  });
});
