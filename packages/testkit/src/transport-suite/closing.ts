/** Closing: a server drains or cuts its calls; a closed transport refuses everything; nothing is left open. */
import assert from 'node:assert/strict';
import { ErrorCodes } from '@taskgraph/api';
import { eventually } from '../eventually.js';
import type { SuiteContext } from './context.js';
import { echo, serveAll } from './context.js';
import { aborted, deferred, describeError, makeMeta, rejectsWith, resourceCounts, resourceExcess, text, untext } from './helpers.js';

export function closingTests(s: SuiteContext): void {
  const { it, h, ms, patience, options } = s;

  it('server close lets calls in flight finish, refuses new ones with UnavailableError, then stays closed', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const release = deferred();
    let started = 0;
    const server = await serveAll(a, {
      hold: async (req) => {
        started++;
        await release.promise;
        return req.payload;
      },
      quick: () => text('quick'),
    });
    const settled: boolean[] = [];
    // Outcomes, not bare promises: a failure must not surface as an unhandled rejection mid-test.
    const inFlight = [0, 1, 2].map((i) => {
      settled[i] = false;
      return b.call(server.address, 'hold', makeMeta(), text(`p${i}`), { timeoutMs: ms(40_000) }).then(
        (out) => {
          settled[i] = true;
          return { out, err: undefined };
        },
        (err: unknown) => {
          settled[i] = true;
          return { out: undefined, err };
        },
      );
    });
    await eventually('three calls are running', () => started === 3, { timeoutMs: patience });
    let closed = false;
    const closing = server.close({ graceMs: ms(30_000) }).then(
      () => {
        closed = true;
      },
      (err: unknown) => assert.fail(`server close failed: ${describeError(err)}`),
    );
    const refused = await rejectsWith(
      b.call(server.address, 'quick', makeMeta(), text('late'), { timeoutMs: patience }),
      ErrorCodes.Unavailable,
      'a new call to a closing server',
    );
    assert.equal(refused.retryable, true);
    assert.deepEqual(settled, [false, false, false], 'calls in flight must wait for their handlers while the server closes');
    assert.equal(closed, false, 'close must wait for the calls in flight');
    release.resolve();
    const outcomes = await Promise.all(inFlight);
    outcomes.forEach(({ out, err }, i) => {
      assert.ok(out !== undefined, `call ${i} in flight during close failed: ${describeError(err)}`);
      assert.equal(untext(out), `p${i}`);
    });
    await closing;
    await rejectsWith(
      b.call(server.address, 'quick', makeMeta(), text('after'), { timeoutMs: patience }),
      ErrorCodes.Unavailable,
      'a call to a closed server',
    );
  });

  it('server close cuts calls still running after the grace period: UnavailableError, and the handler\'s signal aborts', async () => {
    const [a, b] = [await h.node(), await h.node()];
    let signal: AbortSignal | undefined;
    const server = await serveAll(a, {
      stuck: async (req) => {
        signal = req.signal;
        await aborted(req.signal);
        throw new Error('stopped');
      },
    });
    const pending = rejectsWith(
      b.call(server.address, 'stuck', makeMeta(), text('x'), { timeoutMs: ms(40_000) }),
      ErrorCodes.Unavailable,
      'a call cut by server close',
    );
    await eventually('the call is running', () => signal !== undefined, { timeoutMs: patience });
    const closing = server.close({ graceMs: ms(200) });
    const err = await pending;
    assert.equal(err.retryable, true, 'a call cut by a closing server may be retried elsewhere');
    await closing;
    assert.equal(signal?.aborted, true, 'the handler\'s signal must abort when the grace period ends');
  });

  it('transport close fails its pending calls and later calls with ClosedError, and cuts calls to its servers', async () => {
    const [a, b, c] = [await h.node(), await h.node(), await h.node()];
    const signals: AbortSignal[] = [];
    const server = await serveAll(a, {
      stuck: async (req) => {
        signals.push(req.signal);
        await aborted(req.signal);
        throw new Error('stopped');
      },
      echo,
    });
    // b's pending call fails with ClosedError when b closes; a's handler hears of it.
    const fromB = rejectsWith(
      b.call(server.address, 'stuck', makeMeta(), text('b'), { timeoutMs: ms(40_000) }),
      ErrorCodes.Closed,
      'a pending call of a closed transport',
    );
    await eventually('b\'s call is running', () => signals.length === 1, { timeoutMs: patience });
    await b.close();
    await fromB;
    await eventually('the handler\'s signal aborts when the caller\'s transport closes', () => signals[0]?.aborted === true, { timeoutMs: patience });
    await rejectsWith(b.call(server.address, 'echo', makeMeta(), text('x'), { timeoutMs: patience }), ErrorCodes.Closed, 'a call after close');
    await rejectsWith(b.listen({ handler: async () => new Uint8Array(0) }), ErrorCodes.Closed, 'listen after close');
    await b.close();

    // a's server is closed with it: c's call in flight is cut, later calls are refused.
    const fromC = rejectsWith(
      c.call(server.address, 'stuck', makeMeta(), text('c'), { timeoutMs: ms(40_000) }),
      ErrorCodes.Unavailable,
      'a call in flight at a closed transport\'s server',
    );
    await eventually('c\'s call is running', () => signals.length === 2, { timeoutMs: patience });
    await a.close();
    const cut = await fromC;
    assert.equal(cut.retryable, true);
    assert.equal(signals[1]?.aborted, true);
    await rejectsWith(c.call(server.address, 'echo', makeMeta(), text('x'), { timeoutMs: patience }), ErrorCodes.Unavailable, 'a call to a closed transport\'s server');
  });

  it('leaves no handles open once every transport is closed', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const server = await serveAll(a, {
      echo,
      slow: async (req) => {
        await aborted(req.signal);
        return new Uint8Array(0);
      },
    });
    await b.call(server.address, 'echo', makeMeta(), text('x'), { timeoutMs: patience });
    await b.call(server.address, 'slow', makeMeta(), text('x'), { timeoutMs: ms(100) }).catch(() => undefined);
    const controller = new AbortController();
    const pending = b.call(server.address, 'slow', makeMeta(), text('x'), { timeoutMs: patience, signal: controller.signal });
    controller.abort();
    await pending.catch(() => undefined);
    await b.call(await options.unreachableAddress(), 'echo', makeMeta(), text('x'), { timeoutMs: patience }).catch(() => undefined);
    const other = await serveAll(b, { echo });
    await a.call(other.address, 'echo', makeMeta(), text('y'), { timeoutMs: patience });
    await other.close({ graceMs: ms(1000) });
    await s.closeOpen();
    let excess: string[] = [];
    // On timeout the assertion below says which handles are left, better than the wait could.
    await eventually('no handles are left open', () => (excess = resourceExcess(s.baseline(), resourceCounts())).length === 0, { timeoutMs: patience }).catch(() => undefined);
    assert.deepEqual(excess, [], 'handles left open after closing every transport (type: now > before the suite)');
  });
}
