import { ClosedError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { EpochTracker } from '../src/epoch.js';
import { JobState } from '../src/job-state.js';
import { encodeJson, keys } from '../src/layout.js';
import type { JobStatusValue } from '../src/layout.js';
import { newStats } from '../src/stats.js';
import { WatchedPrefix } from '../src/watched-prefix.js';
import { FlakyCoordinator, bytes, gate, memoryWorld, recordingLogger, rejectionOf, track } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
const life = new AbortController();
let watches: WatchedPrefix[] = [];
afterEach(async () => {
  for (const watch of watches) await watch.stop();
  watches = [];
  await w.close();
});

const status = (s: JobStatusValue) => encodeJson(s);

/** A JobState fed by a real watch of `<job>/state/`, with a real epoch tracker behind it. */
async function following(before: (c: ReturnType<typeof w.client>) => Promise<void> = async () => undefined) {
  w = memoryWorld();
  const c = w.client();
  await before(c);
  const finished: JobStatusValue[] = [];
  const box: { logger: Logger } = { logger: recordingLogger() };
  const tracker = new EpochTracker({ job: w.job, coordinator: c, clock: w.clock, logger: recordingLogger(), stats: newStats(), onChange: () => undefined });
  const state = new JobState(w.job, tracker, () => box.logger, (s) => void finished.push(s));
  const watch = new WatchedPrefix(c, keys.state(w.job), state, w.clock, recordingLogger());
  watches.push(watch);
  await watch.start(life.signal);
  return { c, tracker, finished, box };
}

describe('JobState', () => {
  it('applies the state found at start: the epoch, and a finished status at once', async () => {
    const { tracker, finished } = await following(async (c) => {
      await c.create(keys.epoch(w.job), bytes('4'));
      await c.create(keys.status(w.job), status({ state: 'done', reason: 'all good' }));
    });
    expect(tracker.epoch).toBe(4);
    expect(finished).toEqual([{ state: 'done', reason: 'all good' }]);
  });

  it('hands every epoch value to the tracker, with its version', async () => {
    const { c, tracker } = await following();
    expect(tracker.epoch).toBe(-1);
    const v0 = await c.create(keys.epoch(w.job), bytes('0'));
    await eventually('epoch 0', () => tracker.epoch === 0);
    await c.update(keys.epoch(w.job), bytes('1'), v0);
    await eventually('epoch 1', () => tracker.epoch === 1);
    // The version came along: an advance needs no read.
    c.faults.add({ op: 'get', error: () => new ClosedError('no read expected') });
    await tracker.advance(tracker.context, () => undefined);
    expect(w.text(keys.epoch(w.job))).toBe('2');
  });

  it('calls onFinished once, at the first status that is not running', async () => {
    const { c, tracker, finished } = await following();
    const key = keys.status(w.job);
    let v = await c.create(key, status({ state: 'running' }));
    v = await c.update(key, status({ state: 'failed', reason: 'boom' }), v);
    await eventually('onFinished', () => finished.length === 1);
    v = await c.update(key, status({ state: 'done' }), v);
    await c.update(key, status({ state: 'running' }), v);
    // Events come in revision order: once this one is seen, so were the statuses.
    await c.create(keys.epoch(w.job), bytes('0'));
    await eventually('the watch to catch up', () => tracker.epoch === 0);
    expect(finished).toEqual([{ state: 'failed', reason: 'boom' }]);
  });

  it('logs and ignores a corrupt value (the node never dies of it), and keeps following', async () => {
    const { c, tracker, finished, box } = await following();
    const logger = recordingLogger();
    box.logger = logger;
    await c.create(keys.epoch(w.job), bytes('not a number'));
    await c.create(keys.status(w.job), bytes('{"state":"sleeping"}'));
    await eventually('two errors', () => logger.lines.length === 2);
    expect(logger.lines.map((l) => [l.level, l.message, l.fields['key']])).toEqual([
      ['error', 'ignoring a corrupt job state value', keys.epoch(w.job)],
      ['error', 'ignoring a corrupt job state value', keys.status(w.job)],
    ]);
    expect(tracker.epoch).toBe(-1);
    expect(finished).toEqual([]);
    // Rewritten corrupt, it is not reported again; readable and then corrupt again, it is.
    let e = await c.get(keys.epoch(w.job));
    await c.update(keys.epoch(w.job), bytes('still not'), e!.version);
    e = await c.get(keys.epoch(w.job));
    await c.update(keys.epoch(w.job), bytes('3'), e!.version);
    await eventually('the next good value', () => tracker.epoch === 3);
    expect(logger.lines).toHaveLength(2);
    e = await c.get(keys.epoch(w.job));
    await c.update(keys.epoch(w.job), bytes('banana'), e!.version);
    await eventually('the third report', () => logger.lines.length === 3);
    expect(logger.lines[2]?.fields['key']).toBe(keys.epoch(w.job));
  });

  it('ignores deletions and other keys under state/', async () => {
    const { c, tracker, finished, box } = await following();
    const logger = recordingLogger();
    box.logger = logger;
    const v = await c.create(keys.epoch(w.job), bytes('2'));
    await eventually('epoch 2', () => tracker.epoch === 2);
    await c.create(`${keys.state(w.job)}notes`, bytes('garbage'));
    await c.delete(keys.epoch(w.job), v);
    await c.create(keys.status(w.job), status({ state: 'done' }));
    await eventually('the status', () => finished.length === 1);
    expect(tracker.epoch).toBe(2);
    expect(logger.lines).toEqual([]);
  });

  describe('markDone', () => {
    const options = (signal = new AbortController().signal) => {
      const counted = { writes: 0 };
      const logger = recordingLogger();
      return { counted, logger, options: { clock: w.clock, signal, logger, onWrite: () => void counted.writes++ } };
    };

    it('creates the status when there is none, saying who and when', async () => {
      w = memoryWorld();
      const c = w.client();
      const { counted, options: o } = options();
      await JobState.markDone(c, w.job, 'node-a', o);
      const stored = JSON.parse(w.text(keys.status(w.job))!) as Record<string, unknown>;
      expect(stored['state']).toBe('done');
      expect(stored['by']).toBe('node-a');
      expect(new Date(String(stored['updated'])).toISOString()).toBe(stored['updated']);
      expect(counted.writes).toBe(1);
    });

    it('turns running (and failed) into done', async () => {
      w = memoryWorld();
      const c = w.client();
      await c.create(keys.status(w.job), status({ state: 'running' }));
      await JobState.markDone(c, w.job, 'node-a', options().options);
      expect(JSON.parse(w.text(keys.status(w.job))!)).toMatchObject({ state: 'done', by: 'node-a' });
      const other = `${w.job}-b`;
      await c.create(keys.status(other), status({ state: 'failed', reason: 'x' }));
      await JobState.markDone(c, other, 'node-b', options().options);
      expect(JSON.parse(w.text(keys.status(other))!)).toMatchObject({ state: 'done', by: 'node-b' });
    });

    it('writes nothing when the job is already done', async () => {
      w = memoryWorld();
      const c = w.client();
      await c.create(keys.status(w.job), status({ state: 'done', reason: 'first' }));
      const revision = w.store.revision;
      const { counted, options: o } = options();
      await JobState.markDone(c, w.job, 'node-a', o);
      expect(counted.writes).toBe(0);
      expect(w.store.revision).toBe(revision);
      expect(JSON.parse(w.text(keys.status(w.job))!)).toEqual({ state: 'done', reason: 'first' });
    });

    it('someone marking it done meanwhile wins: the lost race re-reads and stops', async () => {
      w = memoryWorld();
      const inner = w.client();
      const c = new FlakyCoordinator(inner);
      await c.create(keys.status(w.job), status({ state: 'running' }));
      const held = gate();
      c.tricks.push({ hold: held.promise });
      const { counted, options: o } = options();
      const run = track(JobState.markDone(c, w.job, 'node-a', o));
      await eventually('the write to be held', () => c.writes.length === 2);
      const e = await inner.get(keys.status(w.job));
      await w.client().update(keys.status(w.job), status({ state: 'done', reason: 'controller' }), e!.version);
      held.open();
      await run.promise;
      expect(counted.writes).toBe(1);
      expect(JSON.parse(w.text(keys.status(w.job))!)).toEqual({ state: 'done', reason: 'controller' });
    });

    it('a corrupt status is repaired: overwritten with done, and the repair logged with its key', async () => {
      w = memoryWorld();
      const c = w.client();
      await c.create(keys.status(w.job), bytes('zzz'));
      const { counted, logger, options: o } = options();
      await JobState.markDone(c, w.job, 'node-a', o);
      expect(counted.writes).toBe(1);
      expect(JSON.parse(w.text(keys.status(w.job))!)).toMatchObject({ state: 'done', by: 'node-a' });
      expect(logger.lines.map((l) => [l.level, l.message, l.fields['key']])).toEqual([
        ['warn', 'repairing a corrupt job status: the job is marked done', keys.status(w.job)],
      ]);
    });

    it('an unreachable store is retried until the signal ends it', async () => {
      w = memoryWorld();
      const c = w.client();
      const ctrl = new AbortController();
      const fault = c.faults.add({ op: 'create' });
      const run = track(JobState.markDone(c, w.job, 'node-a', options(ctrl.signal).options));
      await eventually('a backoff', () => fault.hits === 1 && w.clock.pendingTimers().length === 1);
      await w.clock.advance(20);
      await eventually('a second attempt', () => fault.hits === 2);
      const why = new ClosedError('the node is leaving');
      ctrl.abort(why);
      expect(await rejectionOf(run.promise)).toBe(why);
      expect(w.text(keys.status(w.job))).toBeUndefined();
    });
  });
});
