/** Deadlines and cancellation: a call's deadline and abort signal end it on both sides. */
import assert from 'node:assert/strict';
import { EpochChangedError, ErrorCodes } from '@taskgraph/api';
import { eventually } from '../eventually.js';
import type { SuiteContext } from './context.js';
import { serveAll } from './context.js';
import { aborted, deferred, describeError, makeMeta, rejectsWith, text, untext } from './helpers.js';

export function deadlineTests(s: SuiteContext): void {
  const { it, h, ms, patience } = s;

  it('fails a slow call with DeadlineExceededError and aborts the handler\'s signal', async () => {
    const [a, b] = [await h.node(), await h.node()];
    let signal: AbortSignal | undefined;
    const server = await serveAll(a, {
      slow: async (req) => {
        signal = req.signal;
        await aborted(req.signal);
        return text('too late');
      },
      quick: () => text('quick'),
    });
    const err = await rejectsWith(
      b.call(server.address, 'slow', makeMeta(), text('x'), { timeoutMs: ms(300) }),
      ErrorCodes.DeadlineExceeded,
      'a slow call',
    );
    assert.equal(err.retryable, true);
    await eventually('the handler\'s signal aborts after the caller\'s deadline', () => signal?.aborted === true, { timeoutMs: patience });
    assert.equal(untext(await b.call(server.address, 'quick', makeMeta(), text('x'), { timeoutMs: patience })), 'quick');
  });

  it('fails with AbortedError when the caller aborts, and aborts the handler\'s signal', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const started = deferred();
    let signal: AbortSignal | undefined;
    let runs = 0;
    const server = await serveAll(a, {
      wait: async (req) => {
        runs++;
        signal = req.signal;
        started.resolve();
        await aborted(req.signal);
        return text('unused');
      },
    });
    const controller = new AbortController();
    const pending = b.call(server.address, 'wait', makeMeta(), text('x'), { timeoutMs: patience, signal: controller.signal });
    await started.promise;
    controller.abort();
    const err = await rejectsWith(pending, ErrorCodes.Aborted, 'an aborted call');
    assert.equal(err.retryable, false);
    await eventually('the handler\'s signal aborts after the caller aborted', () => signal?.aborted === true, { timeoutMs: patience });

    // An already aborted signal: rejected without running the handler.
    await rejectsWith(
      b.call(server.address, 'wait', makeMeta(), text('x'), { timeoutMs: patience, signal: AbortSignal.abort() }),
      ErrorCodes.Aborted,
      'a call with an aborted signal',
    );
    // A TaskGraphError as the abort reason is what the call rejects with.
    const reason = new EpochChangedError('epoch 4 is over', { details: { current: 5 } });
    const second = new AbortController();
    const pending2 = b.call(server.address, 'wait', makeMeta(), text('x'), { timeoutMs: patience, signal: second.signal });
    await eventually('the second call reaches its handler', () => runs === 2, { timeoutMs: patience });
    second.abort(reason);
    let caught: unknown;
    await pending2.catch((e: unknown) => {
      caught = e;
    });
    assert.equal(caught, reason, `the call must reject with the signal's TaskGraphError reason, got ${describeError(caught)}`);
    assert.equal(runs, 2, 'the call with an already aborted signal must not run the handler');
  });
  it('one signal shared by many calls (an epoch\'s): aborting it cancels every call still in flight, and only those', async () => {
    const [a, b] = [await h.node(), await h.node()];
    let waiting = 0;
    const server = await serveAll(a, {
      quick: (req) => Promise.resolve(req.payload),
      wait: async (req) => {
        waiting++;
        await aborted(req.signal);
        return text('unused');
      },
    });
    const shared = new AbortController();
    const options = { timeoutMs: patience, signal: shared.signal };
    // Calls that finish before the abort are answered normally.
    for (let i = 0; i < 5; i++) assert.equal(untext(await b.call(server.address, 'quick', makeMeta(), text(`q${i}`), options)), `q${i}`);
    const pending = Array.from({ length: 6 }, () => b.call(server.address, 'wait', makeMeta(), text('x'), options));
    await eventually('all six calls reach their handler', () => waiting === 6, { timeoutMs: patience });
    const reason = new EpochChangedError('epoch 7 is over', { details: { current: 8 } });
    shared.abort(reason);
    for (const p of pending) {
      let caught: unknown;
      await p.catch((e: unknown) => {
        caught = e;
      });
      assert.equal(caught, reason, `every call sharing the signal rejects with its reason, got ${describeError(caught)}`);
    }
    // A new signal (the next epoch's) serves new calls.
    const next = new AbortController();
    assert.equal(untext(await b.call(server.address, 'quick', makeMeta(), text('n'), { timeoutMs: patience, signal: next.signal })), 'n');
  });
}
