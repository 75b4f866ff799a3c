// Keys as ConfigMaps: the mapping, hash-collision detection, and how API errors and
// network failures surface as typed errors.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { rejection } from '@taskgraph/testkit';
import { ANNOTATION, keyObjectName, LABEL, type K8sCoordinator } from '../src/index.js';
import { keyLabels, keySelector } from '../src/names.js';
import { call } from './raw.js';
import { k8sFixture } from './helpers.js';

const fixture = k8sFixture();
const { h } = fixture;
let n = 0;

function client(extra = {}): Promise<K8sCoordinator> {
  return fixture.client(`k${++n}`, extra);
}

const bytes = (s: string) => new TextEncoder().encode(s);
const CONFIGMAPS = '/api/v1/namespaces/default/configmaps';

describe('the mapping', () => {
  it('stores a key in a ConfigMap named by a hash, the key in an annotation, the value in binaryData', async () => {
    const c = await client();
    const key = 'jobs/j1/tasks/7/addr';
    const version = await c.create(key, bytes('10.0.0.7:7000'));
    const name = keyObjectName(c.prefix, key);
    expect(name).toMatch(new RegExp(`^${c.prefix}-k-[0-9a-f]{40}$`));
    const cm = (await call(h, 'GET', `${CONFIGMAPS}/${name}`)) as {
      metadata: { resourceVersion: string; labels: Record<string, string>; annotations: Record<string, string> };
      binaryData: Record<string, string>;
    };
    expect(cm.metadata.resourceVersion).toBe(version);
    expect(cm.metadata.annotations).toEqual({ [ANNOTATION.key]: key });
    expect(cm.binaryData).toEqual({ value: Buffer.from('10.0.0.7:7000').toString('base64') });
    expect(cm.metadata.labels).toEqual(keyLabels(c.prefix, key));
    expect(Object.keys(cm.metadata.labels).sort()).toEqual([LABEL.kind, 'taskgraph.io/p1', 'taskgraph.io/p2', 'taskgraph.io/p3', 'taskgraph.io/p4', LABEL.store]);
    const updated = await c.update(key, bytes('10.0.0.8:7000'), version);
    const after = (await call(h, 'GET', `${CONFIGMAPS}/${name}`)) as { metadata: { annotations: Record<string, string> } };
    // The chain link a watcher checks: the version this write replaced.
    expect(after.metadata.annotations[ANNOTATION.prev]).toBe(version);
    expect(updated).not.toBe(version);
  });

  it('selects a prefix on the server by its complete segments, and checks the exact prefix in the client', () => {
    expect(keySelector('tg', 'jobs/j1/')).toBe(`${LABEL.store}=tg,${LABEL.kind}=key,taskgraph.io/p2=${keyLabels('tg', 'jobs/j1/x')['taskgraph.io/p2']}`);
    expect(keySelector('tg', 'jobs/j')).toBe(`${LABEL.store}=tg,${LABEL.kind}=key,taskgraph.io/p1=${keyLabels('tg', 'jobs/x')['taskgraph.io/p1']}`);
    expect(keySelector('tg', 'jobs')).toBe(`${LABEL.store}=tg,${LABEL.kind}=key`);
  });
});

describe('hash collisions', () => {
  // Two keys cannot be found hashing alike; a ConfigMap at one key's name holding
  // another key is the same situation to the client.
  async function plantCollision(c: K8sCoordinator, victim: string, holder: string): Promise<void> {
    await call(h, 'POST', CONFIGMAPS, {
      metadata: { name: keyObjectName(c.prefix, victim), labels: keyLabels(c.prefix, holder), annotations: { [ANNOTATION.key]: holder } },
      binaryData: { value: Buffer.from('planted').toString('base64') },
    });
  }

  it('get, create, update and delete of a key whose name is taken by another key fail clearly, and never touch it', async () => {
    const c = await client();
    await plantCollision(c, 'b', 'a');
    const get = await rejection(c.get('b'));
    expect(get.code).toBe('INTERNAL');
    expect(get.message).toMatch(/should hold the key "b" but has the key "a": a hash collision of key names/);
    expect((await rejection(c.create('b', bytes('x')))).code).toBe('INTERNAL');
    expect((await rejection(c.update('b', bytes('x'), '1'))).code).toBe('INTERNAL');
    const planted = (await call(h, 'GET', `${CONFIGMAPS}/${keyObjectName(c.prefix, 'b')}`)) as { metadata: { resourceVersion: string } };
    // A delete is conditional on a version, and versions are unique store-wide: b's version cannot match a's object.
    expect((await rejection(c.delete('b', '1'))).code).toBe('CONFLICT');
    // In listings the object is what its annotation says it is.
    expect((await c.list('a')).entries.map((e) => [e.key, e.version])).toEqual([['a', planted.metadata.resourceVersion]]);
    expect((await c.list('b')).entries).toEqual([]);
  });

  it('a foreign ConfigMap at a key name is reported the same way', async () => {
    const c = await client();
    await call(h, 'POST', CONFIGMAPS, { metadata: { name: keyObjectName(c.prefix, 'mine') }, data: { unrelated: 'yes' } });
    expect((await rejection(c.get('mine'))).message).toMatch(/has no TaskGraph key annotation/);
  });
});

describe('failures', () => {
  it('an API server answering 503 or 429 gives Unavailable (not applied), for reads and writes', async () => {
    const c = await client();
    h.emulator.faults.failNext(1, { status: 503, method: 'POST', resource: 'configmaps' });
    const e = await rejection(c.create('u', bytes('x')));
    expect(e.code).toBe('UNAVAILABLE');
    expect(e.retryable).toBe(true);
    expect(await c.get('u')).toBeUndefined();
    h.emulator.faults.failNext(1, { status: 429, method: 'GET', resource: 'configmaps' });
    expect((await rejection(c.get('u'))).code).toBe('UNAVAILABLE');
  });

  it('a 500 or 504 to a write gives Indeterminate (storage may have applied it); to a read, Unavailable', async () => {
    const c = await client();
    const v = await c.create('i', bytes('1'));
    h.emulator.faults.failNext(1, { status: 504, method: 'PUT', resource: 'configmaps' });
    expect((await rejection(c.update('i', bytes('2'), v))).code).toBe('INDETERMINATE');
    h.emulator.faults.failNext(1, { status: 500, method: 'GET', resource: 'configmaps' });
    expect((await rejection(c.get('i'))).code).toBe('UNAVAILABLE');
  });

  it('a request that gets no answer fails after requestTimeoutMs: Unavailable for a read, Indeterminate for a write', async () => {
    const c = await client({ requestTimeoutMs: 500 });
    await c.create('t', bytes('1'));
    h.proxyOf(c).cut();
    expect((await rejection(c.get('t'))).code).toBe('UNAVAILABLE');
    expect((await rejection(c.create('t2', bytes('2')))).code).toBe('INDETERMINATE');
    h.proxyOf(c).heal();
    expect(await c.get('t')).toBeDefined();
  });

  it('a request that gets no answer times out even when a garbage collection runs while it waits', async () => {
    // Node 20 can collect an AbortSignal.timeout held only by AbortSignal.any (nodejs/node#57736);
    // a request's deadline must not depend on what the collector keeps.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const c = await client({ requestTimeoutMs: 800 });
    await c.create('g', bytes('1'));
    h.proxyOf(c).cut();
    const reads = [c.get('g'), c.get('g'), c.list('g')].map((p) => rejection(p));
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 50));
      gc();
    }
    for (const e of await Promise.all(reads)) expect(e.code).toBe('UNAVAILABLE');
    h.proxyOf(c).heal();
    expect(await c.get('g')).toBeDefined();
  });

  it('credentials the API server refuses give an error naming the cause', async () => {
    const path = await h.kubeconfig();
    const { createK8sCoordinator } = await import('../src/index.js');
    const { readFile, writeFile } = await import('node:fs/promises');
    await writeFile(path, (await readFile(path, 'utf8')).replace(JSON.stringify(h.emulator.token), '"wrong"'));
    const c = await createK8sCoordinator({ kubeconfigPath: path, prefix: 'auth', janitor: false });
    try {
      const e = await rejection(c.get('x'));
      expect(e.code).toBe('INTERNAL');
      expect(e.message).toMatch(/refused the credentials or the Role/);
    } finally {
      await c.close();
    }
  });
});
