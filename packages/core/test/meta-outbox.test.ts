import { EpochChangedError, InternalError, LeaseLostError } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { epochScope } from '../src/epoch.js';
import { encodeJson, keys } from '../src/layout.js';
import { MetaOutbox } from '../src/meta-outbox.js';
import type { MetaOutboxOptions } from '../src/meta-outbox.js';
import { newStats } from '../src/stats.js';
import { bytes, memoryWorld, recordingLogger, rejectionOf, track, turn } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
afterEach(async () => {
  await w.close();
});

const FROM = 0;
const TOKEN = '9';

/** Task 0's outbox (token 9) on a fresh job; `asked` records what assertOwner was asked. */
async function outbox(options: Partial<MetaOutboxOptions> = {}) {
  w = memoryWorld();
  const coordinator = w.client();
  const session = await coordinator.openSession({ ttlMs: 1000 });
  const stats = newStats();
  const asked: string[] = [];
  const box = new MetaOutbox({
    job: w.job,
    taskId: FROM,
    token: TOKEN,
    coordinator,
    session,
    clock: w.clock,
    stats,
    logger: recordingLogger(),
    assertOwner: (what) => void asked.push(what),
    ...options,
  });
  const stored = (to: number, epoch: number, linkType = 'Parents') => {
    const t = w.text(keys.meta(w.job, to, epoch, FROM, linkType));
    return t === undefined ? undefined : (JSON.parse(t) as unknown);
  };
  return { box, coordinator, session, stats, asked, stored };
}

describe('MetaOutbox', () => {
  it('writes one record per receiver, holding the token and the meta, tied to the session', async () => {
    const { box, session, stats, asked, stored } = await outbox();
    await box.flag(epochScope(3).context, [1, 2], 'Parents', 'ready');
    expect(stored(1, 3)).toEqual({ token: TOKEN, metas: ['ready'] });
    expect(stored(2, 3)).toEqual({ token: TOKEN, metas: ['ready'] });
    expect(w.sessionOf(keys.meta(w.job, 1, 3, FROM, 'Parents'))).toBe(session.id);
    expect(stats.writes.meta).toBe(2);
    expect(asked).toEqual(['flagMeta', 'flagMeta']);
    await session.close();
    expect(stored(1, 3)).toBeUndefined();
  });

  it('the first flag of a record creates it without a read', async () => {
    const { box, coordinator, stored } = await outbox();
    const noRead = coordinator.faults.add({ op: 'get', error: () => new InternalError('no read expected') });
    await box.flag(epochScope(0).context, [1], 'Parents', 'a');
    expect(noRead.hits).toBe(0);
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a'] });
  });

  it('another meta on the same record is merged by compare-and-set (no create tried first)', async () => {
    const { box, stats, stored } = await outbox();
    const ctx = epochScope(0).context;
    await box.flag(ctx, [1], 'Parents', 'a');
    await box.flag(ctx, [1], 'Parents', 'b');
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a', 'b'] });
    expect(stats.writes.meta).toBe(2);
  });

  it('a meta flagged twice is written once', async () => {
    const { box, stats } = await outbox();
    const ctx = epochScope(0).context;
    await box.flag(ctx, [1], 'Parents', 'a');
    const revision = w.store.revision;
    await box.flag(ctx, [1], 'Parents', 'a');
    expect(stats.writes.meta).toBe(1);
    expect(w.store.revision).toBe(revision);
  });

  it('records are per epoch and per link type', async () => {
    const { box, stored } = await outbox();
    await box.flag(epochScope(0).context, [1], 'Parents', 'a');
    await box.flag(epochScope(1).context, [1], 'Parents', 'b');
    await box.flag(epochScope(1).context, [1], 'Children', 'c');
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a'] });
    expect(stored(1, 1)).toEqual({ token: TOKEN, metas: ['b'] });
    expect(stored(1, 1, 'Children')).toEqual({ token: TOKEN, metas: ['c'] });
  });

  it('no receivers: nothing is written', async () => {
    const { box, stats } = await outbox();
    const revision = w.store.revision;
    await box.flag(epochScope(0).context, [], 'Parents', 'a');
    expect(stats.writes.meta).toBe(0);
    expect(w.store.revision).toBe(revision);
  });

  it('a predecessor’s record (another token, tied to its session) is replaced by one of this incarnation’s, tied to its own: it outlives the predecessor’s session', async () => {
    const { box, coordinator, stored } = await outbox();
    const old = await coordinator.openSession({ ttlMs: 1000 });
    await coordinator.create(keys.meta(w.job, 1, 0, FROM, 'Parents'), encodeJson({ token: '3', metas: ['old', 'a'] }), { session: old });
    await box.flag(epochScope(0).context, [1], 'Parents', 'a');
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a'] });
    // Found by an etcd outage longer than the TTL: updated in place, the record kept the
    // predecessor's session and vanished with it, and the flag with it.
    await old.close();
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a'] });
  });

  it('a corrupt record in the way is overwritten', async () => {
    const { box, coordinator, stored } = await outbox();
    await coordinator.create(keys.meta(w.job, 1, 0, FROM, 'Parents'), bytes('{"token":9}'));
    await box.flag(epochScope(0).context, [1], 'Parents', 'a');
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a'] });
  });

  it('after an epoch change it forgets which records it created: the next flag tries a create first', async () => {
    const { box, stats, stored } = await outbox();
    const ctx = epochScope(0).context;
    await box.flag(ctx, [1], 'Parents', 'a');
    box.onEpochChange();
    await box.flag(ctx, [1], 'Parents', 'b');
    // A create that found the record, then the merge.
    expect(stats.writes.meta).toBe(3);
    expect(stored(1, 0)).toEqual({ token: TOKEN, metas: ['a', 'b'] });
  });

  it('assertOwner throwing stops the write', async () => {
    const lost = new LeaseLostError('flagMeta: lost');
    const { box, stats, stored } = await outbox({
      assertOwner: () => {
        throw lost;
      },
    });
    expect(await rejectionOf(box.flag(epochScope(0).context, [1], 'Parents', 'a'))).toBe(lost);
    expect(stats.writes.meta).toBe(0);
    expect(stored(1, 0)).toBeUndefined();
  });

  it('a lost session cannot write (the store refuses it), even if the owner check passed', async () => {
    const { box, coordinator, session, stored } = await outbox();
    coordinator.expireSession(session);
    await turn();
    expect(session.lost.aborted).toBe(true);
    expect(await rejectionOf(box.flag(epochScope(0).context, [1], 'Parents', 'a'))).toMatchObject({ code: 'LEASE_LOST' });
    expect(stored(1, 0)).toBeUndefined();
  });

  it('retries an unreachable store until its epoch ends, then rejects with the end’s reason', async () => {
    const { box, coordinator, stored } = await outbox();
    const scope = epochScope(0);
    const fault = coordinator.faults.add({ op: 'create' });
    const run = track(box.flag(scope.context, [1], 'Parents', 'a'));
    await eventually('a first attempt', () => fault.hits === 1);
    await w.clock.advance(20);
    await eventually('a second attempt', () => fault.hits === 2);
    const over = new EpochChangedError('epoch 0 is over');
    scope.end(() => over);
    expect(await rejectionOf(run.promise)).toBe(over);
    expect(stored(1, 0)).toBeUndefined();
  });
});
