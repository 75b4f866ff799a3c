// @kubernetes/client-node (1.x) talking to the emulator unchanged, through a
// kubeconfig written to a temporary directory: the client the Kubernetes backend uses.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
  Watch,
} from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { startK8sEmulator, type K8sEmulator } from '../src/index.js';
import { pick } from './k8s-helpers.js';

let em: K8sEmulator;
let dir: string;
let kc: KubeConfig;
let core: CoreV1Api;
let coord: CoordinationV1Api;
const controllers: AbortController[] = [];

beforeEach(async () => {
  em = await startK8sEmulator({ bookmarkIntervalMs: 100 });
  dir = await mkdtemp(join(tmpdir(), 'k8s-emulator-'));
  const path = join(dir, 'kubeconfig');
  await em.writeKubeconfig(path, 'default');
  kc = new KubeConfig();
  kc.loadFromFile(path);
  core = kc.makeApiClient(CoreV1Api);
  coord = kc.makeApiClient(CoordinationV1Api);
});

afterEach(async () => {
  for (const c of controllers.splice(0)) c.abort();
  await em.close();
  await rm(dir, { recursive: true, force: true });
});

async function apiError(p: Promise<unknown>): Promise<ApiException<string>> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) return err as ApiException<string>;
    throw err;
  }
  throw new Error('expected the call to fail');
}

describe('the kubeconfig', () => {
  it('names the emulator over HTTPS with its CA file next to it, a token user and the namespace; nothing skips verification', () => {
    expect(em.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(kc.getCurrentCluster()?.server).toBe(em.url);
    expect(kc.getCurrentCluster()?.skipTLSVerify).toBe(false);
    expect(kc.getCurrentCluster()?.caFile).toBe(join(dir, 'kubeconfig.ca.crt'));
    expect(kc.getCurrentUser()?.token).toBe(em.token);
    expect(kc.getContextObject(kc.getCurrentContext())?.namespace).toBe('default');
  });

  it('works inline too (certificate-authority-data), as kubeconfig() writes it', async () => {
    const inline = new KubeConfig();
    inline.loadFromString(em.kubeconfig('default'));
    expect(inline.getCurrentCluster()?.caData).toBe(Buffer.from(em.ca ?? '').toString('base64'));
    const list = await inline.makeApiClient(CoreV1Api).listNamespacedConfigMap({ namespace: 'default' });
    expect(list.items).toEqual([]);
  });

  it('is refused by the client when it names another CA: the certificate is verified', async () => {
    const other = await startK8sEmulator();
    try {
      const path = join(dir, 'other-kubeconfig');
      await other.writeKubeconfig(path, 'default');
      const wrong = new KubeConfig();
      wrong.loadFromFile(path);
      // The other emulator's CA, this emulator's address: what a forged or replaced server looks like.
      wrong.loadFromOptions({ ...wrong, clusters: wrong.clusters.map((c) => ({ ...c, server: em.url })) });
      const err = await wrong
        .makeApiClient(CoreV1Api)
        .listNamespacedConfigMap({ namespace: 'default' })
        .then(
          () => undefined,
          (e: unknown) => e as { code?: string },
        );
      expect(err?.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    } finally {
      await other.close();
    }
  });

  it('still reaches an emulator asked to serve plain HTTP, which its kubeconfig marks insecure', async () => {
    const plain = await startK8sEmulator({ tls: false });
    try {
      expect(plain.url).toMatch(/^http:\/\//);
      expect(plain.ca).toBeUndefined();
      const path = join(dir, 'plain-kubeconfig');
      expect(await plain.writeKubeconfig(path)).toEqual({ kubeconfig: path, ca: undefined });
      const config = new KubeConfig();
      config.loadFromFile(path);
      expect(config.getCurrentCluster()?.skipTLSVerify).toBe(true);
      const list = await config.makeApiClient(CoreV1Api).listNamespacedConfigMap({ namespace: 'default' });
      expect(list.items).toEqual([]);
    } finally {
      await plain.close();
    }
  });
});

describe('CoreV1Api on ConfigMaps', () => {
  it('creates, reads, replaces, lists and deletes; errors arrive as ApiException with the Status', async () => {
    const created = await core.createNamespacedConfigMap({
      namespace: 'default',
      body: { metadata: { name: 'cm', labels: { store: 'tg' } }, binaryData: { v: Buffer.from('hello').toString('base64') } },
    });
    const rv = created.metadata?.resourceVersion ?? '';
    expect(rv).toMatch(/^\d+$/);
    const read = await core.readNamespacedConfigMap({ name: 'cm', namespace: 'default' });
    expect(Buffer.from(read.binaryData?.['v'] ?? '', 'base64').toString()).toBe('hello');

    const exists = await apiError(core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'cm' } } }));
    expect(exists.code).toBe(409);
    expect(pick(JSON.parse(exists.body), 'reason')).toBe('AlreadyExists');

    const replaced = await core.replaceNamespacedConfigMap({
      name: 'cm',
      namespace: 'default',
      body: { metadata: { name: 'cm', resourceVersion: rv, labels: { store: 'tg' } }, binaryData: { v: Buffer.from('bye').toString('base64') } },
    });
    const stale = await apiError(
      core.replaceNamespacedConfigMap({ name: 'cm', namespace: 'default', body: { metadata: { name: 'cm', resourceVersion: rv } } }),
    );
    expect(stale.code).toBe(409);
    expect(pick(JSON.parse(stale.body), 'reason')).toBe('Conflict');

    const list = await core.listNamespacedConfigMap({ namespace: 'default', labelSelector: 'store=tg' });
    expect(list.items.map((i) => i.metadata?.name)).toEqual(['cm']);
    expect(list.metadata?.resourceVersion).toBe(em.resourceVersion());

    const pre = await apiError(
      core.deleteNamespacedConfigMap({ name: 'cm', namespace: 'default', body: { preconditions: { resourceVersion: rv } } }),
    );
    expect(pre.code).toBe(409);
    const status = await core.deleteNamespacedConfigMap({
      name: 'cm',
      namespace: 'default',
      body: { preconditions: { resourceVersion: replaced.metadata?.resourceVersion ?? '', uid: created.metadata?.uid ?? '' } },
    });
    expect(status.status).toBe('Success');
    const missing = await apiError(core.readNamespacedConfigMap({ name: 'cm', namespace: 'default' }));
    expect(missing.code).toBe(404);
  });

  it('merge-patches through setHeaderOptions', async () => {
    await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'cm' }, data: { a: '1', b: '2' } } });
    const patched = await core.patchNamespacedConfigMap(
      { name: 'cm', namespace: 'default', body: { data: { a: null, c: '3' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(patched.data).toEqual({ b: '2', c: '3' });
  });

  it('reports validation failures as 422', async () => {
    const bad = await apiError(core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'Not_Valid' } } }));
    expect(bad.code).toBe(422);
    expect(pick(JSON.parse(bad.body), 'reason')).toBe('Invalid');
  });
});

describe('CoordinationV1Api on Leases', () => {
  it('round-trips V1MicroTime and refuses a plain Date, as a real server does', async () => {
    const renewTime = new V1MicroTime();
    const created = await coord.createNamespacedLease({
      namespace: 'default',
      body: { metadata: { name: 'l' }, spec: { holderIdentity: 's1', leaseDurationSeconds: 10, renewTime, leaseTransitions: 0 } },
    });
    expect(created.spec?.holderIdentity).toBe('s1');
    // MicroTime is not in the client's type map: it comes back as the wire string, six digits.
    expect(String(created.spec?.renewTime)).toBe(renewTime.toISOString());
    expect(renewTime.toISOString()).toMatch(/\.\d{6}Z$/);
    const plain = await apiError(coord.createNamespacedLease({ namespace: 'default', body: { metadata: { name: 'm' }, spec: { renewTime: new Date() } } }));
    expect(plain.code).toBe(400);

    const taken = await coord.replaceNamespacedLease({
      name: 'l',
      namespace: 'default',
      body: { ...created, spec: { ...created.spec, holderIdentity: 's2', leaseTransitions: 1, renewTime: new V1MicroTime() } },
    });
    expect(taken.spec?.leaseTransitions).toBe(1);
    const lost = await apiError(
      coord.replaceNamespacedLease({ name: 'l', namespace: 'default', body: { ...created, spec: { ...created.spec, holderIdentity: 's3' } } }),
    );
    expect(lost.code).toBe(409);
  });
});

describe('Watch', () => {
  interface Seen {
    type: string;
    name: string | undefined;
    rv: string | undefined;
    code: unknown;
  }

  async function startWatch(path: string, query: Record<string, string | number | boolean | undefined>) {
    const seen: Seen[] = [];
    let doneWith: unknown = 'open';
    const w = new Watch(kc);
    const controller = await w.watch(
      path,
      query,
      (type: string, obj: { metadata?: { name?: string; resourceVersion?: string }; code?: unknown }) => {
        seen.push({ type, name: obj.metadata?.name, rv: obj.metadata?.resourceVersion, code: obj.code });
      },
      (err: unknown) => {
        doneWith = err;
      },
    );
    controllers.push(controller);
    return { seen, done: () => doneWith, controller };
  }

  it('delivers ADDED, MODIFIED, DELETED and BOOKMARK events', async () => {
    const from = em.resourceVersion();
    const w = await startWatch('/api/v1/namespaces/default/configmaps', { resourceVersion: from, allowWatchBookmarks: true });
    const created = await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'a' } } });
    await core.replaceNamespacedConfigMap({ name: 'a', namespace: 'default', body: { metadata: { name: 'a', resourceVersion: created.metadata?.resourceVersion ?? '' }, data: { k: 'v' } } });
    await core.deleteNamespacedConfigMap({ name: 'a', namespace: 'default' });
    await eventually('a bookmark at the newest version arrived', () => w.seen.some((s) => s.type === 'BOOKMARK' && s.rv === em.resourceVersion()));
    expect(w.seen.filter((s) => s.type !== 'BOOKMARK').map((s) => `${s.type} ${s.name ?? ''}`)).toEqual(['ADDED a', 'MODIFIED a', 'DELETED a']);
  });

  it('passes the 410 ERROR event to the callback, then calls done', async () => {
    await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'a' } } });
    const old = String(Number(em.resourceVersion()) - 1);
    em.compact();
    const w = await startWatch('/api/v1/namespaces/default/configmaps', { resourceVersion: old });
    await eventually('the watch is done', () => w.done() !== 'open');
    expect(w.seen).toEqual([{ type: 'ERROR', name: undefined, rv: undefined, code: 410 }]);
    expect(w.done()).toBeNull();
  });

  it('calls done when the server closes the stream early', async () => {
    const w = await startWatch('/apis/coordination.k8s.io/v1/namespaces/default/leases', {});
    await eventually('the watch is open', () => em.openWatches() === 1);
    em.faults.closeWatches();
    await eventually('the watch is done', () => w.done() !== 'open');
  });

  it('skips a garbled line silently: the known weakness a caller must detect itself', async () => {
    const w = await startWatch('/api/v1/namespaces/default/configmaps', { resourceVersion: em.resourceVersion() });
    await eventually('the watch is open', () => em.openWatches() === 1);
    em.faults.dropWatchLines(1, 'garble');
    await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'garbled' } } });
    await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'after' } } });
    await eventually('one event arrived', () => w.seen.length === 1);
    expect(w.seen.map((s) => s.name)).toEqual(['after']);
    expect(w.done()).toBe('open');
  });
});
