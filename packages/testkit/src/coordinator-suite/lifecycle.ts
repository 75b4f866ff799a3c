/** Input validation (before any I/O) and the closed coordinator. */
import assert from 'node:assert/strict';
import type { Coordinator, Lock, Session } from '@taskgraph/api';
import type { CoordinatorSuiteOptions, DefineTest } from './context.js';
import { eventually } from '../eventually.js';
import { assertCode, bytes, consumeWatch, rejectsWith } from './util.js';

const BAD_KEYS: readonly [string, string][] = [
  ['', 'an empty key'],
  ['/a', 'a leading "/"'],
  ['a/', 'a trailing "/"'],
  ['a//b', 'an empty segment'],
  ['a/../b', 'a ".." segment'],
  ['./a', 'a "." segment'],
  ['..', 'the key ".."'],
  ['a\u0000b', 'a NUL character'],
  ['a\nb', 'a newline'],
];

const BAD_PREFIXES: readonly [string, string][] = [
  ['', 'an empty prefix'],
  ['/', 'a lone "/"'],
  ['a//', 'an empty segment'],
  ['../x/', 'a ".." segment'],
  ['a\u0007/', 'a control character'],
];

/** Runs a watch and returns how it ended: the thrown error, or undefined. */
async function watchOutcome(c: Coordinator, prefix: string, signal: AbortSignal): Promise<unknown> {
  try {
    for await (const _batch of c.watch(prefix, { signal })) return new Error('the watch delivered a batch');
    return undefined;
  } catch (err) {
    return err;
  }
}

export function lifecycleTests(test: DefineTest, options: CoordinatorSuiteOptions): void {
  test('bad keys are rejected with InvalidArgument by get, create, update and delete', async (t) => {
    const c = await t.client();
    const v = await c.create('good', bytes('x'));
    const tooLong = 'k'.repeat(c.caps.maxKeyBytes + 1);
    const tooLongUtf8 = 'é'.repeat(Math.floor(c.caps.maxKeyBytes / 2) + 1);
    for (const [key, why] of [...BAD_KEYS, [tooLong, 'one byte over caps.maxKeyBytes'], [tooLongUtf8, 'over caps.maxKeyBytes in UTF-8']] as const) {
      await rejectsWith(() => c.get(key), 'INVALID_ARGUMENT', `get of a key with ${why}`);
      await rejectsWith(() => c.create(key, bytes('x')), 'INVALID_ARGUMENT', `create of a key with ${why}`);
      await rejectsWith(() => c.update(key, bytes('x'), v), 'INVALID_ARGUMENT', `update of a key with ${why}`);
      await rejectsWith(() => c.delete(key, v), 'INVALID_ARGUMENT', `delete of a key with ${why}`);
    }
    await rejectsWith(() => c.get(42 as unknown as string), 'INVALID_ARGUMENT', 'get of a number');
  });

  test('bad prefixes are rejected with InvalidArgument by list, deletePrefix and watch', async (t) => {
    const c = await t.client();
    const controller = t.controller();
    for (const [prefix, why] of BAD_PREFIXES) {
      await rejectsWith(() => c.list(prefix), 'INVALID_ARGUMENT', `list of ${why}`);
      await rejectsWith(() => c.deletePrefix(prefix), 'INVALID_ARGUMENT', `deletePrefix of ${why}`);
      const outcome = await watchOutcome(c, prefix, controller.signal);
      assertCode(outcome, 'INVALID_ARGUMENT', `watch of ${why}`);
    }
  });

  test('values over caps.maxValueBytes, or not bytes, are rejected with InvalidArgument', async (t) => {
    const c = await t.client();
    const big = new Uint8Array(c.caps.maxValueBytes + 1);
    await rejectsWith(() => c.create('big', big), 'INVALID_ARGUMENT', 'create of a value one byte over the limit');
    const v = await c.create('small', bytes('x'));
    await rejectsWith(() => c.update('small', big, v), 'INVALID_ARGUMENT', 'update to a value one byte over the limit');
    await rejectsWith(() => c.create('str', 'text' as unknown as Uint8Array), 'INVALID_ARGUMENT', 'create of a string value');
    assert.equal(await c.get('big'), undefined);
    assert.equal((await c.get('small'))?.version, v);
  });

  test('session TTLs outside caps.ttlRangeMs are rejected with InvalidArgument', async (t) => {
    const c = await t.client();
    const [min, max] = c.caps.ttlRangeMs;
    const bad = [max + 1, 0, -1, Number.NaN, Number.POSITIVE_INFINITY];
    if (min > 1) bad.push(min - 1);
    for (const ttlMs of bad) await rejectsWith(() => c.openSession({ ttlMs }), 'INVALID_ARGUMENT', `openSession with ttlMs ${ttlMs}`);
    const s = await c.openSession({ ttlMs: min });
    assert.ok(s.ttlMs >= min);
    await s.close();
  });

  test('bad lock names are rejected with InvalidArgument by acquire, tryAcquire and holder', async (t) => {
    const c = await t.client();
    const s = await c.openSession({ ttlMs: options.sessionTtlMs });
    for (const [name, why] of [...BAD_KEYS, ['n'.repeat(c.caps.maxKeyBytes + 1), 'over caps.maxKeyBytes']] as const) {
      await rejectsWith(() => c.acquire(name, s), 'INVALID_ARGUMENT', `acquire of a lock name with ${why}`);
      await rejectsWith(() => c.tryAcquire(name, s), 'INVALID_ARGUMENT', `tryAcquire of a lock name with ${why}`);
      await rejectsWith(() => c.holder(name), 'INVALID_ARGUMENT', `holder of a lock name with ${why}`);
    }
  });

  test('after close every call rejects with Closed, a watch ends, and close again resolves', async (t) => {
    const c = await t.client();
    const s = await c.openSession({ ttlMs: options.sessionTtlMs });
    const v = await c.create('k', bytes('x'));
    await c.close();
    const calls: [string, () => Promise<unknown>][] = [
      ['get', () => c.get('k')],
      ['list', () => c.list('k')],
      ['create', () => c.create('k2', bytes('x'))],
      ['update', () => c.update('k', bytes('y'), v)],
      ['delete', () => c.delete('k', v)],
      ['deletePrefix', () => c.deletePrefix('k')],
      ['openSession', () => c.openSession({ ttlMs: options.sessionTtlMs })],
      ['endSession', () => c.endSession(s.id)],
      ['acquire', () => c.acquire('l', s)],
      ['tryAcquire', () => c.tryAcquire('l', s)],
      ['holder', () => c.holder('l')],
    ];
    for (const [name, call] of calls) await rejectsWith(call, ['CLOSED', 'LEASE_LOST'], `${name} after close`);
    for (const [name, call] of calls.slice(0, 8)) await rejectsWith(call, 'CLOSED', `${name} after close`);
    const outcome = await watchOutcome(c, 'k', t.controller().signal);
    if (outcome !== undefined) assertCode(outcome, 'CLOSED', 'a watch on a closed coordinator');
    await c.close();
    const other = await t.client();
    assert.equal((await other.get('k'))?.version, v, 'closing a client leaves the data');
  });

  test('close closes the client\'s sessions: lost aborts with Closed, their keys vanish, their locks pass on', async (t) => {
    const c = await t.client();
    const other = await t.client();
    const s = await c.openSession({ ttlMs: options.sessionTtlMs });
    await c.create('cl/e', bytes('e'), { session: s });
    const lock: Lock = await c.acquire('cl/lock', s);
    const so: Session = await other.openSession({ ttlMs: options.sessionTtlMs });
    let handed: Lock | undefined;
    const waiting = other.acquire('cl/lock', so).then((l) => (handed = l));
    await c.close();
    assert.equal(s.lost.aborted, true);
    assertCode(s.lost.reason, 'CLOSED', 'a session closed by its client');
    assert.equal(lock.lost.aborted, true);
    await eventually('the closed client\'s ephemeral key is gone', async () => (await other.get('cl/e')) === undefined, t.settings.patience);
    await waiting;
    assert.ok(handed && handed.token > lock.token, 'the waiter got the lock with a larger token');
  });

  test('close ends the client\'s open watches', async (t) => {
    const c = await t.client();
    const log = consumeWatch(t, c, 'cw/');
    const start = await c.list('cw/');
    const resumed = consumeWatch(t, c, 'cw/', start.revision);
    await c.create('cw/a', bytes('a'));
    await eventually('the resumed watch saw the write', () => resumed.events.length > 0, t.settings.patience);
    await c.close();
    await eventually('both watches ended', () => log.finished() && resumed.finished(), t.settings.patience);
    for (const w of [log, resumed]) {
      const err = await w.ended;
      if (err !== undefined) assertCode(err, 'CLOSED', 'a watch ended by close');
    }
  });
}
