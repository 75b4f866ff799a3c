import { InvalidArgumentError, UnavailableError } from '@taskgraph/api';
import type { EpochContext, Task } from '@taskgraph/api';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { AddressBook } from '../src/address-book.js';
import { defineMethod, serve } from '../src/codec.js';
import { EpochTracker } from '../src/epoch.js';
import { META_GENERATION_EPOCHS, encodeJson, keys } from '../src/layout.js';
import { RunningTask } from '../src/running-task.js';
import { newStats } from '../src/stats.js';
import { recordingTask } from './helpers.js';
import { FlakyCoordinator, bytes, gate, memoryWorld, recordingLogger, track, turn } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
afterEach(async () => {
  await w.close();
});

const double = defineMethod<number, number>('double');
const half = defineMethod<number, number>('half');

/**
 * Task 1 (incarnation 3) claimed with a real lock, on a real epoch tracker at epoch 0
 * whose changes reach the running task as the node passes them on.
 */
async function setup(extra: Partial<Task> = {}) {
  w = memoryWorld();
  const inner = w.client();
  const coordinator = new FlakyCoordinator(inner);
  const session = await inner.openSession({ ttlMs: 1000 });
  const lock = (await inner.tryAcquire(keys.taskLock(w.job, 1), session))!;
  const state = { serving: true };
  const errors: unknown[] = [];
  const log: string[] = [];
  const contexts: EpochContext[] = [];
  const task = recordingTask(log, {
    enterEpoch: (ctx, e) => {
      contexts.push(ctx);
      log.push(`epoch ${e}`);
    },
    metaReady: (ctx, from, lt, meta) => {
      contexts.push(ctx);
      log.push(`meta ${from} ${lt} ${meta}`);
    },
    ...extra,
  });
  const logger = recordingLogger();
  const box: { running?: RunningTask } = {};
  const tracker = new EpochTracker({
    job: w.job,
    coordinator,
    clock: w.clock,
    logger,
    stats: newStats(),
    onChange: (e) => box.running?.onEpochChange(e, state.serving),
  });
  const setEpoch = (e: number) => tracker.apply(bytes(String(e)), String(e + 1));
  setEpoch(0);
  const addresses = new AddressBook(w.job, { forget: () => undefined }, logger);
  const stats = newStats();
  const running = new RunningTask(
    {
      job: w.job,
      nodeId: 'node-a',
      coordinator,
      session,
      clock: w.clock,
      stats,
      epochs: tracker,
      addresses,
      transport: await createLocalTransport({ network: new LocalNetwork() }),
      attemptTimeoutMs: 5000,
      linkages: new Map(),
      isServing: (r) => state.serving && r === box.running,
      onCallbackError: (err) => void errors.push(err),
      assertOwner: () => undefined,
      metaPush: false,
    },
    { id: 1, lock, incarnation: 3, task, logger, seq: 0 },
  );
  box.running = running;
  /** Waits until the callback queue has run everything queued so far. */
  const drained = async () => {
    const done = gate();
    running.enqueue(tracker.epoch, () => done.open());
    await done.promise;
  };
  return { running, tracker, setEpoch, state, errors, log, contexts, logger, lock, task, coordinator, inner, session, drained, stats };
}

describe('RunningTask', () => {
  it('holds the claim: id, lock and its token in decimal, incarnation, task, logger', async () => {
    const { running, lock, task, logger } = await setup();
    expect(running.id).toBe(1);
    expect(running.lock).toBe(lock);
    expect(running.token).toBe(lock.token.toString());
    expect(running.token).toMatch(/^\d+$/);
    expect(running.incarnation).toBe(3);
    expect(running.task).toBe(task);
    expect(running.logger).toBe(logger);
    expect([...running.methods.keys()]).toEqual([]);
  });

  describe('declareMethods', () => {
    it('reads the methods the task declares (after its init)', async () => {
      const d = serve(double, (_c, n) => n * 2);
      const h = serve(half, (_c, n) => n / 2);
      const { running, task } = await setup({ methods: [d, h] });
      expect(running.declareMethods()).toEqual(['double', 'half']);
      expect(running.methods.get('double')).toBe(d);
      expect(running.methods.get('half')).toBe(h);
      expect(task.methods).toHaveLength(2);
    });

    it('a task without methods serves none', async () => {
      const { running } = await setup();
      expect(running.declareMethods()).toEqual([]);
      expect(running.methods.size).toBe(0);
    });

    it('a name declared twice is InvalidArgumentError, and what was served stays', async () => {
      const methods = [serve(double, (_c, n) => n * 2)];
      const { running } = await setup({
        get methods() {
          return methods;
        },
      });
      running.declareMethods();
      methods.push(serve(double, (_c, n) => n * 3));
      expect(() => running.declareMethods()).toThrow(InvalidArgumentError);
      expect(() => running.declareMethods()).toThrow('task 1 declares method "double" twice');
      expect(running.methods.get('double')).toBe(methods[0]);
    });
  });

  describe('the callback queue', () => {
    it('runs callbacks one at a time, in order', async () => {
      const { running, log, drained } = await setup();
      const first = gate();
      running.enqueue(0, async () => {
        log.push('first starts');
        await first.promise;
        log.push('first ends');
      });
      running.enqueue(0, () => void log.push('second'));
      await eventually('the first callback', () => log.includes('first starts'));
      await turn();
      expect(log).toEqual(['first starts']);
      first.open();
      await drained();
      expect(log).toEqual(['first starts', 'first ends', 'second']);
    });

    it('drops a callback whose epoch is over at its turn', async () => {
      const { running, log, setEpoch, drained } = await setup();
      const first = gate();
      running.enqueue(0, async () => {
        await first.promise;
        log.push('first');
      });
      running.enqueue(0, () => void log.push('second, epoch 0'));
      await turn();
      setEpoch(1);
      first.open();
      await drained();
      expect(log).toEqual(['first', 'epoch 1']);
    });

    it('drops a callback when, at its turn, the node no longer runs the task', async () => {
      const { running, log, state, drained } = await setup();
      const first = gate();
      running.enqueue(0, async () => {
        await first.promise;
        log.push('first');
      });
      running.enqueue(0, () => void log.push('second'));
      await turn();
      state.serving = false;
      first.open();
      await eventually('the first callback', () => log.length === 1);
      state.serving = true;
      await drained();
      expect(log).toEqual(['first']);
    });

    it('a callback that throws is reported once; the next ones still run', async () => {
      const { running, log, errors, drained } = await setup();
      const boom = new Error('callback bug');
      running.enqueue(0, () => {
        throw boom;
      });
      running.enqueue(0, () => void log.push('after'));
      await drained();
      expect(errors).toEqual([boom]);
      expect(log).toEqual(['after']);
    });
  });

  describe('epochs', () => {
    it('enterEpoch queues the task’s enterEpoch with the current context', async () => {
      const { running, log, contexts, tracker, drained } = await setup();
      running.enterEpoch(0);
      await drained();
      expect(log).toEqual(['epoch 0']);
      expect(contexts).toEqual([tracker.context]);
    });

    it('a new epoch: its enterEpoch first, then the metas that were held for it', async () => {
      const { running, log, contexts, tracker, setEpoch, drained } = await setup();
      running.inbox.event({ type: 'put', key: keys.meta(w.job, 1, 1, 0, 'Parents'), value: encodeJson({ token: '1', metas: ['hi'] }), version: '1' });
      await drained();
      expect(log).toEqual([]);
      setEpoch(1);
      await drained();
      expect(log).toEqual(['epoch 1', 'meta 0 Parents hi']);
      expect(contexts).toEqual([tracker.context, tracker.context]);
    });

    it('while the task is not served yet, an epoch change queues nothing; the node’s enterEpoch later releases the held metas', async () => {
      const { running, log, setEpoch, state, drained } = await setup();
      running.inbox.event({ type: 'put', key: keys.meta(w.job, 1, 1, 0, 'Parents'), value: encodeJson({ token: '1', metas: ['hi'] }), version: '1' });
      state.serving = false;
      setEpoch(1);
      state.serving = true;
      await drained();
      expect(log).toEqual([]);
      running.enterEpoch(1);
      await drained();
      expect(log).toEqual(['epoch 1', 'meta 0 Parents hi']);
    });

    it('deletes an old generation’s metas with one write, after the next generation’s first enterEpoch, and only generations that had any', async () => {
      const G = META_GENERATION_EPOCHS;
      const seenAtEnter: string[][] = [];
      const { running, setEpoch, coordinator, inner, drained, stats } = await setup({
        enterEpoch: () => void seenAtEnter.push(w.store.entries().map((e) => e.key)),
      });
      setEpoch(2);
      const meta = (epoch: number) => keys.meta(w.job, 1, epoch, 0, 'Parents');
      for (const e of [0, 1, 2]) await inner.create(meta(e), encodeJson({ token: '1', metas: ['m'] }));
      running.inbox.snapshot((await inner.list(keys.metaFor(w.job, 1))).entries);
      await drained();
      // Still generation 0: nothing goes.
      setEpoch(3);
      setEpoch(G - 1);
      await drained();
      expect(coordinator.deletedPrefixes).toEqual([]);
      setEpoch(G);
      await drained();
      await eventually('the old metas to go', () => coordinator.deletedPrefixes.length === 1 && w.text(meta(2)) === undefined);
      expect(coordinator.deletedPrefixes).toEqual([keys.metaGeneration(w.job, 1, 0)]);
      expect(stats.writes.metaCleanup).toBe(1);
      // At the new generation's first enterEpoch they were all still there.
      expect(seenAtEnter.at(-1)?.filter((k) => k.includes('/meta/'))).toHaveLength(3);
      setEpoch(2 * G + 1);
      await drained();
      expect(coordinator.deletedPrefixes).toHaveLength(1);
    });

    it('a failed deletion is logged at debug, not reported as a callback failure', async () => {
      const { running, setEpoch, inner, errors, logger, drained } = await setup();
      running.inbox.event({ type: 'put', key: keys.meta(w.job, 1, 0, 0, 'Parents'), value: encodeJson({ token: '1', metas: ['m'] }), version: '1' });
      await drained();
      inner.faults.add({ op: 'deletePrefix', error: () => new UnavailableError('down') });
      setEpoch(META_GENERATION_EPOCHS);
      await drained();
      await eventually('the debug line', () => logger.lines.some((l) => l.message === 'could not delete an old meta generation (its metas are ignored)'));
      expect(logger.lines.find((l) => l.message.startsWith('could not delete'))).toMatchObject({ level: 'debug', fields: { generation: 0 } });
      expect(errors).toEqual([]);
    });

    it('no clean-up while the task is not served: the generations are kept for a later change', async () => {
      const { running, setEpoch, state, coordinator, drained } = await setup();
      running.inbox.event({ type: 'put', key: keys.meta(w.job, 1, 0, 0, 'Parents'), value: encodeJson({ token: '1', metas: ['m'] }), version: '1' });
      state.serving = false;
      setEpoch(META_GENERATION_EPOCHS);
      state.serving = true;
      await drained();
      expect(coordinator.deletedPrefixes).toEqual([]);
      setEpoch(META_GENERATION_EPOCHS + 1);
      await drained();
      await eventually('the deletion', () => coordinator.deletedPrefixes.length === 1);
      expect(coordinator.deletedPrefixes).toEqual([keys.metaGeneration(w.job, 1, 0)]);
    });
  });

  describe('close', () => {
    it('drops what has not started, calls exit() once, and takes nothing afterwards', async () => {
      const { running, log } = await setup();
      running.enqueue(0, () => void log.push('queued'));
      await running.close(1000);
      running.enqueue(0, () => void log.push('after close'));
      running.enterEpoch(0);
      await turn();
      expect(log).toEqual(['exit']);
    });

    it('called by the task from inside the running callback, it does not wait for that callback', async () => {
      const { running, log } = await setup();
      const done = gate();
      running.enqueue(0, async () => {
        await running.close(60_000, { fromTask: true });
        log.push('close returned inside');
        done.open();
      });
      running.enqueue(0, () => void log.push('queued'));
      await done.promise;
      expect(log).toEqual(['exit', 'close returned inside']);
    });

    it('called from outside while a callback runs, it gives that callback graceMs (plus a second) before exit()', async () => {
      const { running, log } = await setup();
      const held = gate();
      running.enqueue(0, async () => {
        log.push('callback starts');
        await held.promise;
        log.push('callback ends');
      });
      await eventually('the callback', () => log.length === 1);
      const closing = track(running.close(1000));
      await turn();
      held.open();
      await closing.promise;
      expect(log).toEqual(['callback starts', 'callback ends', 'exit']);
    });

    it('an exit() that throws is logged; close still resolves', async () => {
      const { running, logger } = await setup({
        exit: () => {
          throw new Error('exit bug');
        },
      });
      await running.close(0);
      expect(logger.lines.filter((l) => l.level === 'warn')).toEqual([{ level: 'warn', message: 'task exit() threw', fields: { error: 'exit bug' } }]);
    });
  });
});
