/** get / create / update / delete / list / deletePrefix: the key-value contract. */
import assert from 'node:assert/strict';
import type { Coordinator } from '@taskgraph/api';
import type { DefineTest } from './context.js';
import { eventually } from '../eventually.js';
import { byteOrder, bytes, consumeWatch, hex, rejectsWith, text } from './util.js';

export function keyTests(test: DefineTest): void {
  test('get of a missing key is undefined', async (t) => {
    const c = await t.client();
    assert.equal(await c.get('missing'), undefined);
    assert.equal(await c.get('missing/deeper/still'), undefined);
  });

  test('create returns the version get then reports, with the value', async (t) => {
    const c = await t.client();
    const version = await c.create('a', bytes('one'));
    assert.equal(typeof version, 'string');
    assert.ok(version.length > 0, 'a version is a non-empty string');
    const got = await c.get('a');
    assert.ok(got, 'the created key is there');
    assert.equal(got.key, 'a');
    assert.equal(text(got.value), 'one');
    assert.equal(got.version, version);
  });

  test('create of an existing key rejects with AlreadyExists and leaves the value', async (t) => {
    const c = await t.client();
    const v = await c.create('k', bytes('first'));
    await rejectsWith(() => c.create('k', bytes('second')), 'ALREADY_EXISTS', 'second create');
    const got = await c.get('k');
    assert.equal(got && text(got.value), 'first');
    assert.equal(got?.version, v);
  });

  test('concurrent creates of one key from two clients: exactly one wins', async (t) => {
    const clients = [await t.client(), await t.client()];
    const n = Math.max(4, Math.min(16, t.settings.concurrency));
    const results = await Promise.allSettled(
      Array.from({ length: n }, (_, i) => (clients[i % 2] as Coordinator).create('contended', bytes(`writer-${i}`))),
    );
    const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, version: r.value }] : []));
    assert.equal(winners.length, 1, `exactly one create wins, got ${winners.length}`);
    for (const r of results) {
      if (r.status === 'rejected') await rejectsWith(() => Promise.reject(r.reason), 'ALREADY_EXISTS', 'a losing create');
    }
    const got = await (clients[1] as Coordinator).get('contended');
    const winner = winners[0] as { i: number; version: string };
    assert.equal(got && text(got.value), `writer-${winner.i}`);
    assert.equal(got?.version, winner.version);
  });

  test('update with the current version replaces the value and returns a new version', async (t) => {
    const c = await t.client();
    const v1 = await c.create('u', bytes('1'));
    const v2 = await c.update('u', bytes('2'), v1);
    assert.notEqual(v2, v1, 'an update changes the version');
    const got = await c.get('u');
    assert.equal(got && text(got.value), '2');
    assert.equal(got?.version, v2);
    const v3 = await c.update('u', bytes('3'), v2);
    assert.notEqual(v3, v2);
    assert.notEqual(v3, v1);
  });

  test('update with a stale version rejects with Conflict and leaves the value', async (t) => {
    const c = await t.client();
    const v1 = await c.create('u', bytes('1'));
    const v2 = await c.update('u', bytes('2'), v1);
    await rejectsWith(() => c.update('u', bytes('stale'), v1), 'CONFLICT', 'update with a stale version');
    const got = await c.get('u');
    assert.equal(got && text(got.value), '2');
    assert.equal(got?.version, v2);
  });

  test('update of a missing key rejects with NotFound', async (t) => {
    const c = await t.client();
    const v = await c.create('other', bytes('x'));
    await rejectsWith(() => c.update('missing', bytes('x'), v), 'NOT_FOUND', 'update of a missing key');
    assert.equal(await c.get('missing'), undefined, 'update never creates');
  });

  test('concurrent updates from one version from two clients: exactly one wins', async (t) => {
    const clients = [await t.client(), await t.client()];
    const v0 = await (clients[0] as Coordinator).create('cas', bytes('start'));
    const n = Math.max(4, Math.min(16, t.settings.concurrency));
    const results = await Promise.allSettled(
      Array.from({ length: n }, (_, i) => (clients[i % 2] as Coordinator).update('cas', bytes(`writer-${i}`), v0)),
    );
    const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, version: r.value }] : []));
    assert.equal(winners.length, 1, `exactly one compare-and-set wins, got ${winners.length}`);
    for (const r of results) {
      if (r.status === 'rejected') await rejectsWith(() => Promise.reject(r.reason), 'CONFLICT', 'a losing update');
    }
    const got = await (clients[0] as Coordinator).get('cas');
    const winner = winners[0] as { i: number; version: string };
    assert.equal(got && text(got.value), `writer-${winner.i}`);
    assert.equal(got?.version, winner.version);
  });

  test('delete with a stale version rejects with Conflict; with the current one it deletes', async (t) => {
    const c = await t.client();
    const v1 = await c.create('d', bytes('1'));
    const v2 = await c.update('d', bytes('2'), v1);
    await rejectsWith(() => c.delete('d', v1), 'CONFLICT', 'delete with a stale version');
    assert.equal(text((await c.get('d'))?.value ?? bytes('gone')), '2');
    await c.delete('d', v2);
    assert.equal(await c.get('d'), undefined);
  });

  test('delete of a missing key rejects with NotFound', async (t) => {
    const c = await t.client();
    const v = await c.create('d', bytes('1'));
    await c.delete('d', v);
    await rejectsWith(() => c.delete('d', v), 'NOT_FOUND', 'second delete');
    await rejectsWith(() => c.delete('never', v), 'NOT_FOUND', 'delete of a key that never was');
  });

  test('a deleted and re-created key gets a new version: the old one no longer matches', async (t) => {
    const c = await t.client();
    const old = await c.create('again', bytes('1'));
    await c.delete('again', old);
    const fresh = await c.create('again', bytes('1'));
    assert.notEqual(fresh, old);
    await rejectsWith(() => c.update('again', bytes('2'), old), 'CONFLICT', 'update with the version of the deleted key');
    await rejectsWith(() => c.delete('again', old), 'CONFLICT', 'delete with the version of the deleted key');
    assert.equal((await c.get('again'))?.version, fresh);
  });

  test('values round-trip byte-exact: every byte value, the empty value, and one of exactly caps.maxValueBytes', async (t) => {
    const c = await t.client();
    const all = Uint8Array.from({ length: 512 }, (_, i) => (i * 7 + 3) % 256);
    all.set(Uint8Array.from({ length: 256 }, (_, i) => i));
    const empty = new Uint8Array(0);
    const big = new Uint8Array(c.caps.maxValueBytes);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
    big[big.length - 1] = 0xff;
    const cases: [string, Uint8Array][] = [
      ['bin/all', all],
      ['bin/empty', empty],
      ['bin/big', big],
    ];
    for (const [key, value] of cases) await c.create(key, value);
    const other = await t.client();
    for (const [key, value] of cases) {
      const got = await other.get(key);
      assert.ok(got, `${key} is there`);
      assert.ok(got.value instanceof Uint8Array, `${key}: the value is a Uint8Array`);
      assert.equal(got.value.length, value.length, `${key}: length`);
      assert.ok(Buffer.from(got.value).equals(Buffer.from(value)), `${key}: bytes round-trip`);
    }
    const listed = await other.list('bin/');
    assert.deepEqual(
      listed.entries.map((e) => [e.key, e.value.length]),
      [
        ['bin/all', all.length],
        ['bin/big', big.length],
        ['bin/empty', 0],
      ],
    );
    const allListed = listed.entries.find((e) => e.key === 'bin/all');
    assert.equal(allListed && hex(allListed.value), hex(all));
  });

  test('unicode keys round-trip in get, list and watch', async (t) => {
    const c = await t.client();
    const keys = ['u/ключ', 'u/日本語/キー', 'u/emoji 😀 key', 'u/café', 'u/a b+c%20d'];
    const start = await c.list('u/');
    const log = consumeWatch(t, c, 'u/', start.revision);
    for (const key of keys) await c.create(key, bytes(key));
    for (const key of keys) {
      const got = await c.get(key);
      assert.equal(got?.key, key);
      assert.equal(got && text(got.value), key);
    }
    const listed = await c.list('u/');
    assert.deepEqual(
      listed.entries.map((e) => e.key),
      [...keys].sort(byteOrder),
    );
    await eventually('the watch saw every unicode key', () => log.events.length >= keys.length, t.settings.patience);
    assert.deepEqual(
      log.events.map((e) => e.key),
      keys,
    );
  });

  test('keys of exactly caps.maxKeyBytes work', async (t) => {
    const c = await t.client();
    const key = `long/${'k'.repeat(c.caps.maxKeyBytes - 5)}`;
    const v = await c.create(key, bytes('long'));
    assert.equal((await c.get(key))?.version, v);
    assert.deepEqual(
      (await c.list('long/')).entries.map((e) => e.key),
      [key],
    );
  });

  test('values are copied in and out: changing a buffer after create, update or get changes nothing stored', async (t) => {
    const c = await t.client();
    const input = bytes('original');
    const pending = c.create('copy', input);
    input[0] = 0x58;
    const v = await pending;
    input[1] = 0x58;
    const got = await c.get('copy');
    assert.equal(got && text(got.value), 'original');
    if (got) got.value[0] = 0x59;
    assert.equal(text((await c.get('copy'))?.value ?? bytes('')), 'original');
    const next = bytes('updated');
    const pendingUpdate = c.update('copy', next, v);
    next[0] = 0x58;
    await pendingUpdate;
    const listed = await c.list('copy');
    const entry = listed.entries.find((e) => e.key === 'copy');
    assert.equal(entry && text(entry.value), 'updated');
    if (entry) entry.value[0] = 0x59;
    assert.equal(text((await c.get('copy'))?.value ?? bytes('')), 'updated');
  });

  test('clients of one namespace share data; a client of another namespace sees none of it', async (t) => {
    const a = await t.client();
    const b = await t.client();
    const other = await t.client(t.otherNamespace());
    await a.create('shared/x', bytes('from a'));
    assert.equal(text((await b.get('shared/x'))?.value ?? bytes('')), 'from a');
    assert.equal(await other.get('shared/x'), undefined);
    assert.deepEqual((await other.list('shared/')).entries, []);
    await other.create('shared/x', bytes('from other'));
    assert.equal(text((await a.get('shared/x'))?.value ?? bytes('')), 'from a');
    assert.equal(text((await other.get('shared/x'))?.value ?? bytes('')), 'from other');
    const otherLog = consumeWatch(t, other, 'shared/', (await other.list('shared/')).revision);
    const mine = consumeWatch(t, a, 'shared/', (await a.list('shared/')).revision);
    await a.create('shared/y', bytes('from a'));
    await other.create('shared/z', bytes('from other'));
    await other.deletePrefix('shared/');
    assert.equal(text((await b.get('shared/x'))?.value ?? bytes('')), 'from a');
    await eventually('each watch saw its own namespace\'s writes', () =>
      mine.events.some((e) => e.key === 'shared/y') && otherLog.events.some((e) => e.type === 'delete' && e.key === 'shared/z'), t.settings.patience);
    assert.deepEqual(
      mine.events.map((e) => `${e.type} ${e.key}`),
      ['put shared/y'],
      'a watch sees nothing of another namespace',
    );
    assert.ok(!otherLog.events.some((e) => e.key === 'shared/y'), 'nor the other way round');
  });

  test('list returns every key under the prefix, sorted in UTF-8 byte order, and nothing else', async (t) => {
    const c = await t.client();
    const inside = ['p/b', 'p/a', 'p/a/x', 'p/Z', 'p/é', 'p/😀', 'p/ｚ', 'p/0'];
    const outside = ['p2/a', 'q', 'pp/a', 'a/p/b'];
    for (const key of [...inside, ...outside]) await c.create(key, bytes(key));
    const listed = await c.list('p/');
    assert.deepEqual(
      listed.entries.map((e) => e.key),
      [...inside].sort(byteOrder),
    );
    for (const e of listed.entries) assert.equal(text(e.value), e.key);
    assert.equal(typeof listed.revision, 'string');
    assert.ok(listed.revision.length > 0, 'a revision is a non-empty string');
  });

  test('list of a prefix with no keys has no entries and a revision', async (t) => {
    const c = await t.client();
    const listed = await c.list('nothing/here/');
    assert.deepEqual(listed.entries, []);
    assert.equal(typeof listed.revision, 'string');
    assert.ok(listed.revision.length > 0);
  });

  test('list entries carry the versions get reports', async (t) => {
    const c = await t.client();
    const v1 = await c.create('v/1', bytes('a'));
    const v2 = await c.update('v/1', bytes('b'), v1);
    const v3 = await c.create('v/2', bytes('c'));
    const listed = await c.list('v/');
    assert.deepEqual(
      listed.entries.map((e) => [e.key, e.version]),
      [
        ['v/1', v2],
        ['v/2', v3],
      ],
    );
    for (const e of listed.entries) assert.equal((await c.get(e.key))?.version, e.version);
  });

  test('list is one snapshot: a writer cycling through keys in order is never seen half-way out of order', async (t) => {
    const writer = await t.client();
    const reader = await t.client();
    const n = 6;
    const versions: string[] = [];
    for (let i = 0; i < n; i++) versions.push(await writer.create(`snap/${i}`, bytes('0')));
    const rounds = 12;
    let writing = true;
    const writes = (async () => {
      try {
        for (let r = 1; r <= rounds; r++) {
          for (let i = 0; i < n; i++) versions[i] = await writer.update(`snap/${i}`, bytes(String(r)), versions[i] as string);
        }
      } finally {
        writing = false;
      }
    })();
    let lists = 0;
    while (writing || lists < 3) {
      const listed = await reader.list('snap/');
      lists++;
      const values = listed.entries.map((e) => Number(text(e.value)));
      assert.equal(values.length, n, 'every key is listed');
      // Keys are written in order 0..n-1 each round, so a snapshot reads round r for a prefix of keys and r-1 for the rest.
      const first = values[0] as number;
      for (let i = 1; i < n; i++) {
        const v = values[i] as number;
        assert.ok(v === first || v === first - 1, `snapshot ${JSON.stringify(values)} mixes rounds`);
        assert.ok(v <= (values[i - 1] as number), `snapshot ${JSON.stringify(values)} is not one point in time`);
      }
      if (!writing && lists >= 3) break;
    }
    await writes;
  });

  test('deletePrefix deletes every key under the prefix and nothing else', async (t) => {
    const c = await t.client();
    for (const key of ['dp/a', 'dp/b/c', 'dp/b/d', 'dp2/a', 'dq']) await c.create(key, bytes(key));
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    await c.create('dp/ephemeral', bytes('e'), { session: s });
    const start = await c.list('dp');
    const log = consumeWatch(t, c, 'dp', start.revision);
    await c.deletePrefix('dp/');
    assert.deepEqual((await c.list('dp/')).entries, []);
    assert.deepEqual(
      (await c.list('dp2/')).entries.map((e) => e.key),
      ['dp2/a'],
    );
    assert.ok(await c.get('dq'), 'a key outside the prefix stays');
    const removed = ['dp/a', 'dp/b/c', 'dp/b/d', 'dp/ephemeral'];
    await eventually('a watcher saw a delete for every key deletePrefix removed', () =>
      removed.every((k) => log.events.some((e) => e.type === 'delete' && e.key === k)), t.settings.patience);
    assert.ok(!log.events.some((e) => e.key === 'dp2/a'), 'nothing happened to dp2/a');
    await c.create('dp/ephemeral', bytes('again, without a session'));
    await s.close();
    assert.equal(
      text((await c.get('dp/ephemeral'))?.value ?? bytes('')),
      'again, without a session',
      'a key re-created without a session is not tied to the old one',
    );
  });

  test('deletePrefix of a prefix with no keys resolves', async (t) => {
    const c = await t.client();
    await c.deletePrefix('nothing/');
    assert.deepEqual((await c.list('nothing/')).entries, []);
  });
}
