import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '@taskgraph/api';
import { resolveCoordinator } from '@taskgraph/core';
import { rejection } from '@taskgraph/testkit';
import { ConsulCoordinator as ConsulCoordinatorClass, MAX_VALUE_BYTES, escapeKey, unescapeKey } from '../src/index.js';
import { bytes, consulFixture, coordinator, emulator, text } from './helpers.js';

const { consul, make } = consulFixture();

describe('key escaping', () => {
  it('round-trips any key and keeps prefixes as prefixes', () => {
    for (const key of ['plain/key_1-2', 'config.json', 'a b/ü/😀', 'a..b/../c', ',comma', 'q?x=1&y#z']) {
      const escaped = escapeKey(key);
      expect(escaped).toMatch(/^[A-Za-z0-9_,/-]*$/);
      expect(unescapeKey(escaped)).toBe(key);
    }
    expect(escapeKey('jobs/a.b/c').startsWith(escapeKey('jobs/a.'))).toBe(true);
    expect(escapeKey('config.json').endsWith('.json')).toBe(false);
    expect(() => unescapeKey('bad,zz')).toThrow();
  });
});

describe('ConsulCoordinator keys', () => {
  it('creates, reads, updates and deletes with ModifyIndex versions', async () => {
    const c = await make();
    const v1 = await c.create('jobs/a/spec', bytes('one'));
    expect(v1).toMatch(/^\d+$/);
    const e1 = await c.get('jobs/a/spec');
    expect(e1 && { key: e1.key, value: text(e1.value), version: e1.version }).toEqual({ key: 'jobs/a/spec', value: 'one', version: v1 });
    const v2 = await c.update('jobs/a/spec', bytes('two'), v1);
    expect(Number(v2)).toBeGreaterThan(Number(v1));
    expect((await rejection(c.update('jobs/a/spec', bytes('three'), v1))).code).toBe('CONFLICT');
    expect((await rejection(c.create('jobs/a/spec', bytes('again')))).code).toBe('ALREADY_EXISTS');
    expect((await rejection(c.delete('jobs/a/spec', v1))).code).toBe('CONFLICT');
    await c.delete('jobs/a/spec', v2);
    expect(await c.get('jobs/a/spec')).toBeUndefined();
    expect((await rejection(c.update('jobs/a/spec', bytes('x'), v2))).code).toBe('NOT_FOUND');
    expect((await rejection(c.delete('jobs/a/spec', v2))).code).toBe('NOT_FOUND');
    expect((await rejection(c.update('jobs/a/spec', bytes('x'), 'not-a-version'))).code).toBe('NOT_FOUND');
  });

  it('moves the version on every update, even when the value does not change', async () => {
    const c = await make();
    const v1 = await c.create('k', bytes('same'));
    const v2 = await c.update('k', bytes('same'), v1);
    const v3 = await c.update('k', bytes('same'), v2);
    expect(new Set([v1, v2, v3]).size).toBe(3);
    expect((await rejection(c.update('k', bytes('same'), v1))).code).toBe('CONFLICT');
  });

  it('keeps keys Consul’s current key rules would refuse (spaces, unicode, .json endings)', async () => {
    const c = await make();
    const keys = ['with space/x', 'ünï/😀', 'cfg/app.json', 'dots/a..b'];
    for (const k of keys) await c.create(k, bytes(k));
    for (const k of keys) expect(text((await c.get(k))!.value)).toBe(k);
    const listed = await c.list('cfg/');
    expect(listed.entries.map((e) => e.key)).toEqual(['cfg/app.json']);
  });

  it('lists one prefix in key order with a revision, and not the neighbouring prefixes', async () => {
    const c = await make();
    for (const k of ['p/b', 'p/a', 'p/c/d', 'p-other', 'q']) await c.create(k, bytes(k));
    const { entries, revision } = await c.list('p/');
    expect(entries.map((e) => e.key)).toEqual(['p/a', 'p/b', 'p/c/d']);
    expect(Number(revision)).toBeGreaterThanOrEqual(Math.max(...entries.map((e) => Number(e.version))));
    const empty = await c.list('nothing/');
    expect(empty.entries).toEqual([]);
    expect(Number(empty.revision)).toBeGreaterThan(0);
  });

  it('deletePrefix removes the prefix and nothing else', async () => {
    const c = await make();
    for (const k of ['d/1', 'd/2/3', 'e/1']) await c.create(k, bytes(k));
    await c.deletePrefix('d/');
    expect((await c.list('d/')).entries).toEqual([]);
    expect(await c.get('e/1')).toBeDefined();
  });

  it('namespaces do not see each other', async () => {
    const a = await make();
    const b = await make();
    await a.create('shared/name', bytes('a'));
    expect(await b.get('shared/name')).toBeUndefined();
    await b.create('shared/name', bytes('b'));
    expect(text((await a.get('shared/name'))!.value)).toBe('a');
  });

  it('accepts values up to caps.maxValueBytes and refuses larger ones before any request', async () => {
    const c = await make();
    expect(c.caps.maxValueBytes).toBe(MAX_VALUE_BYTES);
    const v = await c.create('big', new Uint8Array(MAX_VALUE_BYTES).fill(7));
    expect((await c.get('big'))!.value.length).toBe(MAX_VALUE_BYTES);
    // Any request this client sends names its namespace (a KV path) or goes to /v1/txn.
    let sent = 0;
    const stop = consul.onRequest(({ path }) => {
      if (path.includes(c.namespace) || path === '/v1/txn') sent++;
    });
    try {
      expect((await rejection(c.update('big', new Uint8Array(MAX_VALUE_BYTES + 1), v))).code).toBe('INVALID_ARGUMENT');
      expect((await rejection(c.create('bad//key', bytes('x')))).code).toBe('INVALID_ARGUMENT');
      expect((await rejection(c.get('x'.repeat(513)))).code).toBe('INVALID_ARGUMENT');
    } finally {
      stop();
    }
    expect(sent).toBe(0);
  });

  it('is what core resolves a consul:// URL to', async () => {
    const c = await resolveCoordinator(`consul://127.0.0.1:${consul.port}?namespace=resolved-${process.pid}`);
    try {
      expect(c).toBeInstanceOf(ConsulCoordinatorClass);
      const v = await c.create('k', bytes('v'));
      expect((await c.get('k'))?.version).toBe(v);
      await c.deletePrefix('k');
    } finally {
      await c.close();
    }
  });

  it('reports the caps of a Consul backend', async () => {
    const c = await make();
    expect(c.caps).toMatchObject({
      backend: 'consul',
      watchCoalesces: true,
      ttlRangeMs: [10_000, 86_400_000],
      ttlGranularityMs: 1000,
      expiryFactor: 2,
      maxKeyBytes: 512,
    });
  });
});

describe('ConsulCoordinator failures', () => {
  it('maps Consul without a leader and 503 to UnavailableError (not applied)', async () => {
    const c = await make();
    consul.faults.unavailable = 'no-leader';
    const noLeader = await rejection(c.create('x', bytes('1')));
    expect(noLeader.code).toBe('UNAVAILABLE');
    expect(noLeader.retryable).toBe(true);
    expect((await rejection(c.get('x'))).code).toBe('UNAVAILABLE');
    consul.faults.unavailable = 'service-unavailable';
    expect((await rejection(c.list('x/'))).code).toBe('UNAVAILABLE');
    consul.faults.unavailable = false;
    expect(await c.get('x')).toBeUndefined();
  });

  it('maps a refused connection to UnavailableError, and works again once Consul is back', async () => {
    const c = await make();
    await consul.stop();
    const err = await rejection(c.create('y', bytes('1')));
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toContain('ECONNREFUSED');
    await consul.start();
    await c.create('y', bytes('1'));
  });

  it('maps a write whose answer was lost to IndeterminateError; the write did happen', async () => {
    const c = await make();
    consul.faults.dropAnswers = 1;
    const err = await rejection(c.create('lost/answer', bytes('applied')));
    expect(err.code).toBe('INDETERMINATE');
    expect(text((await c.get('lost/answer'))!.value)).toBe('applied');
  });

  it('maps a write answered too late to IndeterminateError and a late read to UnavailableError', async () => {
    const c = await make({ requestTimeoutMs: 200 });
    consul.faults.delayAnswerMs = 1_000;
    expect((await rejection(c.create('late', bytes('v')))).code).toBe('INDETERMINATE');
    expect((await rejection(c.get('late'))).code).toBe('UNAVAILABLE');
    consul.faults.delayAnswerMs = 0;
    expect(await c.get('late')).toBeDefined();
  });

  it('maps a refused ACL token to InvalidArgumentError and sends the token it is given', async () => {
    const secured = await emulator({ aclToken: 'right' });
    try {
      const wrong = await coordinator(secured, { token: 'wrong' });
      const right = await coordinator(secured, { token: 'right' });
      try {
        expect((await rejection(wrong.get('k'))).code).toBe('INVALID_ARGUMENT');
        await right.create('k', bytes('v'));
        expect(await right.get('k')).toBeDefined();
      } finally {
        await wrong.close();
        await right.close();
      }
    } finally {
      await secured.close();
    }
  });

  it('sends the datacenter it is given', async () => {
    const other = await make({ datacenter: 'dc2' });
    expect((await rejection(other.get('k'))).code).toBe('UNAVAILABLE');
    const same = await make({ datacenter: 'dc1' });
    expect(await same.get('k')).toBeUndefined();
  });

  it('checks input before the closed state: an empty version, a bad key or TTL is InvalidArgument, with no request', async () => {
    const c = await make();
    const v = await c.create('k', bytes('v'));
    let sent = 0;
    const stop = consul.onRequest(({ path }) => {
      if (path.includes(c.namespace) || path === '/v1/txn' || path.startsWith('/v1/session/')) sent++;
    });
    try {
      expect((await rejection(c.update('k', bytes('x'), ''))).code).toBe('INVALID_ARGUMENT');
      expect((await rejection(c.delete('k', ''))).code).toBe('INVALID_ARGUMENT');
      await c.close();
      expect((await rejection(c.get('bad//key'))).code).toBe('INVALID_ARGUMENT');
      expect((await rejection(c.delete('k', ''))).code).toBe('INVALID_ARGUMENT');
      expect((await rejection(c.openSession({ ttlMs: 1 }))).code).toBe('INVALID_ARGUMENT');
      expect(() => c.watch('bad//', { signal: new AbortController().signal })).toThrow(InvalidArgumentError);
      expect((await rejection(c.delete('k', v))).code).toBe('CLOSED');
    } finally {
      stop();
    }
    expect(sent).toBe(0);
  });

  it('refuses calls after close with ClosedError; a watch reports it from its iterator', async () => {
    const c = await make();
    await c.close();
    expect((await rejection(c.get('k'))).code).toBe('CLOSED');
    const iterator = c.watch('p/', { signal: new AbortController().signal })[Symbol.asyncIterator]();
    expect((await rejection(iterator.next())).code).toBe('CLOSED');
  });
});
