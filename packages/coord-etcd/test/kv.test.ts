import { describe, it, expect } from 'vitest';
import { resolveCoordinator } from '@taskgraph/core';
import { eventually, rejection } from '@taskgraph/testkit';
import { EtcdCoordinator } from '../src/index.js';
import { bytes, etcdFixture, patience, text } from './helpers.js';

const etcd = etcdFixture();

describe('etcd keys: versions are mod revisions', () => {
  it('create, get, update and delete compare on the key revisions', async () => {
    const c = await etcd.coordinator();
    const v1 = await c.create('a', bytes('1'));
    const got = await c.get('a');
    expect(got).toEqual({ key: 'a', value: bytes('1'), version: v1 });
    expect(got?.value).toBeInstanceOf(Uint8Array);
    const v2 = await c.update('a', bytes('2'), v1);
    expect(BigInt(v2)).toBeGreaterThan(BigInt(v1));
    expect((await rejection(c.update('a', bytes('3'), v1))).code).toBe('CONFLICT');
    expect((await rejection(c.delete('a', v1))).code).toBe('CONFLICT');
    expect((await rejection(c.create('a', bytes('x')))).code).toBe('ALREADY_EXISTS');
    await c.delete('a', v2);
    expect(await c.get('a')).toBeUndefined();
    expect((await rejection(c.update('a', bytes('4'), v2))).code).toBe('NOT_FOUND');
    expect((await rejection(c.delete('a', v2))).code).toBe('NOT_FOUND');
  });

  it('a version that no etcd key can have is a conflict or not found, never accepted', async () => {
    const c = await etcd.coordinator();
    await c.create('odd', bytes('1'));
    expect((await rejection(c.update('odd', bytes('2'), 'memory-7'))).code).toBe('CONFLICT');
    expect((await rejection(c.update('missing', bytes('2'), 'memory-7'))).code).toBe('NOT_FOUND');
    expect((await rejection(c.update('odd', bytes('2'), ''))).code).toBe('INVALID_ARGUMENT');
  });

  it('list is one snapshot whose revision is the store revision', async () => {
    const c = await etcd.coordinator();
    const va = await c.create('l/a', bytes('a'));
    const vb = await c.create('l/b', bytes('b'));
    await c.create('lx', bytes('not under l/'));
    const listed = await c.list('l/');
    expect(listed.entries.map((e) => [e.key, text(e.value), e.version])).toEqual([
      ['l/a', 'a', va],
      ['l/b', 'b', vb],
    ]);
    expect(BigInt(listed.revision)).toBeGreaterThanOrEqual(BigInt(vb));
  });

  it('namespaces do not see each other', async () => {
    const a = await etcd.coordinator();
    const b = await etcd.coordinator();
    await a.create('shared', bytes('a'));
    expect(await b.get('shared')).toBeUndefined();
    await b.create('shared', bytes('b'));
    expect(text((await a.get('shared'))?.value)).toBe('a');
    await a.deletePrefix('sh');
    expect(text((await b.get('shared'))?.value)).toBe('b');
  });

  it('stores keys under <namespace>/ as etcd sees them', async () => {
    const c = await etcd.coordinator();
    await c.create('job/spec', bytes('s'));
    const raw = etcd.raw();
    expect(await raw.get(`${c.namespace}/job/spec`).string()).toBe('s');
  });
});

describe('etcd keys: the reserved lock subtree', () => {
  it('rejects keys and prefixes under __locks/', async () => {
    const c = await etcd.coordinator();
    expect((await rejection(c.create('__locks/x', bytes('x')))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(c.create('__locks', bytes('x')))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(c.list('__locks/'))).code).toBe('INVALID_ARGUMENT');
  });

  it('list, watch and deletePrefix step around locks', async () => {
    const c = await etcd.coordinator();
    const s = await c.openSession({ ttlMs: 5000 });
    const controller = new AbortController();
    const start = await c.list('_');
    const batches: string[][] = [];
    const consumer = (async () => {
      for await (const b of c.watch('_', { after: start.revision, signal: controller.signal })) batches.push(b.events.map((e) => e.key));
    })();
    const lock = await c.acquire('_x', s);
    await c.create('_k', bytes('k'));
    expect((await c.list('_')).entries.map((e) => e.key)).toEqual(['_k']);
    await eventually('the watch saw the key', () => batches.length > 0, patience);
    expect(batches).toEqual([['_k']]);
    await c.deletePrefix('_');
    expect(await c.holder('_x')).toEqual({ owner: s.id, token: lock.token });
    await eventually('the watch saw the delete', () => batches.length > 1, patience);
    controller.abort();
    await consumer;
    expect(batches).toEqual([['_k'], ['_k']]);
    await lock.release();
    await s.close();
  });
});

describe('etcd keys: sizes', () => {
  it('checks value sizes before sending, against etcd default request limit', async () => {
    const c = await etcd.coordinator();
    expect(c.caps.maxValueBytes).toBeLessThan(1.5 * 1024 * 1024);
    expect(c.caps.maxValueBytes).toBeGreaterThan(1.4 * 1024 * 1024);
    await c.create('big/ok', new Uint8Array(c.caps.maxValueBytes));
    expect((await c.get('big/ok'))?.value.length).toBe(c.caps.maxValueBytes);
    const err = await rejection(c.create('big/no', new Uint8Array(c.caps.maxValueBytes + 1)));
    expect(err.code).toBe('INVALID_ARGUMENT');
  });

  it("maps etcd's own 'request is too large' to InvalidArgumentError", async () => {
    // Told etcd takes more than it does, the coordinator sends; etcd refuses.
    const c = await etcd.coordinator({ maxRequestBytes: 8 * 1024 * 1024 });
    const err = await rejection(c.create('big/server', new Uint8Array(2 * 1024 * 1024)));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(/too large/);
    expect(await c.get('big/server')).toBeUndefined();
  });
});

function resources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

describe('etcd coordinator: options and close', () => {
  it('a closed coordinator leaves no sockets or timers behind, even with watches, sessions and lock waits open', async () => {
    const before = resources();
    const c = await etcd.coordinator();
    const other = await etcd.coordinator({ namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 5000 });
    const so = await other.openSession({ ttlMs: 5000 });
    const held = await other.acquire('busy', so);
    const waiting = c.acquire('busy', s).catch((err: unknown) => err);
    const controller = new AbortController();
    const iterators = [0, 1, 2].map(() => c.watch('h/', { signal: controller.signal })[Symbol.asyncIterator]());
    const pending = iterators.map((it) => it.next());
    await c.create('h/x', bytes('x'), { session: s });
    await Promise.all(pending);
    await c.close();
    expect(((await waiting) as { code?: string }).code).toMatch(/CLOSED|LEASE_LOST/);
    await held.release();
    await other.close();
    await eventually(`the handles drop back (${JSON.stringify(resources())} vs ${JSON.stringify(before)})`, () => {
      const now = resources();
      return Object.entries(now).every(([k, n]) => n <= (before[k] ?? 0));
    }, patience);
  });


  it('is what core resolves an etcd:// URL to', async () => {
    const c = await resolveCoordinator(`etcd://${etcd.server.clientAddress}?namespace=resolved-${Date.now()}`);
    try {
      expect(c).toBeInstanceOf(EtcdCoordinator);
      const v = await c.create('k', bytes('v'));
      expect((await c.get('k'))?.version).toBe(v);
    } finally {
      await c.close();
    }
  });

  it('declares what etcd does', async () => {
    const c = await etcd.coordinator();
    expect(c.caps).toMatchObject({ backend: 'etcd', watchCoalesces: false, ttlGranularityMs: 1000, ttlRangeMs: [2000, 3_600_000] });
    expect((await rejection(c.openSession({ ttlMs: 1000 }))).code).toBe('INVALID_ARGUMENT');
  });

  it('rejects a session of another coordinator', async () => {
    const a = await etcd.coordinator();
    const b = await etcd.coordinator();
    const s = await a.openSession({ ttlMs: 5000 });
    expect((await rejection(b.create('x', bytes('x'), { session: s }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(b.acquire('x', s))).code).toBe('INVALID_ARGUMENT');
  });

  it('close revokes sessions, ends watches, and later calls fail with ClosedError', async () => {
    const c = await etcd.coordinator();
    const observer = await etcd.coordinator({ namespace: c.namespace });
    const s = await c.openSession({ ttlMs: 30_000 });
    await c.create('eph', bytes('e'), { session: s });
    const it = c.watch('w/', { signal: new AbortController().signal })[Symbol.asyncIterator]();
    const pending = it.next();
    await c.close();
    expect(await pending).toEqual({ value: undefined, done: true });
    expect(s.lost.aborted).toBe(true);
    expect((s.lost.reason as { code?: string }).code).toBe('CLOSED');
    expect(await observer.get('eph')).toBeUndefined();
    expect((await rejection(c.get('x'))).code).toBe('CLOSED');
    expect((await rejection(c.openSession({ ttlMs: 5000 }))).code).toBe('CLOSED');
    await c.close();
  });
});
