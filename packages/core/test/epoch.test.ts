import { ClosedError, EpochChangedError, InvalidArgumentError, LeaseLostError } from '@taskgraph/api';
import type { EpochContext } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { EpochTracker, epochScope } from '../src/epoch.js';
import { keys } from '../src/layout.js';
import { newStats } from '../src/stats.js';
import { memoryWorld, recordingLogger, rejectionOf, turn } from './parts.js';

describe('epochScope', () => {
  it('carries its epoch; its signal is one AbortSignal, live until the end', () => {
    const scope = epochScope(7);
    expect(scope.context.epoch).toBe(7);
    expect(scope.ended).toBe(false);
    const signal = scope.context.signal;
    expect(signal).toBeInstanceOf(AbortSignal);
    expect(scope.context.signal).toBe(signal);
    expect(signal.aborted).toBe(false);
  });

  it('end() aborts a signal already made, with the reason built then', () => {
    const scope = epochScope(1);
    const signal = scope.context.signal;
    const reason = new EpochChangedError('epoch 1 is over');
    scope.end(() => reason);
    expect(scope.ended).toBe(true);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(reason);
  });

  it('a signal read after the end is born aborted; the reason is built only when someone reads it', () => {
    const scope = epochScope(1);
    let built = 0;
    const reason = new ClosedError('left');
    scope.end(() => {
      built++;
      return reason;
    });
    expect(built).toBe(0);
    const signal = scope.context.signal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(reason);
    expect(built).toBe(1);
    expect(scope.context.signal).toBe(signal);
    expect(built).toBe(1);
  });

  it('only the first end counts', () => {
    const scope = epochScope(1);
    const first = new ClosedError('first');
    scope.end(() => first);
    scope.end(() => new ClosedError('second'));
    expect(scope.context.signal.reason).toBe(first);
  });

  it('a spread copy of the context still has the signal, and sees the end', () => {
    const scope = epochScope(4);
    const copy: EpochContext = { ...scope.context };
    expect(copy.epoch).toBe(4);
    expect(copy.signal).toBe(scope.context.signal);
    const reason = new ClosedError('over');
    scope.end(() => reason);
    expect(copy.signal.aborted).toBe(true);
    expect(copy.signal.reason).toBe(reason);
  });

  it('any number of listeners may wait on the signal without a MaxListeners warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => void warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const signal = epochScope(1).context.signal;
      for (let i = 0; i < 50; i++) signal.addEventListener('abort', () => undefined);
      await turn();
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).not.toContain('MaxListenersExceededWarning');
  });
});

describe('EpochTracker', () => {
  let w: ReturnType<typeof memoryWorld>;
  afterEach(async () => {
    await w.close();
  });

  const enc = new TextEncoder();

  /** A tracker on a fresh job whose epoch key holds `epoch`, applied as the watch would. */
  async function tracked(epoch = 0) {
    w = memoryWorld();
    const coordinator = w.client();
    const key = keys.epoch(w.job);
    const version = await coordinator.create(key, enc.encode(String(epoch)));
    const changes: Array<[number, number]> = [];
    const stats = newStats();
    const logger = recordingLogger();
    const tracker = new EpochTracker({
      job: w.job,
      coordinator,
      clock: w.clock,
      logger,
      stats,
      onChange: (e, prev) => void changes.push([e, prev]),
    });
    tracker.apply(enc.encode(String(epoch)), version);
    return { tracker, coordinator, key, changes, stats, logger };
  }

  it('is at -1 until the first value; each new value ends the old context and calls onChange', async () => {
    w = memoryWorld();
    const seenInOnChange: Array<[number, number, boolean]> = [];
    const tracker: EpochTracker = new EpochTracker({
      job: w.job,
      coordinator: w.client(),
      clock: w.clock,
      logger: recordingLogger(),
      stats: newStats(),
      onChange: (e, prev) => void seenInOnChange.push([e, prev, tracker.context.epoch === e]),
    });
    expect(tracker.epoch).toBe(-1);
    const first = tracker.context;
    const firstSignal = first.signal;
    tracker.apply(enc.encode('3'), '10');
    expect(tracker.epoch).toBe(3);
    expect(tracker.context).not.toBe(first);
    expect(tracker.context.epoch).toBe(3);
    expect(firstSignal.aborted).toBe(true);
    const old = tracker.context;
    tracker.apply(enc.encode('4'), '11');
    expect(seenInOnChange).toEqual([
      [3, -1, true],
      [4, 3, true],
    ]);
    // The old context, read only now, is born aborted with the end's reason.
    const reason: unknown = old.signal.reason;
    expect(reason).toBeInstanceOf(EpochChangedError);
    expect((reason as EpochChangedError).message).toBe('epoch 3 is over');
    expect((reason as EpochChangedError).currentEpoch).toBe(4);
    // Built without a stack trace: only the first line.
    expect((reason as Error).stack?.split('\n')).toHaveLength(1);
  });

  it('the same epoch again changes nothing but the version it knows', async () => {
    const { tracker, coordinator, key, changes } = await tracked(2);
    const ctx = tracker.context;
    // Someone rewrote the same epoch: the watch brings the new version.
    const now = await coordinator.get(key);
    const rewritten = await coordinator.update(key, enc.encode('2'), now!.version);
    tracker.apply(enc.encode('2'), rewritten);
    expect(changes).toEqual([[2, -1]]);
    expect(tracker.context).toBe(ctx);
    expect(ctx.signal.aborted).toBe(false);
    // The advance uses the new version without a read: it succeeds with reads failing.
    coordinator.faults.add({ op: 'get', error: () => new InvalidArgumentError('no read expected') });
    await tracker.advance(ctx, () => undefined);
    expect(w.text(key)).toBe('3');
  });

  it('follows an epoch that went backwards, and logs it as an error', async () => {
    const { tracker, changes, logger } = await tracked(5);
    tracker.apply(enc.encode('2'), '99');
    expect(tracker.epoch).toBe(2);
    expect(changes).toEqual([
      [5, -1],
      [2, 5],
    ]);
    expect(logger.lines).toEqual([
      { level: 'error', message: 'the epoch went backwards in the store (restored from an old backup?); following it', fields: { from: 5, to: 2 } },
    ]);
  });

  it('a corrupt value throws DecodeFailedError and changes nothing', async () => {
    const { tracker, changes } = await tracked(1);
    const ctx = tracker.context;
    expect(() => tracker.apply(enc.encode('one'), '50')).toThrow(expect.objectContaining({ code: 'DECODE_FAILED' }));
    expect(tracker.epoch).toBe(1);
    expect(tracker.context).toBe(ctx);
    expect(changes).toEqual([[1, -1]]);
  });

  it('end() ends the current context for good, with the given reason', async () => {
    const { tracker } = await tracked(1);
    const ctx = tracker.context;
    const why = new ClosedError('the node is leaving');
    tracker.end(why);
    expect(ctx.signal.reason).toBe(why);
    // Checking it now: the shape is fine, alive() is asked, then the abort is the answer.
    let asked = 0;
    expect(() => tracker.check(ctx, () => void asked++)).toThrow(why);
    expect(asked).toBe(1);
  });

  describe('check(ctx, alive)', () => {
    it('passes the current context, a spread copy of it, and a live hand-made context of the current epoch', async () => {
      const { tracker } = await tracked(3);
      let asked = 0;
      const alive = () => void asked++;
      tracker.check(tracker.context, alive);
      tracker.check({ ...tracker.context }, alive);
      tracker.check({ epoch: 3, signal: new AbortController().signal }, alive);
      expect(asked).toBe(3);
    });

    it('refuses what is not a context with InvalidArgumentError, before asking alive()', async () => {
      const { tracker } = await tracked(3);
      let asked = 0;
      const alive = () => void asked++;
      const notContexts: unknown[] = [undefined, null, {}, { epoch: '3', signal: new AbortController().signal }, { epoch: 3, signal: {} }, { epoch: 3 }];
      for (const bad of notContexts) {
        expect(() => tracker.check(bad as EpochContext, alive)).toThrow(InvalidArgumentError);
        expect(() => tracker.check(bad as EpochContext, alive)).toThrow('pass the EpochContext your callback received');
      }
      expect(asked).toBe(0);
    });

    it('asks alive() after the shape: a node that left refuses even the current context', async () => {
      const { tracker } = await tracked(3);
      const left = new ClosedError('the node has left');
      const alive = () => {
        throw left;
      };
      expect(() => tracker.check(tracker.context, alive)).toThrow(left);
      expect(() => tracker.check({ epoch: 2, signal: new AbortController().signal }, alive)).toThrow(left);
    });

    it('refuses an old epoch’s context (or a copy) with the reason its signal carries', async () => {
      const { tracker } = await tracked(3);
      const old = tracker.context;
      const copy = { ...old };
      tracker.apply(enc.encode('4'), '77');
      for (const ctx of [old, copy]) {
        let err: unknown;
        try {
          tracker.check(ctx, () => undefined);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(EpochChangedError);
        expect((err as EpochChangedError).currentEpoch).toBe(4);
      }
    });

    it('refuses a live context of another epoch with EpochChangedError naming both epochs', async () => {
      const { tracker } = await tracked(3);
      let err: unknown;
      try {
        tracker.check({ epoch: 1, signal: new AbortController().signal }, () => undefined);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as EpochChangedError).message).toBe('epoch 1 is over (the job is in epoch 3)');
      expect((err as EpochChangedError).details).toEqual({ current: 3, requested: 1 });
    });

    it('an aborted hand-made context is refused with its reason', async () => {
      const { tracker } = await tracked(3);
      const ctrl = new AbortController();
      const reason = new LeaseLostError('gone');
      ctrl.abort(reason);
      expect(() => tracker.check({ epoch: 3, signal: ctrl.signal }, () => undefined)).toThrow(reason);
    });
  });

  describe('advance(ctx)', () => {
    it('moves the job to the next epoch with one compare-and-set on the watched version (no read)', async () => {
      const { tracker, coordinator, key, stats, logger } = await tracked(6);
      const noRead = coordinator.faults.add({ op: 'get', error: () => new InvalidArgumentError('no read expected') });
      let checks = 0;
      await tracker.advance(tracker.context, () => void checks++);
      expect(w.text(key)).toBe('7');
      expect(noRead.hits).toBe(0);
      expect(checks).toBe(1);
      expect(stats.writes.epoch).toBe(1);
      expect(logger.lines).toContainEqual({ level: 'debug', message: 'epoch advanced', fields: { from: 6, to: 7 } });
      // The tracker follows the store only through apply(): it still says 6.
      expect(tracker.epoch).toBe(6);
    });

    it('someone advanced first (the watch has not said so yet): EpochChangedError with the stored epoch', async () => {
      const { tracker, coordinator, key, stats } = await tracked(6);
      const e = await coordinator.get(key);
      await w.client().update(key, enc.encode('7'), e!.version);
      const err = await rejectionOf(tracker.advance(tracker.context, () => undefined));
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as EpochChangedError).details).toEqual({ current: 7, requested: 6 });
      expect(w.text(key)).toBe('7');
      expect(stats.writes.epoch).toBe(1);
    });

    it('the tracker moved on: EpochChangedError without writing', async () => {
      const { tracker, key, stats } = await tracked(6);
      const old = tracker.context;
      tracker.apply(enc.encode('7'), '123');
      const err = await rejectionOf(tracker.advance(old, () => undefined));
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as EpochChangedError).details).toEqual({ current: 7, requested: 6 });
      expect(stats.writes.epoch).toBe(0);
      expect(w.text(key)).toBe('6');
    });

    it('two trackers advancing from the same epoch: one wins, the other gets EpochChangedError', async () => {
      const a = await tracked(0);
      const other = new EpochTracker({
        job: w.job,
        coordinator: w.client(),
        clock: w.clock,
        logger: recordingLogger(),
        stats: newStats(),
        onChange: () => undefined,
      });
      const e = await a.coordinator.get(a.key);
      other.apply(e!.value, e!.version);
      const results = await Promise.allSettled([a.tracker.advance(a.tracker.context, () => undefined), other.advance(other.context, () => undefined)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(lost?.reason).toBeInstanceOf(EpochChangedError);
      expect(w.text(a.key)).toBe('1');
    });

    it('a missing epoch key is repaired by the advance: the next epoch is created, the repair logged with its key', async () => {
      const { tracker, coordinator, key, logger, stats } = await tracked(2);
      const e = await coordinator.get(key);
      await coordinator.delete(key, e!.version);
      await tracker.advance(tracker.context, () => undefined);
      expect(w.text(key)).toBe('3');
      // The first write (an update of the version the watch gave) found no key; then the create.
      expect(stats.writes.epoch).toBe(2);
      expect(logger.lines.filter((l) => l.level !== 'debug').map((l) => [l.level, l.message, l.fields['key']])).toEqual([
        ['warn', 'repairing a missing epoch key while advancing from the last readable epoch', key],
      ]);
    });

    it('a corrupt stored epoch is repaired by the advance from the last readable epoch, by compare-and-set on the corrupt value', async () => {
      const { tracker, coordinator, key, logger } = await tracked(2);
      const e = await coordinator.get(key);
      await coordinator.update(key, enc.encode('banana'), e!.version);
      await tracker.advance(tracker.context, () => undefined);
      expect(w.text(key)).toBe('3');
      expect(logger.lines.filter((l) => l.level !== 'debug').map((l) => [l.level, l.message, l.fields['epoch']])).toEqual([
        ['warn', 'repairing a corrupt epoch key while advancing from the last readable epoch', 2],
      ]);
    });

    it('an epoch that jumps by more than one is reported, and followed', async () => {
      const { tracker, coordinator, key, logger, changes } = await tracked(2);
      const e = await coordinator.get(key);
      const v = await coordinator.update(key, enc.encode('7'), e!.version);
      tracker.apply(enc.encode('7'), v);
      expect(tracker.epoch).toBe(7);
      expect(changes).toEqual([
        [2, -1],
        [7, 2],
      ]);
      expect(logger.lines.map((l) => [l.level, l.message, l.fields['from'], l.fields['to']])).toEqual([
        ['warn', 'the epoch jumped by more than one in the store; following it', 2, 7],
      ]);
    });

    it('beforeWrite throwing stops it before the write', async () => {
      const { tracker, key, stats } = await tracked(2);
      const lost = new LeaseLostError('incEpoch: lost');
      expect(
        await rejectionOf(
          tracker.advance(tracker.context, () => {
            throw lost;
          }),
        ),
      ).toBe(lost);
      expect(stats.writes.epoch).toBe(0);
      expect(w.text(key)).toBe('2');
    });
  });

  it('changed() names the epoch asked and the current one', async () => {
    const { tracker } = await tracked(9);
    const mine = tracker.changed(4);
    expect(mine.message).toBe('epoch 4 is over (the job is in epoch 9)');
    expect(mine.details).toEqual({ current: 9, requested: 4 });
    const theirs = tracker.changed(4, 12);
    expect(theirs.currentEpoch).toBe(12);
    expect(theirs.details).toEqual({ current: 12, requested: 4 });
  });
});
