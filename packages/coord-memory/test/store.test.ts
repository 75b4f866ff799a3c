import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { MemoryStore, compareKeys } from '../src/index.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const code = (e: unknown): string | undefined => (TaskGraphError.is(e) ? e.code : undefined);

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('MemoryStore sessions on a ManualClock', () => {
  it('expires a session exactly ttl after its last keepalive, not a millisecond before', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const id = store.openSession(1000);
    await clock.advance(999);
    expect(store.hasSession(id)).toBe(true);
    await clock.advance(1);
    expect(store.hasSession(id)).toBe(false);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('a keepalive moves the expiry to ttl after it', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const id = store.openSession(1000);
    await clock.advance(600);
    store.keepalive(id);
    expect(store.sessionInfo(id)).toMatchObject({ lastKeepaliveAt: 600, expiresAt: 1600, keepalives: 1 });
    await clock.advance(999);
    expect(store.hasSession(id)).toBe(true);
    await clock.advance(1);
    expect(store.hasSession(id)).toBe(false);
    expect(code(thrown(() => store.keepalive(id)))).toBe('LEASE_LOST');
  });

  it('an ending session deletes all its keys in one revision, keeps other keys, and tells its listeners', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const id = store.openSession(500);
    store.create('a', bytes('a'), id);
    store.create('b', bytes('b'), id);
    store.create('plain', bytes('p'));
    const ends: string[] = [];
    store.onSessionEnd(id, (end) => ends.push(end));
    const before = store.revision;
    await clock.advance(500);
    expect(ends).toEqual(['expired']);
    expect(store.revision).toBe(before + 1);
    expect(store.nextChange(before, '')).toEqual({
      revision: before + 1,
      events: [
        { type: 'delete', key: 'a' },
        { type: 'delete', key: 'b' },
      ],
    });
    expect(store.entries().map((e) => e.key)).toEqual(['plain']);
  });

  it('creating with an unknown or ended session is LeaseLost and writes nothing', () => {
    const store = new MemoryStore();
    const id = store.openSession(500);
    expect(store.closeSession(id)).toBe(true);
    expect(store.closeSession(id)).toBe(false);
    expect(code(thrown(() => store.create('k', bytes('v'), id)))).toBe('LEASE_LOST');
    expect(store.revision).toBe(0);
  });

  it('update keeps the session; delete detaches the key from it', () => {
    const store = new MemoryStore();
    const id = store.openSession(500);
    const v = store.create('kept', bytes('1'), id);
    store.update('kept', bytes('2'), v);
    const d = store.create('dropped', bytes('1'), id);
    store.delete('dropped', d);
    expect(store.sessionInfo(id)?.keys).toEqual(['kept']);
    store.closeSession(id);
    expect(store.entries()).toEqual([]);
  });
});

describe('MemoryStore history', () => {
  it('keeps historyLimit revisions; resuming from before them is Compacted', () => {
    const store = new MemoryStore({ historyLimit: 5 });
    let v = store.create('k', bytes('0'));
    for (let i = 1; i < 10; i++) v = store.update('k', bytes(String(i)), v);
    expect(store.revision).toBe(10);
    expect(store.compactedRevision).toBe(5);
    expect(store.nextChange(5, 'k')?.revision).toBe(6);
    const err = thrown(() => store.nextChange(4, 'k'));
    expect(code(err)).toBe('COMPACTED');
    expect((err as TaskGraphError).details).toMatchObject({ revision: '4', compacted: '5' });
  });

  it('compact() drops history up to a revision; later revisions stay resumable', () => {
    const store = new MemoryStore();
    let v = store.create('k', bytes('0'));
    for (let i = 1; i < 4; i++) v = store.update('k', bytes(String(i)), v);
    store.compact(2);
    expect(code(thrown(() => store.nextChange(1, '')))).toBe('COMPACTED');
    expect(store.nextChange(2, '')?.revision).toBe(3);
    store.compact();
    expect(code(thrown(() => store.nextChange(3, '')))).toBe('COMPACTED');
    expect(store.nextChange(4, '')).toBeUndefined();
    expect(code(thrown(() => store.compact(99)))).toBe('INVALID_ARGUMENT');
  });

  it('resuming from a revision the store has not reached is InvalidArgument', () => {
    const store = new MemoryStore();
    store.create('k', bytes('0'));
    expect(code(thrown(() => store.nextChange(2, '')))).toBe('INVALID_ARGUMENT');
  });

  it('deletePrefix is one revision, and none when nothing matches', () => {
    const store = new MemoryStore();
    for (const k of ['p/a', 'p/b', 'q/a']) store.create(k, bytes(k));
    const r = store.revision;
    store.deletePrefix('p/');
    expect(store.revision).toBe(r + 1);
    expect(store.nextChange(r, '')?.events).toEqual([
      { type: 'delete', key: 'p/a' },
      { type: 'delete', key: 'p/b' },
    ]);
    store.deletePrefix('p/');
    expect(store.revision).toBe(r + 1);
  });

  it('nextChange skips revisions with nothing under the prefix', () => {
    const store = new MemoryStore();
    store.create('a/1', bytes('1'));
    store.create('b/1', bytes('1'));
    store.create('a/2', bytes('2'));
    expect(store.nextChange(1, 'a/')?.revision).toBe(3);
    expect(store.nextChange(3, 'a/')).toBeUndefined();
  });

  it('rejects a bad historyLimit', () => {
    expect(code(thrown(() => new MemoryStore({ historyLimit: 0 })))).toBe('INVALID_ARGUMENT');
    expect(code(thrown(() => new MemoryStore({ historyLimit: 1.5 })))).toBe('INVALID_ARGUMENT');
  });

  it('stores copies: changing the caller\'s buffer or a returned value changes nothing', () => {
    const store = new MemoryStore();
    const input = bytes('abc');
    store.create('k', input);
    input[0] = 0;
    const out = store.get('k');
    if (out) out.value[1] = 0;
    expect(new TextDecoder().decode(store.get('k')?.value)).toBe('abc');
  });
});

describe('MemoryStore key ranges', () => {
  it('a directory prefix, any other prefix and the empty one list and delete the same keys a scan would', () => {
    const store = new MemoryStore();
    const all = ['a/b/c', 'a/b/d', 'a/bc', 'a/x/', 'ab', 'a/b/c/d', 'b'];
    for (const k of all) store.create(k, bytes(k));
    const listed = (prefix: string) => store.range(prefix).entries.map((e) => e.key);
    const scan = (prefix: string, keys: readonly string[]) => keys.filter((k) => k.startsWith(prefix)).sort(compareKeys);
    for (const prefix of ['', 'a/', 'a/b', 'a/b/', 'a/b/c/', 'a/x/', 'a', 'z/']) expect(listed(prefix), prefix).toEqual(scan(prefix, all));
    store.deletePrefix('a/b/');
    const left = all.filter((k) => !k.startsWith('a/b/'));
    for (const prefix of ['', 'a/', 'a/b', 'a/b/', 'a/b/c/']) expect(listed(prefix), prefix).toEqual(scan(prefix, left));
    // A deleted key made again is listed once.
    store.create('a/b/c', bytes('again'));
    expect(listed('a/b/')).toEqual(['a/b/c']);
    const rev = store.revision;
    store.deletePrefix('a/b');
    expect(store.revision).toBe(rev + 1);
    expect(listed('')).toEqual(['a/x/', 'ab', 'b']);
  });
});

describe('MemoryStore watch dispatch', () => {
  it('hands each subscriber only the part of a commit under its prefix, and nothing when none of it is', () => {
    const store = new MemoryStore();
    const got = new Map<string, string[][]>();
    const unsubscribe = new Map<string, () => void>();
    for (const prefix of ['', 'a/', 'a/b/', 'a/b/c', 'b/', 'a/bc']) {
      got.set(prefix, []);
      unsubscribe.set(prefix, store.subscribe(prefix, { push: (r) => got.get(prefix)?.push(r.events.map((e) => `${r.revision}:${e.type}:${e.key}`)) }));
    }
    expect(store.watchers).toBe(6);
    store.create('a/b/c', bytes('1'));
    store.create('b/x', bytes('2'));
    // One revision with keys under several prefixes: each subscriber gets its own part of it.
    store.deletePrefix('');
    expect(Object.fromEntries(got)).toEqual({
      '': [['1:put:a/b/c'], ['2:put:b/x'], ['3:delete:a/b/c', '3:delete:b/x']],
      'a/': [['1:put:a/b/c'], ['3:delete:a/b/c']],
      'a/b/': [['1:put:a/b/c'], ['3:delete:a/b/c']],
      'a/b/c': [['1:put:a/b/c'], ['3:delete:a/b/c']],
      'b/': [['2:put:b/x'], ['3:delete:b/x']],
      'a/bc': [],
    });
    unsubscribe.get('a/')?.();
    unsubscribe.get('a/')?.();
    expect(store.watchers).toBe(5);
    store.create('a/y', bytes('3'));
    expect(got.get('a/')).toHaveLength(2);
    expect(got.get('')).toHaveLength(4);
    for (const u of unsubscribe.values()) u();
    expect(store.watchers).toBe(0);
  });

  it('a lock grant (a revision without events) reaches nobody', () => {
    const store = new MemoryStore();
    const pushed: number[] = [];
    store.subscribe('', { push: (r) => pushed.push(r.revision) });
    const session = store.openSession(60_000);
    expect(store.tryLock({ name: 'L', sessionId: session, owner: 'o' })).toBe(1n);
    store.create('k', bytes('v'));
    expect(pushed).toEqual([2]);
    store.closeSession(session);
  });
});

describe('MemoryStore locks', () => {
  it('grants in arrival order, each grant a new revision, so tokens strictly increase', () => {
    const store = new MemoryStore();
    const s = [store.openSession(1000), store.openSession(1000), store.openSession(1000)];
    const grants: [string, bigint][] = [];
    const reqs = s.map((sessionId, i) =>
      store.requestLock({ name: 'L', sessionId, owner: `o${i}` }, (token) => grants.push([`o${i}`, token]), () => undefined),
    );
    expect(grants.map(([o]) => o)).toEqual(['o0']);
    expect(store.lockWaiters('L')).toBe(2);
    expect(store.tryLock({ name: 'L', sessionId: s[2] as string, owner: 'x' })).toBeUndefined();
    const first = grants[0] as [string, bigint];
    expect(store.releaseLock('L', s[0] as string, first[1])).toBe(true);
    expect(grants.map(([o]) => o)).toEqual(['o0', 'o1']);
    store.closeSession(s[1] as string);
    expect(grants.map(([o]) => o)).toEqual(['o0', 'o1', 'o2']);
    const tokens = grants.map(([, t]) => t);
    expect(tokens[1] as bigint).toBeGreaterThan(tokens[0] as bigint);
    expect(tokens[2] as bigint).toBeGreaterThan(tokens[1] as bigint);
    expect(store.lockHolder('L')).toEqual({ owner: 'o2', token: tokens[2], sessionId: s[2] });
    expect(reqs).toHaveLength(3);
  });

  it('a cancelled request leaves the queue; a waiter whose session ends is rejected with LeaseLost', () => {
    const store = new MemoryStore();
    const [a, b, c] = [store.openSession(1000), store.openSession(1000), store.openSession(1000)];
    store.requestLock({ name: 'L', sessionId: a, owner: 'a' }, () => undefined, () => undefined);
    const rb = store.requestLock({ name: 'L', sessionId: b, owner: 'b' }, () => undefined, () => undefined);
    const rejected: unknown[] = [];
    store.requestLock({ name: 'L', sessionId: c, owner: 'c' }, () => undefined, (err) => rejected.push(err));
    expect(store.cancelLockRequest(rb)).toBe(true);
    expect(store.cancelLockRequest(rb)).toBe(false);
    store.expireSession(c);
    expect(rejected.map(code)).toEqual(['LEASE_LOST']);
    expect(store.lockWaiters('L')).toBe(0);
    store.closeSession(a);
    expect(store.lockHolder('L')).toBeUndefined();
  });

  it('release by a non-holder or with a wrong token does nothing', () => {
    const store = new MemoryStore();
    const a = store.openSession(1000);
    const b = store.openSession(1000);
    const token = store.tryLock({ name: 'L', sessionId: a, owner: 'a' });
    expect(token).toBeDefined();
    expect(store.releaseLock('L', b, token as bigint)).toBe(false);
    expect(store.releaseLock('L', a, (token as bigint) + 1n)).toBe(false);
    expect(store.lockHolder('L')?.owner).toBe('a');
  });
});

describe('compareKeys', () => {
  it('orders by code point, which is UTF-8 byte order, unlike UTF-16 string order', () => {
    const keys = ['\uffef', '😀', 'a', 'é', 'Z'];
    const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...keys].sort(compareKeys)).toEqual(byBytes);
    expect([...keys].sort()).not.toEqual(byBytes);
    expect(compareKeys('a', 'ab')).toBeLessThan(0);
    expect(compareKeys('ab', 'ab')).toBe(0);
  });

  it('agrees with UTF-8 byte order on every pair of keys mixing ASCII, BMP above and below the surrogates, and astral code points', () => {
    const pieces = ['a', 'z', '/', '\u00e9', '\ud7ff', '\ue000', '\uffef', '\u{1f600}', '\u{10000}', '\u{10ffff}'];
    const keys: string[] = [];
    for (const p of pieces) for (const q of pieces) keys.push(`k${p}${q}`, `${p}`, `${q}${p}x`);
    const sign = (n: number): number => Math.sign(n);
    for (const x of keys) for (const y of keys) expect(sign(compareKeys(x, y)), `${x} vs ${y}`).toBe(sign(Buffer.compare(Buffer.from(x), Buffer.from(y))));
  });
});
