import { ClosedError } from '@taskgraph/api';
import type { Entry, WatchEvent } from '@taskgraph/api';
import { eventually, ManualClock } from '@taskgraph/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { AddressBook, SharedAddressBook } from '../src/address-book.js';
import { encodeJson, keys } from '../src/layout.js';
import type { AddrValue } from '../src/layout.js';
import { WatchedPrefix } from '../src/watched-prefix.js';
import { bytes, memoryWorld, recordingLogger, rejectionOf, track, turn } from './parts.js';

const JOB = 'book';
const addr = (address: string, token = '1'): AddrValue => ({ nodeId: `n-${address}`, address, token, incarnation: 1 });
const entry = (task: number, a: AddrValue | string, job = JOB): Entry => ({
  key: keys.addr(job, task),
  value: typeof a === 'string' ? bytes(a) : encodeJson(a),
  version: '1',
});
const put = (task: number, a: AddrValue | string): WatchEvent => ({ type: 'put', ...entry(task, a) });
const del = (task: number): WatchEvent => ({ type: 'delete', key: keys.addr(JOB, task) });

/** An address book on a transport whose `forget` calls are recorded (the local transport's does nothing to observe). */
function book() {
  const forgotten: string[] = [];
  const logger = recordingLogger();
  const addresses = new AddressBook(JOB, { forget: (a) => void forgotten.push(a) }, logger);
  return { addresses, forgotten, logger, clock: new ManualClock(), life: new AbortController() };
}

describe('AddressBook', () => {
  it('a snapshot sets every owner address; incarnation counters, other jobs and other keys are ignored', () => {
    const { addresses, forgotten } = book();
    addresses.snapshot([
      entry(0, addr('a')),
      entry(2, addr('c', '7')),
      { key: keys.incarnation(JOB, 1), value: bytes('3'), version: '1' },
      entry(1, addr('x'), 'other-job'),
      { key: `${JOB}/tasks/1/notes`, value: bytes('?'), version: '1' },
    ]);
    expect(addresses.get(0)).toEqual(addr('a'));
    expect(addresses.get(2)).toEqual(addr('c', '7'));
    expect(addresses.has(1)).toBe(false);
    expect(forgotten).toEqual([]);
  });

  it('a later snapshot drops (and forgets) the addresses no longer there', () => {
    const { addresses, forgotten } = book();
    addresses.snapshot([entry(0, addr('a')), entry(1, addr('b'))]);
    addresses.snapshot([entry(1, addr('b'))]);
    expect(addresses.has(0)).toBe(false);
    expect(addresses.get(1)).toEqual(addr('b'));
    expect(forgotten).toEqual(['a']);
  });

  it('a corrupt address is logged and skipped', () => {
    const { addresses, logger } = book();
    addresses.snapshot([entry(0, '{"nodeId":"n"}'), entry(1, addr('b'))]);
    addresses.event(put(2, 'not json'));
    addresses.event(put(1, { nodeId: 'n', address: 'z', token: 'abc', incarnation: 1 }));
    expect(addresses.has(0)).toBe(false);
    expect(addresses.has(2)).toBe(false);
    expect(addresses.get(1)).toEqual(addr('b'));
    expect(logger.lines.map((l) => [l.level, l.message, l.fields['key']])).toEqual([
      ['warn', 'ignoring a corrupt task record', keys.addr(JOB, 0)],
      ['warn', 'ignoring a corrupt task record', keys.addr(JOB, 2)],
      ['warn', 'ignoring a corrupt task record', keys.addr(JOB, 1)],
    ]);
  });

  it('a put replaces an address; the old one is forgotten unless another task is still there', () => {
    const { addresses, forgotten } = book();
    addresses.snapshot([entry(0, addr('a')), entry(1, addr('shared')), entry(2, addr('shared'))]);
    addresses.event(put(0, addr('a2', '5')));
    expect(addresses.get(0)).toEqual(addr('a2', '5'));
    expect(forgotten).toEqual(['a']);
    addresses.event(put(1, addr('b2')));
    expect(forgotten).toEqual(['a']);
    addresses.event(put(0, addr('a2', '6')));
    expect(forgotten).toEqual(['a']);
  });

  it('a delete removes the address', () => {
    const { addresses } = book();
    addresses.snapshot([entry(0, addr('a'))]);
    addresses.event(del(0));
    expect(addresses.has(0)).toBe(false);
    expect(addresses.get(0)).toBeUndefined();
  });

  it('an address that disappears is forgotten (its node went away) unless another task is still there, as a snapshot does', () => {
    const { addresses, forgotten } = book();
    addresses.snapshot([entry(0, addr('a')), entry(1, addr('shared')), entry(2, addr('shared'))]);
    addresses.event(del(0));
    addresses.event(del(1));
    expect(forgotten).toEqual(['a']);
    addresses.event(del(2));
    expect(forgotten).toEqual(['a', 'shared']);
  });

  it('set() records the node’s own address before the watch echoes it', () => {
    const { addresses } = book();
    addresses.set(3, addr('me', '42'));
    expect(addresses.get(3)).toEqual(addr('me', '42'));
    // The echo, or a snapshot without it yet, decides from then on.
    addresses.snapshot([]);
    expect(addresses.has(3)).toBe(false);
  });

  describe('waiters', () => {
    it('waitForChange resolves at the next change: a put, a delete or a snapshot', async () => {
      const { addresses, clock, life } = book();
      for (const change of [() => addresses.event(put(0, addr('a'))), () => addresses.event(del(0)), () => addresses.snapshot([])]) {
        const wait = track(addresses.waitForChange(clock, 10_000, life.signal));
        await turn();
        expect(wait.state.settled).toBe(false);
        change();
        await wait.promise;
      }
      expect(clock.pendingTimers()).toEqual([]);
    });

    it('a change nobody waited for wakes the next waiter at once (level-triggered)', async () => {
      const { addresses, clock, life } = book();
      addresses.event(put(0, addr('a')));
      addresses.event(put(1, addr('b')));
      await addresses.waitForChange(clock, 10_000, life.signal);
      expect(clock.pendingTimers()).toEqual([]);
      // One pending wake-up, not two.
      const second = track(addresses.waitForChange(clock, 10_000, life.signal));
      await turn();
      expect(second.state.settled).toBe(false);
      await clock.advance(10_000);
      await second.promise;
    });

    it('a wait ends quietly after its time, and rejects with the signal’s reason when it aborts', async () => {
      const { addresses, clock, life } = book();
      const timed = track(addresses.waitForChange(clock, 300, life.signal));
      await clock.advance(299);
      expect(timed.state.settled).toBe(false);
      await clock.advance(1);
      await timed.promise;
      const why = new ClosedError('leaving');
      const aborted = track(addresses.waitForFreeSlot(clock, 300, life.signal));
      life.abort(why);
      expect(await rejectionOf(aborted.promise)).toBe(why);
      expect(clock.pendingTimers()).toEqual([]);
    });

    it('waitForFreeSlot wakes when an owner’s address disappears, not when one appears', async () => {
      const { addresses, clock, life } = book();
      addresses.snapshot([entry(0, addr('a'))]);
      // The snapshot itself woke the standbys once: use that up.
      await addresses.waitForFreeSlot(clock, 10_000, life.signal);
      const standby = track(addresses.waitForFreeSlot(clock, 10_000, life.signal));
      addresses.event(put(1, addr('b')));
      addresses.event(put(0, addr('a2')));
      await turn();
      expect(standby.state.settled).toBe(false);
      addresses.event(del(1));
      await standby.promise;
    });

    it('wakeStandbys() wakes a standby (the job finished)', async () => {
      const { addresses, clock, life } = book();
      const standby = track(addresses.waitForFreeSlot(clock, 10_000, life.signal));
      await turn();
      expect(standby.state.settled).toBe(false);
      addresses.wakeStandbys();
      await standby.promise;
      expect(clock.pendingTimers()).toEqual([]);
    });
  });

  describe('fed by a real watch of <job>/tasks/', () => {
    let w: ReturnType<typeof memoryWorld>;
    let watch: WatchedPrefix | undefined;
    afterEach(async () => {
      await watch?.stop();
      await w.close();
    });

    it('learns an owner’s address, and a standby wakes when the owner’s session ends', async () => {
      w = memoryWorld();
      const c = w.client();
      const owner = await c.openSession({ ttlMs: 1000 });
      const forgotten: string[] = [];
      const addresses = new AddressBook(w.job, { forget: (a) => void forgotten.push(a) }, recordingLogger());
      watch = new WatchedPrefix(c, keys.tasks(w.job), addresses, w.clock, recordingLogger());
      await watch.start(new AbortController().signal);
      await c.create(keys.addr(w.job, 0), encodeJson(addr('owner', '12')), { session: owner });
      await eventually('the owner’s address', () => addresses.has(0));
      expect(addresses.get(0)).toEqual(addr('owner', '12'));
      // The first snapshot woke the standbys once: use that up.
      await addresses.waitForFreeSlot(w.clock, 10_000, new AbortController().signal);
      const standby = track(addresses.waitForFreeSlot(w.clock, 60_000, new AbortController().signal));
      await turn();
      expect(standby.state.settled).toBe(false);
      await owner.close();
      await standby.promise;
      expect(addresses.has(0)).toBe(false);
    });
  });
});

describe('SharedAddressBook (a node host’s one book)', () => {
  let w: ReturnType<typeof memoryWorld>;
  let shared: SharedAddressBook | undefined;
  afterEach(async () => {
    await shared?.stop();
    await w.close();
  });

  it('one watch for every node: ready() starts it once, each node sees the same records, and a node that leaves while waiting does not stop it', async () => {
    w = memoryWorld();
    const c = w.client();
    const owner = await c.openSession({ ttlMs: 1000 });
    await c.create(keys.addr(w.job, 0), encodeJson(addr('first', '3')), { session: owner });
    shared = new SharedAddressBook({ job: w.job, coordinator: c, transport: { forget: () => undefined }, clock: w.clock, logger: recordingLogger() });
    // A node that has left already is refused at once; one that leaves while the book starts is let go with its reason.
    const gone = new AbortController();
    gone.abort(new ClosedError('node left'));
    expect(await rejectionOf(shared.ready(gone.signal))).toBeInstanceOf(ClosedError);
    const leaving = new AbortController();
    const waiting = track(shared.ready(leaving.signal));
    leaving.abort(new ClosedError('node left while waiting'));
    expect(await rejectionOf(waiting.promise)).toBeInstanceOf(ClosedError);
    // The others get the snapshot of one watch.
    await Promise.all([shared.ready(new AbortController().signal), shared.ready(new AbortController().signal)]);
    const a = shared.join(recordingLogger());
    const b = shared.join(recordingLogger());
    expect(a.get(0)).toEqual(addr('first', '3'));
    expect(b.get(0)).toEqual(addr('first', '3'));
    await eventually('one watch', () => c.activeWatches === 1);
    await c.create(keys.addr(w.job, 1), encodeJson(addr('second', '4')), { session: owner });
    await eventually('the second address', () => a.has(1) && b.has(1));
    await shared.stop();
    expect(c.activeWatches).toBe(0);
    shared = undefined;
  });

  it('each node wakes on its own: a slot freed while one standby was busy wakes that standby’s next wait at once, though another one was waiting', async () => {
    w = memoryWorld();
    const c = w.client();
    const owner = await c.openSession({ ttlMs: 60_000 });
    await c.create(keys.addr(w.job, 0), encodeJson(addr('owner', '5')), { session: owner });
    shared = new SharedAddressBook({ job: w.job, coordinator: c, transport: { forget: () => undefined }, clock: w.clock, logger: recordingLogger() });
    await shared.ready(new AbortController().signal);
    const waiting = shared.join(recordingLogger());
    const busy = shared.join(recordingLogger());
    const life = new AbortController();
    // Books joined after the first snapshot have no wake-up pending.
    const first = track(waiting.waitForFreeSlot(w.clock, 60_000, life.signal));
    await turn();
    expect(first.state.settled).toBe(false);
    await owner.close();
    await first.promise;
    // `busy` was not waiting when the record went: its next wait returns at once (no timer), as on a book of its own.
    const next = track(busy.waitForFreeSlot(w.clock, 60_000, life.signal));
    await turn();
    expect(next.state.settled).toBe(true);
    expect(w.clock.pendingTimers()).toEqual([]);
    // A book that left hears nothing more.
    busy.detach();
    const changes: number[] = [];
    busy.subscribe((ch) => void changes.push(ch.task));
    await c.create(keys.addr(w.job, 1), encodeJson(addr('later', '6')));
    await eventually('the other book sees it', () => waiting.has(1));
    expect(changes).toEqual([]);
    life.abort();
  });
});
