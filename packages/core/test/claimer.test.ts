import { InternalError, LeaseLostError } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { AddressBook } from '../src/address-book.js';
import { Claimer } from '../src/claimer.js';
import type { ClaimerOptions } from '../src/claimer.js';
import { encodeJson, keys } from '../src/layout.js';
import type { AddrValue } from '../src/layout.js';
import { newStats } from '../src/stats.js';
import { bytes, memoryWorld, recordingLogger, rejectionOf, track, turn } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
afterEach(async () => {
  await w.close();
});

const addr = (address: string, token = '1'): AddrValue => ({ nodeId: `n-${address}`, address, token, incarnation: 1 });

/** A claimer of node-a on a fresh job of three tasks, with a rival client to hold slots. */
async function setup(options: Partial<ClaimerOptions> = {}) {
  w = memoryWorld();
  const coordinator = w.client();
  const session = await coordinator.openSession({ ttlMs: 1000 });
  const rival = w.client();
  const rivalSession = await rival.openSession({ ttlMs: 1000 });
  const logger = recordingLogger();
  const addresses = new AddressBook(w.job, { forget: () => undefined }, logger);
  const stats = newStats();
  const life = new AbortController();
  const state = { jobDone: false, standbys: 0, standby: true };
  const base: ClaimerOptions = {
    job: w.job,
    nodeId: 'node-a',
    coordinator,
    session,
    addresses,
    numTasks: 3,
    backupSlots: () => 0,
    preferredTask: undefined,
    ttlMs: 1000,
    clock: w.clock,
    stats,
    signal: life.signal,
    logger,
    jobDone: () => state.jobDone,
    random: () => 0,
    ...options,
  };
  const claimer = new Claimer(base);
  const claim = () =>
    claimer.claim(
      () => state.standby,
      () => void state.standbys++,
    );
  const lockName = (task: number) => `tg/${keys.taskLock(w.job, task)}`;
  const hold = async (task: number) => (await rival.tryAcquire(keys.taskLock(w.job, task), rivalSession, { owner: 'rival' }))!;
  return { base, claimer, claim, coordinator, session, rival, rivalSession, addresses, stats, life, state, logger, lockName, hold };
}

describe('Claimer.claim with backup slots', () => {
  const backupRecord = (state: 'syncing' | 'ready', token = '41', nodeId = 'b', slot = 0) =>
    encodeJson({ nodeId, address: `local://${nodeId}`, token, slot, state, primaryToken: '7' });

  it('leaves a free primary slot to a ready backup of its task (read from the store) and takes a backup slot instead', async () => {
    const { claim, coordinator } = await setup({ numTasks: 1, backupSlots: () => 2 });
    await coordinator.create(keys.backup(w.job, 0, 0), backupRecord('ready'));
    const c = await claim();
    expect(c).toMatchObject({ role: 'backup', id: 0, slot: 0 });
    expect(c?.lock.name).toBe(keys.backupLock(w.job, 0, 0));
    expect(await coordinator.holder(keys.taskLock(w.job, 0))).toBeUndefined();
  });

  it('takes the primary slot when the task’s only backup is still syncing', async () => {
    const { claim, coordinator } = await setup({ numTasks: 1, backupSlots: () => 1 });
    await coordinator.create(keys.backup(w.job, 0, 0), backupRecord('syncing'));
    expect(await claim()).toMatchObject({ role: 'primary', id: 0 });
  });

  it('a backup that is not ready may take the slot when the only ready record is its own', async () => {
    const { claimer, coordinator } = await setup({ numTasks: 1, backupSlots: () => 1 });
    await coordinator.create(keys.backup(w.job, 0, 0), backupRecord('ready', '41', 'node-a'));
    expect((await claimer.claimPrimarySlot(0))?.name).toBe(keys.taskLock(w.job, 0));
  });

  it('tells backup records apart by node, not by token (Kubernetes counts tokens per lock, so two slots can share one)', async () => {
    const { claimer, coordinator } = await setup({ numTasks: 1, backupSlots: () => 2 });
    await coordinator.create(keys.backup(w.job, 0, 0), backupRecord('syncing', '1', 'node-a', 0));
    await coordinator.create(keys.backup(w.job, 0, 1), backupRecord('ready', '1', 'b', 1));
    expect(await claimer.claimPrimarySlot(0)).toBeUndefined();
  });

  it('with every primary taken it backs the task with the fewest backups first', async () => {
    const { claim, hold, addresses } = await setup({ numTasks: 3, backupSlots: () => 2 });
    for (const id of [0, 1, 2]) {
      await hold(id);
      addresses.event({ type: 'put', key: keys.addr(w.job, id), value: encodeJson(addr(`r${id}`)), version: '1' });
    }
    const one = (task: number, slot: number) =>
      addresses.event({
        type: 'put',
        key: keys.backup(w.job, task, slot),
        value: encodeJson({ nodeId: `b${task}${slot}`, address: `local://b${task}${slot}`, token: '5', slot, state: 'ready' }),
        version: '1',
      });
    one(0, 0);
    one(1, 0);
    expect(await claim()).toMatchObject({ role: 'backup', id: 2, slot: 0 });
  });

  it('backs a primary in its own process (the same server address) after every other task, even one with more backups', async () => {
    const { claim, hold, addresses } = await setup({ numTasks: 2, backupSlots: () => 2, address: 'r0' });
    for (const id of [0, 1]) {
      await hold(id);
      addresses.event({ type: 'put', key: keys.addr(w.job, id), value: encodeJson(addr(`r${id}`)), version: '1' });
    }
    // Task 1 has a backup already and task 0 none, but task 0's primary shares this process.
    addresses.event({
      type: 'put',
      key: keys.backup(w.job, 1, 0),
      value: encodeJson({ nodeId: 'b10', address: 'local://b10', token: '5', slot: 0, state: 'ready' }),
      version: '1',
    });
    expect(await claim()).toMatchObject({ role: 'backup', id: 1, slot: 1 });
  });

  it('takes backup slots only of the tasks the job backs up (a master/worker job: its master)', async () => {
    const { claim, hold, addresses } = await setup({ numTasks: 3, backupSlots: (task) => (task === 1 ? 1 : 0) });
    for (const id of [0, 1, 2]) {
      await hold(id);
      addresses.event({ type: 'put', key: keys.addr(w.job, id), value: encodeJson(addr(`r${id}`)), version: '1' });
    }
    expect(await claim()).toMatchObject({ role: 'backup', id: 1, slot: 0 });
  });
});

describe('Claimer.claim', () => {
  it('takes the preferred slot when it is free, as node-a', async () => {
    const { claim, lockName, state } = await setup({ preferredTask: 2 });
    const c = await claim();
    expect(c?.id).toBe(2);
    expect(c?.lock.name).toBe(keys.taskLock(w.job, 2));
    expect(c?.lock.owner).toBe('node-a');
    expect(w.store.lockHolder(lockName(2))).toMatchObject({ owner: 'node-a', token: c?.lock.token });
    expect(state.standbys).toBe(0);
  });

  it('without a usable preference it starts at a random slot', async () => {
    const { base } = await setup();
    const ids: Array<number | undefined> = [];
    for (const [i, preferredTask] of [undefined, 3, -1].entries()) {
      const claimer = new Claimer({ ...base, job: `${w.job}-${i}`, preferredTask, random: () => 0.7 });
      ids.push((await claimer.claim(() => true, () => undefined))?.id);
    }
    expect(ids).toEqual([2, 2, 2]);
  });

  it('skips the slots whose owner address it knows, without trying their locks', async () => {
    const { claim, coordinator, addresses } = await setup({ preferredTask: 0 });
    addresses.set(0, addr('a'));
    addresses.set(1, addr('b'));
    const tried = coordinator.faults.add({ op: 'tryAcquire', key: new RegExp(`^${w.job}/tasks/[01]$`), error: () => new InternalError('not expected') });
    expect((await claim())?.id).toBe(2);
    expect(tried.hits).toBe(0);
  });

  it('passes over a slot whose lock is held elsewhere, wrapping around', async () => {
    const { claim, hold } = await setup({ preferredTask: 2 });
    await hold(2);
    expect((await claim())?.id).toBe(0);
  });

  it('with every slot taken it waits as a standby, and takes the slot whose owner’s address disappears', async () => {
    const { claim, hold, addresses, state, lockName } = await setup();
    const locks = [await hold(0), await hold(1), await hold(2)];
    for (const id of [0, 1, 2]) addresses.event({ type: 'put', key: keys.addr(w.job, id), value: encodeJson(addr(`r${id}`)), version: '1' });
    const run = track(claim());
    await eventually('standby', () => state.standbys === 1);
    expect(run.state.settled).toBe(false);
    await locks[1]!.release();
    addresses.event({ type: 'delete', key: keys.addr(w.job, 1) });
    const c = await run.promise;
    expect(c?.id).toBe(1);
    expect(w.store.lockHolder(lockName(1))?.owner).toBe('node-a');
    expect(state.standbys).toBe(1);
  });

  it('a standby also looks again every max(200, ttl/2) ms, and announces itself once', async () => {
    const { claim, hold, state } = await setup();
    const locks = [await hold(0), await hold(1), await hold(2)];
    const run = track(claim());
    await eventually('standby', () => state.standbys === 1);
    await w.clock.advance(500);
    await w.clock.advance(500);
    await locks[2]!.release();
    await w.clock.advance(499);
    expect(run.state.settled).toBe(false);
    await w.clock.advance(1);
    expect((await run.promise)?.id).toBe(2);
    expect(state.standbys).toBe(1);
  });

  it('stops as soon as stillStandby() is false: before trying, or when woken', async () => {
    const { claim, coordinator, state, hold, addresses } = await setup();
    const tried = coordinator.faults.add({ op: 'tryAcquire', error: () => new InternalError('not expected') });
    state.standby = false;
    expect(await claim()).toBeUndefined();
    expect(tried.hits).toBe(0);
    tried.clear();
    state.standby = true;
    for (const id of [0, 1, 2]) await hold(id);
    const run = track(claim());
    await eventually('standby', () => state.standbys === 1);
    state.standby = false;
    addresses.wakeStandbys();
    expect(await run.promise).toBeUndefined();
  });

  it('stops when the node’s life ends: before trying, or while waiting', async () => {
    const { claim, life, hold, state, coordinator } = await setup();
    for (const id of [0, 1, 2]) await hold(id);
    const run = track(claim());
    await eventually('standby', () => state.standbys === 1);
    life.abort(new Error('leaving'));
    expect(await run.promise).toBeUndefined();
    const tried = coordinator.faults.add({ op: 'tryAcquire', error: () => new InternalError('not expected') });
    expect(await claim()).toBeUndefined();
    expect(tried.hits).toBe(0);
  });

  it('releases a freshly taken lock when the node knows the job is done', async () => {
    const { claim, state, lockName } = await setup({ preferredTask: 1 });
    state.jobDone = true;
    expect(await claim()).toBeUndefined();
    expect(w.store.lockHolder(lockName(1))).toBeUndefined();
  });

  it('releases a freshly taken lock when the stored status says done (the watch has not told it yet)', async () => {
    const { claim, coordinator, lockName } = await setup({ preferredTask: 1 });
    await coordinator.create(keys.status(w.job), encodeJson({ state: 'done' }));
    expect(await claim()).toBeUndefined();
    expect(w.store.lockHolder(lockName(1))).toBeUndefined();
  });

  it('a status still running does not stop it', async () => {
    const { claim, coordinator } = await setup({ preferredTask: 1 });
    await coordinator.create(keys.status(w.job), encodeJson({ state: 'running' }));
    expect((await claim())?.id).toBe(1);
  });
});

describe('Claimer.bumpIncarnation', () => {
  it('counts the claims of a task: 1, 2, 3', async () => {
    const { claimer, stats } = await setup();
    expect(await claimer.bumpIncarnation(1)).toBe(1);
    expect(await claimer.bumpIncarnation(1)).toBe(2);
    expect(await claimer.bumpIncarnation(1)).toBe(3);
    expect(await claimer.bumpIncarnation(2)).toBe(1);
    expect(w.text(keys.incarnation(w.job, 1))).toBe('3');
    expect(stats.writes.incarnation).toBe(4);
  });

  it('resets a corrupt counter to 1, with a warning', async () => {
    const { claimer, coordinator, logger } = await setup();
    await coordinator.create(keys.incarnation(w.job, 0), bytes('"many"'));
    expect(await claimer.bumpIncarnation(0)).toBe(1);
    expect(w.text(keys.incarnation(w.job, 0))).toBe('1');
    expect(logger.lines.map((l) => [l.level, l.message])).toEqual([['warn', 'resetting a corrupt incarnation counter']]);
  });

  it('two claimers bumping at once get different counts', async () => {
    const { claimer, rival, rivalSession } = await setup();
    const other = new Claimer({
      job: w.job,
      nodeId: 'node-b',
      coordinator: rival,
      session: rivalSession,
      addresses: new AddressBook(w.job, { forget: () => undefined }, recordingLogger()),
      numTasks: 3,
      backupSlots: () => 0,
      preferredTask: undefined,
      ttlMs: 1000,
      clock: w.clock,
      stats: newStats(),
      signal: new AbortController().signal,
      logger: recordingLogger(),
      jobDone: () => false,
    });
    const counts = await Promise.all([claimer.bumpIncarnation(0), other.bumpIncarnation(0)]);
    expect(counts.sort()).toEqual([1, 2]);
    expect(w.text(keys.incarnation(w.job, 0))).toBe('2');
  });
});

describe('Claimer.publishAddress', () => {
  const mine = addr('local://me', '17');

  it('publishes the owner’s record tied to the session, and records it in the address book', async () => {
    const { claimer, session, addresses, stats } = await setup();
    await claimer.publishAddress(1, mine, () => undefined);
    expect(JSON.parse(w.text(keys.addr(w.job, 1))!)).toEqual(mine);
    expect(w.sessionOf(keys.addr(w.job, 1))).toBe(session.id);
    expect(addresses.get(1)).toEqual(mine);
    expect(stats.writes.addr).toBe(1);
  });

  it('replaces a predecessor’s record', async () => {
    const { claimer, rival, rivalSession, session } = await setup();
    await rival.create(keys.addr(w.job, 1), encodeJson(addr('local://old', '3')), { session: rivalSession });
    await claimer.publishAddress(1, mine, () => undefined);
    expect(JSON.parse(w.text(keys.addr(w.job, 1))!)).toEqual(mine);
    expect(w.sessionOf(keys.addr(w.job, 1))).toBe(session.id);
  });

  it('asks assertOwner before writing: a lost owner publishes nothing', async () => {
    const { claimer, addresses, stats } = await setup();
    const lost = new LeaseLostError('publishing the task address: lost');
    const out = claimer.publishAddress(1, mine, () => {
      throw lost;
    });
    expect(await rejectionOf(out)).toBe(lost);
    expect(w.text(keys.addr(w.job, 1))).toBeUndefined();
    expect(addresses.has(1)).toBe(false);
    expect(stats.writes.addr).toBe(0);
  });

  it('a session that is lost cannot publish (the store refuses it)', async () => {
    const { claimer, coordinator, session, addresses } = await setup();
    coordinator.expireSession(session);
    await turn();
    expect(session.lost.aborted).toBe(true);
    expect(await rejectionOf(claimer.publishAddress(1, mine, () => undefined))).toMatchObject({ code: 'LEASE_LOST' });
    expect(addresses.has(1)).toBe(false);
  });
});
