import type { Entry, EpochContext, WatchEvent } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { EpochTracker } from '../src/epoch.js';
import { META_GENERATION_EPOCHS, encodeJson, keys } from '../src/layout.js';
import { MetaInbox } from '../src/meta-inbox.js';
import { MetaOutbox } from '../src/meta-outbox.js';
import { newStats } from '../src/stats.js';
import { WatchedPrefix } from '../src/watched-prefix.js';
import { bytes, memoryWorld, recordingLogger } from './parts.js';

const JOB = 'inbox';
const ME = 1;

interface Delivery {
  readonly ctx: EpochContext;
  readonly epoch: number;
  readonly from: number;
  readonly linkType: string;
  readonly meta: string;
}

/** Task 1's inbox, on a real epoch tracker; deliveries and sender tokens are plain data. */
function inbox(epoch = 0) {
  const w = memoryWorld();
  const tracker = new EpochTracker({ job: JOB, coordinator: w.client(), clock: w.clock, logger: recordingLogger(), stats: newStats(), onChange: () => undefined });
  const setEpoch = (e: number) => tracker.apply(bytes(String(e)), String(e + 1));
  setEpoch(epoch);
  const tokens = new Map<number, string>();
  const delivered: Delivery[] = [];
  const logger = recordingLogger();
  const counts = { metasByPush: 0, metasByStore: 0 };
  const box = new MetaInbox({
    counts,
    job: JOB,
    taskId: ME,
    epochs: tracker,
    senderToken: (task) => tokens.get(task),
    deliver: (ctx, e, from, linkType, meta) => void delivered.push({ ctx, epoch: e, from, linkType, meta }),
    logger,
  });
  /** The task moves to epoch `e` as RunningTask moves it: forget, then release what was held. */
  const enter = (e: number) => {
    setEpoch(e);
    box.onEpochChange(e);
    box.release(e);
  };
  const seen = () => delivered.map((d) => `${d.epoch}|${d.from}|${d.linkType}|${d.meta}`);
  return { w, tracker, box, tokens, delivered, seen, logger, setEpoch, enter, counts };
}

const record = (epoch: number, from: number, linkType: string, metas: string[], token = '5', to = ME, job = JOB): Entry => ({
  key: keys.meta(job, to, epoch, from, linkType),
  value: encodeJson({ token, metas }),
  version: '1',
});
const put = (e: Entry): WatchEvent => ({ type: 'put', ...e });

let worlds: Array<ReturnType<typeof memoryWorld>> = [];
afterEach(async () => {
  for (const w of worlds) await w.close();
  worlds = [];
});
function make(epoch = 0) {
  const made = inbox(epoch);
  worlds.push(made.w);
  return made;
}

describe('MetaInbox', () => {
  it('delivers each meta of a record with the current epoch’s context', () => {
    const { box, delivered, tracker } = make(3);
    box.snapshot([record(3, 0, 'Parents', ['a', 'b'])]);
    expect(delivered).toEqual([
      { ctx: tracker.context, epoch: 3, from: 0, linkType: 'Parents', meta: 'a' },
      { ctx: tracker.context, epoch: 3, from: 0, linkType: 'Parents', meta: 'b' },
    ]);
  });

  it('delivers a (epoch, sender, link type, meta) once, however often the record is seen or grows', () => {
    const { box, seen } = make(0);
    box.event(put(record(0, 0, 'Parents', ['a'])));
    box.event(put(record(0, 0, 'Parents', ['a'])));
    box.event(put(record(0, 0, 'Parents', ['a', 'b'])));
    // A snapshot after a compaction brings everything again.
    box.snapshot([record(0, 0, 'Parents', ['a', 'b'])]);
    expect(seen()).toEqual(['0|0|Parents|a', '0|0|Parents|b']);
  });

  it('the same meta from another sender or on another link type is another delivery', () => {
    const { box, seen } = make(0);
    box.event(put(record(0, 0, 'Parents', ['a'])));
    box.event(put(record(0, 2, 'Parents', ['a'])));
    box.event(put(record(0, 0, 'Children', ['a'])));
    expect(seen()).toEqual(['0|0|Parents|a', '0|2|Parents|a', '0|0|Children|a']);
  });

  it('ignores records for other tasks or jobs, keys that are not meta records, and deletions', () => {
    const { box, seen } = make(0);
    box.snapshot([
      record(0, 0, 'Parents', ['for task 2'], '5', 2),
      record(0, 0, 'Parents', ['other job'], '5', ME, 'other'),
      { key: `${JOB}/meta/${ME}/0/0/0`, value: encodeJson({ token: '5', metas: ['short key'] }), version: '1' },
    ]);
    box.event({ type: 'delete', key: keys.meta(JOB, ME, 0, 0, 'Parents') });
    expect(seen()).toEqual([]);
    // None of them counts as a generation with metas either.
    expect(box.takeOldGenerations(100)).toEqual([]);
  });

  it('a push and a record of the same meta are one delivery, whichever comes first; counts name the path', () => {
    const { box, seen, counts } = make(0);
    box.push(0, 0, '5', 'Parents', 'a');
    box.event(put(record(0, 0, 'Parents', ['a', 'b'])));
    box.push(0, 0, '5', 'Parents', 'b');
    expect(seen()).toEqual(['0|0|Parents|a', '0|0|Parents|b']);
    expect(counts).toEqual({ metasByPush: 1, metasByStore: 1 });
  });

  it('drops a push from a sender it knows replaced, and holds a push of a later epoch until the task enters it', () => {
    const { box, seen, tokens, enter } = make(1);
    tokens.set(0, '9');
    box.push(1, 0, '5', 'Parents', 'old sender');
    box.push(1, 0, '9', 'Parents', 'current');
    box.push(2, 0, '10', 'Parents', 'next epoch');
    box.push(0, 0, '9', 'Parents', 'past epoch');
    expect(seen()).toEqual(['1|0|Parents|current']);
    enter(2);
    box.event(put(record(2, 0, 'Parents', ['next epoch'], '10')));
    expect(seen()).toEqual(['1|0|Parents|current', '2|0|Parents|next epoch']);
  });

  it('holds metas of an epoch the task has not entered, and delivers them once when it does', () => {
    const { box, seen, enter, delivered, tracker } = make(1);
    box.event(put(record(2, 0, 'Parents', ['early'])));
    box.event(put(record(2, 0, 'Parents', ['early'])));
    expect(seen()).toEqual([]);
    enter(2);
    expect(seen()).toEqual(['2|0|Parents|early']);
    expect(delivered[0]?.ctx).toBe(tracker.context);
    // Released once: a second release delivers nothing.
    box.release(2);
    expect(seen()).toEqual(['2|0|Parents|early']);
  });

  it('a node that moved to an epoch but whose task has not entered it yet keeps holding', () => {
    const { box, seen, setEpoch } = make(1);
    box.event(put(record(2, 0, 'Parents', ['early'])));
    setEpoch(2);
    box.onEpochChange(2);
    expect(seen()).toEqual([]);
    box.release(2);
    expect(seen()).toEqual(['2|0|Parents|early']);
  });

  it('drops what was held for an epoch the node skipped', () => {
    const { box, seen, enter } = make(1);
    box.event(put(record(2, 0, 'Parents', ['skipped'])));
    box.event(put(record(4, 0, 'Parents', ['later'])));
    enter(3);
    box.release(2);
    expect(seen()).toEqual([]);
    enter(4);
    expect(seen()).toEqual(['4|0|Parents|later']);
  });

  it('never delivers a meta of an epoch that is over', () => {
    const { box, seen } = make(5);
    box.event(put(record(4, 0, 'Parents', ['late'])));
    expect(seen()).toEqual([]);
  });

  it('drops records from a dead incarnation of the sender (an older token than its current one)', () => {
    const { box, seen, tokens } = make(0);
    tokens.set(0, '20');
    box.event(put(record(0, 0, 'Parents', ['dead'], '10')));
    box.event(put(record(0, 0, 'Parents', ['current'], '20')));
    // A newer token than the address book knows: the book is behind, the record is good.
    box.event(put(record(0, 0, 'Children', ['newer'], '30')));
    // A sender whose address is unknown: nothing to compare with.
    box.event(put(record(0, 2, 'Parents', ['unknown'], '1')));
    expect(seen()).toEqual(['0|0|Parents|current', '0|0|Children|newer', '0|2|Parents|unknown']);
  });

  it('tokens compare as numbers, not strings', () => {
    const { box, seen, tokens } = make(0);
    tokens.set(0, '9');
    box.event(put(record(0, 0, 'Parents', ['ten'], '10')));
    expect(seen()).toEqual(['0|0|Parents|ten']);
  });

  it('a record whose token is not a decimal number is a corrupt record: logged and skipped, the rest still delivered', () => {
    const { box, seen, tokens, logger } = make(0);
    tokens.set(0, '20');
    const bad = record(0, 0, 'Parents', ['x'], 'not-a-number');
    expect(() => box.event(put(bad))).not.toThrow();
    expect(() => box.snapshot([bad, record(0, 2, 'Parents', ['y'])])).not.toThrow();
    expect(seen()).toEqual(['0|2|Parents|y']);
    expect(logger.lines.filter((l) => l.level === 'warn').map((l) => l.fields['key'])).toEqual([bad.key, bad.key]);
  });

  it('fed by a real watch, a record with a non-decimal token does not stop the metas that follow', async () => {
    const { w, box, seen, tokens } = make(0);
    tokens.set(0, '20');
    const c = w.client();
    const watch = new WatchedPrefix(c, keys.metaFor(JOB, ME), box, w.clock, recordingLogger());
    await watch.start(new AbortController().signal);
    try {
      await c.create(keys.meta(JOB, ME, 0, 0, 'Parents'), encodeJson({ token: 'x1', metas: ['bad'] }));
      await c.create(keys.meta(JOB, ME, 0, 2, 'Parents'), encodeJson({ token: '3', metas: ['good'] }));
      await eventually('the good meta', () => seen().length === 1, { timeoutMs: 3000 });
      expect(seen()).toEqual(['0|2|Parents|good']);
    } finally {
      await watch.stop();
    }
  });

  it('logs and skips a corrupt record, but still counts its generation for clean-up', () => {
    const { box, seen, logger } = make(0);
    const key = keys.meta(JOB, ME, 0, 0, 'Parents');
    box.event({ type: 'put', key, value: bytes('{"metas":"x"}'), version: '1' });
    expect(seen()).toEqual([]);
    expect(logger.lines.map((l) => [l.level, l.message, l.fields['key']])).toEqual([['warn', 'ignoring a corrupt meta value', key]]);
    expect(box.takeOldGenerations(META_GENERATION_EPOCHS - 1)).toEqual([]);
    expect(box.takeOldGenerations(META_GENERATION_EPOCHS)).toEqual([0]);
  });

  it('forgets what it delivered for older epochs (seen when the store’s epoch goes back)', () => {
    const { box, seen, enter } = make(1);
    box.event(put(record(1, 0, 'Parents', ['a'])));
    enter(2);
    enter(1);
    box.event(put(record(1, 0, 'Parents', ['a'])));
    expect(seen()).toEqual(['1|0|Parents|a', '1|0|Parents|a']);
  });

  it('takeOldGenerations returns each generation wholly before the epoch’s that had metas, once, and keeps the others', () => {
    const { box } = make(0);
    const G = META_GENERATION_EPOCHS;
    box.snapshot([record(0, 0, 'Parents', ['a']), record(G - 1, 0, 'Parents', ['b']), record(2 * G + 1, 2, 'Children', ['c']), record(3 * G, 2, 'Children', ['d'])]);
    // Epoch G - 1 is still in generation 0: nothing of it may go yet.
    expect(box.takeOldGenerations(G - 1)).toEqual([]);
    expect(box.takeOldGenerations(2 * G + 1)).toEqual([0]);
    expect(box.takeOldGenerations(3 * G - 1)).toEqual([]);
    expect(box.takeOldGenerations(3 * G)).toEqual([2]);
    expect(box.takeOldGenerations(10 * G)).toEqual([3]);
  });

  it('fed by a real watch, delivers what a real outbox flags, once', async () => {
    const { w, box, seen, tracker } = make(0);
    const c = w.client();
    const session = await c.openSession({ ttlMs: 1000 });
    const sender = new MetaOutbox({
      job: JOB,
      taskId: 0,
      token: '5',
      coordinator: c,
      session,
      clock: w.clock,
      stats: newStats(),
      logger: recordingLogger(),
      assertOwner: () => undefined,
    });
    const watch = new WatchedPrefix(c, keys.metaFor(JOB, ME), box, w.clock, recordingLogger());
    await watch.start(new AbortController().signal);
    try {
      await sender.flag(tracker.context, [ME, 2], 'Parents', 'x');
      await sender.flag(tracker.context, [ME], 'Parents', 'x');
      await sender.flag(tracker.context, [ME], 'Parents', 'y');
      await eventually('two deliveries', () => seen().length === 2);
      expect(seen()).toEqual(['0|0|Parents|x', '0|0|Parents|y']);
    } finally {
      await watch.stop();
    }
  });
});
