import { ClosedError, ConflictError, DeadlineExceededError, IndeterminateError, InternalError, LeaseLostError, UnavailableError, AlreadyExistsError } from '@taskgraph/api';
import type { Entry } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { casUpdate, createReplacing, retryStore, waitForKey } from '../src/store-ops.js';
import type { CasUpdateOptions } from '../src/store-ops.js';
import { FlakyCoordinator, bytes, codeOf, memoryWorld, recordingLogger, rejectionOf, settleOn, text, track, turn } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
afterEach(async () => {
  await w.close();
});

const live = () => new AbortController().signal;

/** A `next` that adds one to a decimal counter and records what it saw. */
function counter(seen: Array<string | undefined>) {
  return (e: Entry | undefined) => {
    seen.push(e && text(e.value));
    return bytes(String(Number(e ? text(e.value) : '0') + 1));
  };
}

describe('casUpdate', () => {
  const options = (extra: Partial<CasUpdateOptions> = {}): CasUpdateOptions => ({ clock: w.clock, signal: live(), ...extra });

  it('creates an absent key: next sees undefined, the outcome carries the stored version', async () => {
    w = memoryWorld();
    const c = w.client();
    const seen: Array<string | undefined> = [];
    const out = await casUpdate(c, 'k', counter(seen), options());
    expect(seen).toEqual([undefined]);
    expect(w.text('k')).toBe('1');
    expect(out).toEqual({ written: true, version: (await c.get('k'))?.version });
  });

  it('updates an existing key from what it holds', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('k', bytes('41'));
    const seen: Array<string | undefined> = [];
    const out = await casUpdate(c, 'k', counter(seen), options());
    expect(seen).toEqual(['41']);
    expect(w.text('k')).toBe('42');
    expect(out.version).toBe((await c.get('k'))?.version);
  });

  it('writes nothing when next returns undefined, and reports the version as read', async () => {
    w = memoryWorld();
    const c = w.client();
    const version = await c.create('k', bytes('same'));
    let writes = 0;
    const revision = w.store.revision;
    const out = await casUpdate(c, 'k', () => undefined, options({ onWrite: () => writes++ }));
    expect(out).toEqual({ written: false, version });
    expect(writes).toBe(0);
    expect(w.store.revision).toBe(revision);
    expect(await casUpdate(c, 'absent', () => undefined, options())).toEqual({ written: false, version: undefined });
  });

  it('with known: null the first attempt is a create, with no read', async () => {
    w = memoryWorld();
    const c = w.client();
    const noRead = c.faults.add({ op: 'get', error: () => new InternalError('no read expected') });
    const out = await casUpdate(c, 'k', () => bytes('v'), options({ known: null }));
    expect(out.written).toBe(true);
    expect(noRead.hits).toBe(0);
    expect(w.text('k')).toBe('v');
  });

  it('with a known entry the first attempt is an update of that version, with no read', async () => {
    w = memoryWorld();
    const c = w.client();
    const version = await c.create('k', bytes('1'));
    const noRead = c.faults.add({ op: 'get', error: () => new InternalError('no read expected') });
    const seen: Array<string | undefined> = [];
    await casUpdate(c, 'k', counter(seen), options({ known: { key: 'k', value: bytes('1'), version } }));
    expect(seen).toEqual(['1']);
    expect(noRead.hits).toBe(0);
    expect(w.text('k')).toBe('2');
  });

  it('a lost race re-reads and decides again: Conflict, AlreadyExists and NotFound', async () => {
    w = memoryWorld();
    const c = w.client();
    const other = w.client();
    // Conflict: the known version is stale.
    const stale = await c.create('a', bytes('1'));
    await other.update('a', bytes('10'), stale);
    const seenA: Array<string | undefined> = [];
    await casUpdate(c, 'a', counter(seenA), options({ known: { key: 'a', value: bytes('1'), version: stale } }));
    expect(seenA).toEqual(['1', '10']);
    expect(w.text('a')).toBe('11');
    // AlreadyExists: known absent, but it is there.
    await other.create('b', bytes('5'));
    const seenB: Array<string | undefined> = [];
    await casUpdate(c, 'b', counter(seenB), options({ known: null }));
    expect(seenB).toEqual([undefined, '5']);
    expect(w.text('b')).toBe('6');
    // NotFound: known present, but it was deleted.
    const gone = await other.create('d', bytes('7'));
    await other.delete('d', gone);
    const seenD: Array<string | undefined> = [];
    await casUpdate(c, 'd', counter(seenD), options({ known: { key: 'd', value: bytes('7'), version: gone } }));
    expect(seenD).toEqual(['7', undefined]);
    expect(w.text('d')).toBe('1');
  });

  it('three lost races in a row are retried at once; the fourth waits a backoff', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('free', bytes('0'));
    await c.create('paced', bytes('0'));
    let writes = 0;
    c.faults.add({ op: 'update', key: 'free', error: () => new ConflictError('lost'), times: 3 });
    await casUpdate(c, 'free', counter([]), options({ onWrite: () => writes++ }));
    expect(writes).toBe(4);
    expect(w.clock.pendingTimers()).toEqual([]);

    const fault = c.faults.add({ op: 'update', key: 'paced', error: () => new ConflictError('lost'), times: 4 });
    const run = track(casUpdate(c, 'paced', counter([]), options()));
    await eventually('the fourth race to wait', () => fault.hits === 4 && w.clock.pendingTimers().length === 1);
    expect(run.state.settled).toBe(false);
    // Backoff() starts at 20 ms with jitter in its upper half: 10..20 ms.
    await w.clock.advance(20);
    await run.promise;
    expect(w.text('paced')).toBe('1');
  });

  it('counts every write attempted, lost races included', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('k', bytes('0'));
    c.faults.add({ op: 'update', key: 'k', error: () => new ConflictError('lost'), times: 2 });
    let writes = 0;
    await casUpdate(c, 'k', counter([]), options({ onWrite: () => writes++ }));
    expect(writes).toBe(3);
  });

  it('Unavailable on a read or a write waits a backoff, then tries again', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('k', bytes('0'));
    const readFault = c.faults.add({ op: 'get', key: 'k', times: 1 });
    const writeFault = c.faults.add({ op: 'update', key: 'k', times: 1 });
    const seen: Array<string | undefined> = [];
    const run = track(casUpdate(c, 'k', counter(seen), options()));
    await eventually('the read to back off', () => readFault.hits === 1 && w.clock.pendingTimers().length === 1);
    await w.clock.advance(20);
    await eventually('the write to back off', () => writeFault.hits === 1 && w.clock.pendingTimers().length === 1);
    expect(run.state.settled).toBe(false);
    await w.clock.advance(40);
    expect(await run.promise).toMatchObject({ written: true });
    expect(seen).toEqual(['0', '0']);
    expect(w.text('k')).toBe('1');
  });

  it('any other failure is thrown: a read error before next runs, a write error after one attempt', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('k', bytes('0'));
    const readErr = new InternalError('broken read');
    const r = c.faults.add({ op: 'get', key: 'k', error: readErr, times: 1 });
    const seen: Array<string | undefined> = [];
    expect(await rejectionOf(casUpdate(c, 'k', counter(seen), options()))).toBe(readErr);
    expect(r.hits).toBe(1);
    expect(seen).toEqual([]);

    const writeErr = new LeaseLostError('session gone');
    c.faults.add({ op: 'update', key: 'k', error: writeErr, times: 1 });
    let writes = 0;
    expect(await rejectionOf(casUpdate(c, 'k', counter(seen), options({ onWrite: () => writes++ })))).toBe(writeErr);
    expect(seen).toEqual(['0']);
    expect(writes).toBe(1);
    expect(w.text('k')).toBe('0');
  });

  it('next and beforeWrite stop it by throwing; nothing is written', async () => {
    w = memoryWorld();
    const c = w.client();
    const stop = new ConflictError('the epoch moved on');
    expect(await rejectionOf(casUpdate(c, 'k', () => { throw stop; }, options()))).toBe(stop);
    const gone = new LeaseLostError('not the owner');
    let writes = 0;
    const out = casUpdate(c, 'k', () => bytes('v'), options({ beforeWrite: () => { throw gone; }, onWrite: () => writes++ }));
    expect(await rejectionOf(out)).toBe(gone);
    expect(writes).toBe(0);
    expect(w.text('k')).toBeUndefined();
  });

  it('a key it creates is tied to the given session', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    await casUpdate(c, 'eph', () => bytes('x'), options({ session }));
    await casUpdate(c, 'durable', () => bytes('y'), options());
    expect(w.sessionOf('eph')).toBe(session.id);
    expect(w.sessionOf('durable')).toBeUndefined();
    await session.close();
    expect(w.text('eph')).toBeUndefined();
    expect(w.text('durable')).toBe('y');
  });

  it('makes its first attempt whatever the signal; an abort ends a backoff wait with the signal’s reason', async () => {
    w = memoryWorld();
    const c = w.client();
    const aborted = new AbortController();
    aborted.abort(new ClosedError('leaving'));
    expect(await casUpdate(c, 'first', () => bytes('1'), options({ signal: aborted.signal }))).toMatchObject({ written: true });

    const ctrl = new AbortController();
    const reason = new ClosedError('the node is leaving');
    c.faults.add({ op: 'create', key: 'k' });
    const run = track(casUpdate(c, 'k', () => bytes('v'), options({ signal: ctrl.signal })));
    await eventually('a backoff wait', () => w.clock.pendingTimers().length === 1);
    ctrl.abort(reason);
    expect(await rejectionOf(run.promise)).toBe(reason);
    expect(w.clock.pendingTimers()).toEqual([]);
    expect(w.text('k')).toBeUndefined();
  });

  describe('an Indeterminate write is re-read', () => {
    it('applied: the key holds the bytes written, so it counts as written (next is not asked again)', async () => {
      w = memoryWorld();
      const c = new FlakyCoordinator(w.client());
      await c.create('n', bytes('5'));
      c.writes.splice(0);
      c.tricks.push('applied-then-indeterminate');
      const seen: Array<string | undefined> = [];
      const out = await casUpdate(c, 'n', counter(seen), options());
      expect(seen).toEqual(['5']);
      expect(w.text('n')).toBe('6');
      expect(out).toEqual({ written: true, version: (await c.get('n'))?.version });
      expect(c.writes).toEqual(['n']);
    });

    it('applied on a create: the same', async () => {
      w = memoryWorld();
      const c = new FlakyCoordinator(w.client());
      c.tricks.push('applied-then-indeterminate');
      const seen: Array<string | undefined> = [];
      const out = await casUpdate(c, 'fresh', counter(seen), options({ known: null }));
      expect(seen).toEqual([undefined]);
      expect(w.text('fresh')).toBe('1');
      expect(out).toEqual({ written: true, version: (await c.get('fresh'))?.version });
    });

    it('not applied: next decides again on what is there, and the value moves once', async () => {
      w = memoryWorld();
      const c = new FlakyCoordinator(w.client());
      await c.create('n', bytes('5'));
      c.writes.splice(0);
      c.tricks.push('lost-indeterminate');
      const seen: Array<string | undefined> = [];
      const out = await settleOn(w.clock, casUpdate(c, 'n', counter(seen), options()));
      expect(seen).toEqual(['5', '5']);
      expect(w.text('n')).toBe('6');
      expect(out).toEqual({ written: true, version: (await c.get('n'))?.version });
      expect(c.writes).toEqual(['n', 'n']);
    });

    it('a store answering every write Indeterminate is not hammered: the retries back off and end when the signal aborts', async () => {
      w = memoryWorld();
      const c = new FlakyCoordinator(w.client());
      await c.create('n', bytes('5'));
      c.writes.splice(0);
      for (let i = 0; i < 50; i++) c.tricks.push('lost-indeterminate');
      const ctrl = new AbortController();
      const reason = new ClosedError('the node is leaving');
      c.beforeWrite = () => {
        if (c.writes.length === 2) ctrl.abort(reason);
        return undefined;
      };
      const run = casUpdate(c, 'n', counter([]), options({ signal: ctrl.signal }));
      expect(await rejectionOf(settleOn(w.clock, run))).toBe(reason);
      expect(c.writes.length).toBeLessThanOrEqual(3);
      expect(w.text('n')).toBe('5');
    });

    it('the re-read itself retries Unavailable after a backoff', async () => {
      w = memoryWorld();
      const inner = w.client();
      const c = new FlakyCoordinator(inner);
      const version = await c.create('n', bytes('5'));
      c.tricks.push('lost-indeterminate');
      const fault = inner.faults.add({ op: 'get', key: 'n', times: 1 });
      const run = track(casUpdate(c, 'n', counter([]), options({ known: { key: 'n', value: bytes('5'), version } })));
      await eventually('the re-read to back off', () => fault.hits === 1 && w.clock.pendingTimers().length === 1);
      expect(run.state.settled).toBe(false);
      await settleOn(w.clock, run.promise);
      expect(w.text('n')).toBe('6');
    });
  });
});

describe('createReplacing', () => {
  it('creates the record tied to the session', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    const logger = recordingLogger();
    let writes = 0;
    await createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger, onWrite: () => writes++ });
    expect(w.text('addr')).toBe('me');
    expect(w.sessionOf('addr')).toBe(session.id);
    expect(writes).toBe(1);
    expect(logger.lines).toEqual([]);
  });

  it('removes a predecessor’s record and creates its own, tied to its own session', async () => {
    w = memoryWorld();
    const c = w.client();
    const old = await c.openSession({ ttlMs: 1000 });
    const mine = await c.openSession({ ttlMs: 1000 });
    await c.create('addr', bytes('predecessor'), { session: old });
    const logger = recordingLogger();
    let writes = 0;
    await createReplacing(c, 'addr', bytes('me'), { session: mine, clock: w.clock, signal: live(), logger, onWrite: () => writes++ });
    expect(w.text('addr')).toBe('me');
    expect(w.sessionOf('addr')).toBe(mine.id);
    expect(writes).toBe(2);
    expect(logger.lines).toEqual([{ level: 'info', message: "removing the previous incarnation's record", fields: { key: 'addr' } }]);
    // The record no longer goes with the predecessor's session.
    await old.close();
    expect(w.text('addr')).toBe('me');
  });

  it('checks beforeWrite before every attempt', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    await c.create('addr', bytes('predecessor'));
    let calls = 0;
    const lost = new LeaseLostError('lost the lock');
    const beforeWrite = () => {
      if (++calls === 2) throw lost;
    };
    expect(await rejectionOf(createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger: recordingLogger(), beforeWrite }))).toBe(lost);
    expect(calls).toBe(2);
    // The stale record was removed, the new one not written.
    expect(w.text('addr')).toBeUndefined();
  });

  it('a delete that loses a race is tolerated; the loop looks again', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    await c.create('addr', bytes('predecessor'));
    const race = c.faults.add({ op: 'delete', key: 'addr', error: () => new ConflictError('changed'), times: 1 });
    let writes = 0;
    await createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger: recordingLogger(), onWrite: () => writes++ });
    expect(race.hits).toBe(1);
    expect(writes).toBe(3);
    expect(w.text('addr')).toBe('me');
  });

  it('throws other failures at once: a create that is neither AlreadyExists nor an outage, a delete that is not a lost race', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    const bad = new InternalError('bad create');
    c.faults.add({ op: 'create', key: 'a', error: bad, times: 1 });
    let writes = 0;
    expect(await rejectionOf(createReplacing(c, 'a', bytes('me'), { session, clock: w.clock, signal: live(), logger: recordingLogger(), onWrite: () => writes++ }))).toBe(bad);
    expect(writes).toBe(1);

    await c.create('b', bytes('predecessor'));
    const broken = new InternalError('broken delete');
    c.faults.add({ op: 'delete', key: 'b', error: broken, times: 1 });
    expect(await rejectionOf(createReplacing(c, 'b', bytes('me'), { session, clock: w.clock, signal: live(), logger: recordingLogger() }))).toBe(broken);
    expect(w.text('b')).toBe('predecessor');
  });

  it('an outage on the create backs off on the clock and tries again (logged once); the store away at the read is waited for too', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    const down = c.faults.add({ op: 'create', key: 'addr', error: () => new UnavailableError('down'), times: 1 });
    const away = c.faults.add({ op: 'get', key: 'addr', error: () => new UnavailableError('still down'), times: 1 });
    const logger = recordingLogger();
    const timers = w.clock.pendingTimers().length;
    const run = track(createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger }));
    await eventually('the failed create to back off', () => down.hits === 1 && w.clock.pendingTimers().length === timers + 1);
    expect(run.state.settled).toBe(false);
    await settleOn(w.clock, run.promise);
    expect(away.hits).toBe(1);
    expect(w.text('addr')).toBe('me');
    expect(w.sessionOf('addr')).toBe(session.id);
    expect(logger.lines.map((l) => `${l.level} ${l.message}`)).toEqual([
      'warn the store is unavailable; retrying',
      'warn the store is unavailable; retrying',
      'info the store answers again',
    ]);
  });

  it('a create that was applied but whose answer was lost is found as its own record: nothing removed, its version returned', async () => {
    w = memoryWorld();
    const inner = w.client();
    const c = new FlakyCoordinator(inner);
    const session = await inner.openSession({ ttlMs: 1000 });
    c.tricks.push('applied-then-indeterminate');
    const logger = recordingLogger();
    const run = track(createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger }));
    const version = await settleOn(w.clock, run.promise);
    expect(version).toBe((await inner.get('addr'))?.version);
    expect(w.sessionOf('addr')).toBe(session.id);
    expect(logger.lines.some((l) => l.message.includes('removing'))).toBe(false);
  });

  it('an outage ends with the node: the store error is thrown once the signal aborts', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    const down = new UnavailableError('down');
    const fault = c.faults.add({ op: 'create', key: 'addr', error: down });
    const ctrl = new AbortController();
    const run = track(createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: ctrl.signal, logger: recordingLogger() }));
    await eventually('the first failure', () => fault.hits === 1);
    ctrl.abort(new ClosedError('leaving'));
    expect(await rejectionOf(run.promise)).toBe(down);
  });

  it('gives up after maxAttempts stale records in a row', async () => {
    w = memoryWorld();
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    c.faults.add({ op: 'create', key: 'addr', error: () => new AlreadyExistsError('always there') });
    let writes = 0;
    const err = await rejectionOf(createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger: recordingLogger(), maxAttempts: 2, onWrite: () => writes++ }));
    expect(codeOf(err)).toBe('ALREADY_EXISTS');
    expect(writes).toBe(3);
    writes = 0;
    await rejectionOf(createReplacing(c, 'addr', bytes('me'), { session, clock: w.clock, signal: live(), logger: recordingLogger(), onWrite: () => writes++ }));
    expect(writes).toBe(21);
  });
});

describe('retryStore', () => {
  it('retries the store’s outages (Unavailable, Indeterminate, DeadlineExceeded) after a backoff on the clock, logging the first and the recovery', async () => {
    w = memoryWorld();
    const failures = [new UnavailableError('a'), new IndeterminateError('b'), new DeadlineExceededError('c')];
    let calls = 0;
    const logger = recordingLogger();
    const run = track(
      retryStore(
        async () => {
          calls++;
          const f = failures.shift();
          if (f) throw f;
          return 'answer';
        },
        { clock: w.clock, signal: live(), logger, what: 'read k' },
      ),
    );
    await eventually('the first backoff', () => calls === 1 && w.clock.pendingTimers().length === 1);
    expect(run.state.settled).toBe(false);
    expect(await settleOn(w.clock, run.promise)).toBe('answer');
    expect(calls).toBe(4);
    expect(logger.lines).toEqual([
      { level: 'warn', message: 'the store is unavailable; retrying', fields: { what: 'read k', error: 'a' } },
      { level: 'info', message: 'the store answers again', fields: { what: 'read k', failures: 3 } },
    ]);
  });

  it('throws anything else at once, and the last outage once the signal aborts', async () => {
    w = memoryWorld();
    const broken = new InternalError('broken');
    const opts = { clock: w.clock, signal: live(), logger: recordingLogger(), what: 'x' };
    expect(
      await rejectionOf(
        retryStore(async () => {
          throw broken;
        }, opts),
      ),
    ).toBe(broken);
    const down = new UnavailableError('down');
    const ctrl = new AbortController();
    let calls = 0;
    const run = track(
      retryStore(
        async () => {
          calls++;
          throw down;
        },
        { ...opts, signal: ctrl.signal },
      ),
    );
    await eventually('a backoff', () => calls === 1 && w.clock.pendingTimers().length === 1);
    ctrl.abort(new ClosedError('leaving'));
    expect(await rejectionOf(run.promise)).toBe(down);
    expect(w.clock.pendingTimers()).toEqual([]);
  });
});

describe('waitForKey', () => {
  it('waits through an outage of its read', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('spec', bytes('s'));
    const away = c.faults.add({ op: 'get', key: 'spec', error: () => new UnavailableError('away'), times: 2 });
    const run = track(waitForKey(c, 'spec', { clock: w.clock, logger: recordingLogger(), signal: live() }));
    expect((await settleOn(w.clock, run.promise)).value).toEqual(bytes('s'));
    expect(away.hits).toBe(2);
  });

  it('returns a key that exists without waiting', async () => {
    w = memoryWorld();
    const c = w.client();
    const version = await c.create('spec', bytes('s'));
    let waits = 0;
    const e = await waitForKey(c, 'spec', { clock: w.clock, logger: recordingLogger(), signal: live(), onWait: () => waits++ });
    expect(e).toEqual({ key: 'spec', value: bytes('s'), version });
    expect(waits).toBe(0);
  });

  it('waits for the key to be created (onWait once), then returns it', async () => {
    w = memoryWorld();
    const c = w.client();
    let waits = 0;
    const run = track(waitForKey(c, 'spec', { clock: w.clock, logger: recordingLogger(), signal: live(), onWait: () => waits++ }));
    await eventually('a watch on the key', () => c.activeWatches === 1);
    await w.client().create('spec-draft', bytes('not it'));
    await turn();
    expect(run.state.settled).toBe(false);
    const version = await w.client().create('spec', bytes('s'));
    expect(await run.promise).toEqual({ key: 'spec', value: bytes('s'), version });
    expect(waits).toBe(1);
    expect(w.clock.pendingTimers()).toEqual([]);
  });

  it('re-reads every recheckMs, in case the watch misses the creation', async () => {
    w = memoryWorld();
    const inner = w.client();
    const c = new DeafWatches(inner);
    let waits = 0;
    const run = track(waitForKey(c, 'spec', { clock: w.clock, logger: recordingLogger(), signal: live(), recheckMs: 500, onWait: () => waits++ }));
    await eventually('the recheck timer', () => w.clock.pendingTimers().length === 1);
    await inner.create('spec', bytes('s'));
    await w.clock.advance(499);
    expect(run.state.settled).toBe(false);
    await w.clock.advance(1);
    expect((await run.promise).value).toEqual(bytes('s'));
    expect(waits).toBe(1);
    expect(w.clock.pendingTimers()).toEqual([]);
  });

  it('a retryable watch failure backs off on the clock, then re-reads; any other is thrown', async () => {
    w = memoryWorld();
    const c = w.client();
    const blip = c.faults.add({ op: 'watch', key: 'spec', times: 1 });
    const run = track(waitForKey(c, 'spec', { clock: w.clock, logger: recordingLogger(), signal: live() }));
    await eventually('the failed watch', () => blip.hits === 1);
    // No second watch until the back-off (at most 50 ms at first) has passed on the clock.
    await eventually('the back-off timer', () => w.clock.pendingTimers().length === 1);
    expect(c.activeWatches).toBe(0);
    await w.clock.advance(50);
    await eventually('a second watch', () => c.activeWatches === 1);
    await c.create('spec', bytes('s'));
    expect((await run.promise).value).toEqual(bytes('s'));

    const broken = new InternalError('broken watch');
    c.faults.add({ op: 'watch', key: 'other', error: broken, times: 1 });
    expect(await rejectionOf(waitForKey(c, 'other', { clock: w.clock, logger: recordingLogger(), signal: live() }))).toBe(broken);
    expect(w.clock.pendingTimers()).toEqual([]);
  });

  it('rejects with the signal’s reason when it aborts, leaving no watch or timer', async () => {
    w = memoryWorld();
    const c = w.client();
    const ctrl = new AbortController();
    const run = track(waitForKey(c, 'spec', { clock: w.clock, logger: recordingLogger(), signal: ctrl.signal }));
    await eventually('a watch on the key', () => c.activeWatches === 1);
    const reason = new ClosedError('the node is leaving');
    ctrl.abort(reason);
    expect(await rejectionOf(run.promise)).toBe(reason);
    await eventually('the watch to end', () => c.activeWatches === 0);
    expect(w.clock.pendingTimers()).toEqual([]);
  });
});

/** A coordinator whose watches never deliver anything: they only end when aborted. */
class DeafWatches extends FlakyCoordinator {
  override watch(_prefix: string, options: { readonly signal: AbortSignal }): AsyncIterable<never> {
    const { signal } = options;
    return {
      [Symbol.asyncIterator]: () => ({
        next: () =>
          new Promise<IteratorResult<never>>((resolve) => {
            const end = () => resolve({ done: true, value: undefined });
            if (signal.aborted) end();
            else signal.addEventListener('abort', end, { once: true });
          }),
      }),
    };
  }
}
