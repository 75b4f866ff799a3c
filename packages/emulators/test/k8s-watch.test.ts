import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { makeServingCertificates, startK8sEmulator, type K8sEmulator, type K8sEmulatorOptions, type ServingCertificates } from '../src/index.js';
import { call, CM, LEASES, pick, settledTcpHandles, str, watch, type WatchReader } from './k8s-helpers.js';

let em: K8sEmulator;
const readers: WatchReader[] = [];
// One TLS identity for the file's emulators: watches still stream over HTTPS.
let certificates: ServingCertificates;

beforeAll(async () => {
  certificates = await makeServingCertificates();
});

async function start(options: K8sEmulatorOptions = {}): Promise<K8sEmulator> {
  em = await startK8sEmulator({ tls: certificates, ...options });
  return em;
}

async function open(path: string): Promise<WatchReader> {
  const r = await watch(em, path);
  readers.push(r);
  return r;
}

afterEach(async () => {
  for (const r of readers.splice(0)) r.close();
  await em.close();
});

const put = (name: string, labels: Record<string, string> = {}, data: Record<string, string> = {}) =>
  call(em, 'POST', CM(), { metadata: { name, labels }, data });

const rvOf = (a: { body: unknown }) => str(a.body, 'metadata', 'resourceVersion');
const summary = (events: unknown[]) => events.map((e) => `${str(e, 'type')} ${String(pick(e, 'object', 'metadata', 'name'))}`);

describe('where a watch starts', () => {
  it('without a resourceVersion replays the current state as ADDED, then follows changes', async () => {
    await start();
    await put('a');
    await put('b');
    const w = await open(`${CM()}?watch=true`);
    expect(w.status).toBe(200);
    await w.waitForEvents(2);
    await put('c');
    const events = await w.waitForEvents(3);
    expect(summary(events)).toEqual(['ADDED a', 'ADDED b', 'ADDED c']);
  });

  it('from a resourceVersion delivers exactly the changes after it, deletions with their own version', async () => {
    await start();
    const a = await put('a', {}, { k: '1' });
    const from = rvOf(a);
    const upd = await call(em, 'PUT', `${CM()}/a`, { metadata: { name: 'a', resourceVersion: from }, data: { k: '2' } });
    await call(em, 'DELETE', `${CM()}/a`);
    const w = await open(`${CM()}?watch=1&resourceVersion=${from}`);
    const events = await w.waitForEvents(2);
    expect(summary(events)).toEqual(['MODIFIED a', 'DELETED a']);
    expect(str(events[0], 'object', 'metadata', 'resourceVersion')).toBe(rvOf(upd));
    // The DELETED event carries the last content at the deletion's revision.
    expect(pick(events[1], 'object', 'data')).toEqual({ k: '2' });
    expect(str(events[1], 'object', 'metadata', 'resourceVersion')).toBe(em.resourceVersion());
  });

  it('from a resourceVersion not reached yet waits for it', async () => {
    await start();
    const future = Number(em.resourceVersion()) + 1;
    const w = await open(`${CM()}?watch=true&resourceVersion=${future}`);
    await put('a');
    await put('b');
    expect(summary(await w.waitForEvents(1))).toEqual(['ADDED b']);
  });

  it('with sendInitialEvents ends the replay with an annotated bookmark', async () => {
    await start();
    await put('a');
    const bad = await call(em, 'GET', `${CM()}?watch=true&sendInitialEvents=true`);
    expect(bad.status).toBe(422);
    const w = await open(`${CM()}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`);
    const events = await w.waitForEvents(2);
    expect(summary(events)).toEqual(['ADDED a', 'BOOKMARK undefined']);
    expect(pick(events[1], 'object', 'metadata', 'annotations')).toEqual({ 'k8s.io/initial-events-end': 'true' });
  });

  it('supports the deprecated /watch/ path for one object', async () => {
    await start();
    await put('a');
    await put('b');
    const w = await open(`/api/v1/watch/namespaces/default/configmaps/b`);
    expect(summary(await w.waitForEvents(1))).toEqual(['ADDED b']);
  });
});

describe('410 Expired', () => {
  it('answers a watch from a compacted resourceVersion with one ERROR event and ends the stream', async () => {
    await start();
    const a = await put('a');
    await put('b');
    em.compact();
    const w = await open(`${CM()}?watch=true&resourceVersion=${rvOf(a)}`);
    expect(w.status).toBe(200);
    expect(await w.ended).toBe('end');
    expect(w.events).toEqual([
      {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `too old resource version: ${rvOf(a)} (${Number(em.resourceVersion()) + 1})`,
          reason: 'Expired',
          code: 410,
        },
      },
    ]);
    // From the compaction point on, watching works again.
    const ok = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}`);
    await put('c');
    expect(summary(await ok.waitForEvents(1))).toEqual(['ADDED c']);
  });

  it('expires resourceVersions that fell out of the retained window', async () => {
    await start({ watchRetention: 3 });
    const first = await put('a');
    for (let i = 0; i < 10; i++) await put(`n${i}`);
    const w = await open(`${CM()}?watch=true&resourceVersion=${rvOf(first)}`);
    await w.ended;
    expect(str(w.events[0], 'type')).toBe('ERROR');
    expect(pick(w.events[0], 'object', 'code')).toBe(410);
    const recent = Number(em.resourceVersion()) - 2;
    const ok = await open(`${CM()}?watch=true&resourceVersion=${recent}`);
    expect(summary(await ok.waitForEvents(2))).toEqual(['ADDED n8', 'ADDED n9']);
  });
});

describe('label selectors on a watch', () => {
  it('reports objects entering the selection as ADDED and leaving it as DELETED', async () => {
    await start();
    const a = await put('a', { role: 'x' });
    const w = await open(`${CM()}?watch=true&resourceVersion=${rvOf(a)}&labelSelector=role%3Dx`);
    const left = await call(em, 'PUT', `${CM()}/a`, { metadata: { name: 'a', labels: { role: 'y' } } });
    await call(em, 'PUT', `${CM()}/a`, { metadata: { name: 'a', labels: { role: 'x' } } });
    await put('other', { role: 'z' });
    await put('b', { role: 'x' });
    const events = await w.waitForEvents(3);
    expect(summary(events)).toEqual(['DELETED a', 'ADDED a', 'ADDED b']);
    // The DELETED event shows the old content at the new revision.
    expect(pick(events[0], 'object', 'metadata', 'labels')).toEqual({ role: 'x' });
    expect(str(events[0], 'object', 'metadata', 'resourceVersion')).toBe(rvOf(left));
  });

  it('keeps kinds and namespaces apart', async () => {
    await start();
    em.createNamespace('other');
    const w = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}`);
    await call(em, 'POST', LEASES(), { metadata: { name: 'l' } });
    await call(em, 'POST', CM('other'), { metadata: { name: 'x' } });
    await put('mine');
    expect(summary(await w.waitForEvents(1))).toEqual(['ADDED mine']);
    expect(w.events.length).toBe(1);
  });
});

describe('bookmarks and timeouts', () => {
  it('sends bookmarks with the newest resourceVersion only to watches that allow them', async () => {
    await start({ bookmarkIntervalMs: 50 });
    const with_ = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}&allowWatchBookmarks=true`);
    const without = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}`);
    await call(em, 'POST', LEASES(), { metadata: { name: 'l' } });
    await eventually('a bookmark arrived', () => with_.events.some((e) => str(e, 'object', 'metadata', 'resourceVersion') === em.resourceVersion()));
    const bookmark = with_.events.find((e) => str(e, 'type') === 'BOOKMARK');
    expect(bookmark).toEqual({ type: 'BOOKMARK', object: { kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: em.resourceVersion(), creationTimestamp: null } } });
    em.sendBookmarks();
    await put('a');
    await without.waitForEvents(1);
    expect(summary(without.events)).toEqual(['ADDED a']);
  });

  it('ends the stream cleanly after timeoutSeconds, with a bookmark before when allowed', async () => {
    await start();
    const w = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}&timeoutSeconds=3&allowWatchBookmarks=true`);
    expect(await w.ended).toBe('end');
    expect(w.events.map((e) => str(e, 'type'))).toEqual(['BOOKMARK']);
    expect(em.openWatches()).toBe(0);
  });
});

describe('watch fault switches', () => {
  it('closeWatches ends every stream cleanly', async () => {
    await start();
    const a = await open(`${CM()}?watch=true`);
    const b = await open(`${LEASES()}?watch=true`);
    await eventually('two watches are open', () => em.openWatches() === 2);
    expect(em.faults.closeWatches()).toBe(2);
    expect(await a.ended).toBe('end');
    expect(await b.ended).toBe('end');
  });

  it('resetWatches drops the connections', async () => {
    await start();
    const a = await open(`${CM()}?watch=true`);
    await eventually('the watch is open', () => em.openWatches() === 1);
    expect(em.faults.resetWatches()).toBe(1);
    expect(await a.ended).toBe('error');
  });

  it('dropWatchLines omits or garbles the next event lines and keeps the stream open', async () => {
    await start();
    const w = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}`);
    em.faults.dropWatchLines(1);
    await put('lost');
    await put('seen');
    em.faults.dropWatchLines(1, 'garble');
    await put('garbled');
    await put('seen2');
    await eventually('three lines arrived', () => w.lines.length === 3);
    expect(summary(w.events)).toEqual(['ADDED seen', 'ADDED seen2']);
    expect(() => JSON.parse(w.lines[1] ?? '') as unknown).toThrow();
  });

  it('truncateNextWatchLine writes half a line and drops the connection', async () => {
    await start();
    const w = await open(`${CM()}?watch=true&resourceVersion=${em.resourceVersion()}`);
    await put('ok');
    await w.waitForEvents(1);
    em.faults.truncateNextWatchLine();
    await put('cut');
    expect(await w.ended).toBe('error');
    expect(w.tail.length).toBeGreaterThan(0);
    expect(w.tail).toContain('"type":"ADDED"');
    expect(w.lines.length).toBe(1);
  });

  it('setUnavailable cuts open watches and refuses new ones until it is turned off', async () => {
    await start();
    const w = await open(`${CM()}?watch=true`);
    await eventually('the watch is open', () => em.openWatches() === 1);
    em.faults.setUnavailable(true);
    expect(await w.ended).toBe('error');
    const refused = await call(em, 'GET', `${CM()}?watch=true`);
    expect(refused.status).toBe(503);
    em.faults.setUnavailable(false);
    const again = await open(`${CM()}?watch=true`);
    expect(again.status).toBe(200);
  });

  it('close ends open watches and leaves no sockets behind', async () => {
    const before = await settledTcpHandles();
    await start();
    const w = await open(`${CM()}?watch=true&allowWatchBookmarks=true`);
    await eventually('the watch is open', () => em.openWatches() === 1);
    await em.close();
    expect(await w.ended).toBe('end');
    await eventually('the handles are released', () => process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP')).length <= before);
  });
});
