import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, TaskGraphError } from '@taskgraph/api';
import type { InboundRequest } from '@taskgraph/api';
import type { LocalServer } from '@taskgraph/transport-local';
import type { World } from './helpers.js';
import { hops, meta, sequence, text, track, untext, world } from './helpers.js';

let w: World;

afterEach(async () => {
  await w.close();
  expect(w.clock.pendingTimers()).toEqual([]);
});

/** Two nodes; `a` serves "m" and "n", counting runs and echoing the payload with the method's name. */
async function setup(options: Parameters<typeof world>[0] = {}) {
  w = world(options);
  const a = w.node();
  const b = w.node();
  const runs: InboundRequest[] = [];
  const server = await a.listen({
    methods: ['m', 'n'],
    handler: async (req) => {
      runs.push(req);
      return text(`${req.method}:${untext(req.payload)}`);
    },
  });
  const call = (method = 'm', timeoutMs = 1_000, to: LocalServer = server) =>
    b.call(to.address, method, meta(), text('x'), { timeoutMs });
  return { a, b, server, runs, call };
}

function expectCode(error: unknown, code: string): void {
  expect(TaskGraphError.is(error), `expected a TaskGraphError, got ${String(error)}`).toBe(true);
  expect((error as TaskGraphError).code).toBe(code);
}

describe('dropRequests', () => {
  it('loses the request: the handler never runs and the caller sees its deadline', async () => {
    const { server, runs, call } = await setup();
    const fault = w.network.dropRequests({ address: server.address });
    const outcome = track(call('m', 1_000));
    await hops();
    await w.clock.advance(999);
    expect(outcome.state).toBe('pending');
    await w.clock.advance(1);
    expect(outcome.state).toBe('rejected');
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    expect(runs).toHaveLength(0);
    expect(fault.hits).toBe(1);
    expect(w.network.stats(server.address)).toMatchObject({ sent: 1, droppedRequests: 1, delivered: 0, answered: 0 });
  });

  it('stops after `count` hits and is then spent', async () => {
    const { runs, call } = await setup();
    const fault = w.network.dropRequests({ count: 2 });
    const first = track(call());
    const second = track(call());
    expect(untext(await call())).toBe('m:x');
    expect(fault.hits).toBe(2);
    expect(fault.active).toBe(false);
    expect(w.network.faults()).toEqual([]);
    expect(runs).toHaveLength(1);
    await w.clock.advance(1_000);
    expectCode(first.error, ErrorCodes.DeadlineExceeded);
    expectCode(second.error, ErrorCodes.DeadlineExceeded);
  });

  it('hits a call with its probability, drawn from the network\'s random()', async () => {
    const { runs, call } = await setup({ random: sequence(0.1, 0.9, 0.3, 0.7) });
    const fault = w.network.dropRequests({ probability: 0.5 });
    const outcomes = [track(call()), track(call()), track(call()), track(call())];
    await hops();
    await w.clock.advance(1_000);
    expect(outcomes.map((o) => o.state)).toEqual(['rejected', 'resolved', 'rejected', 'resolved']);
    expect(fault.hits).toBe(2);
    expect(runs).toHaveLength(2);
    expect(w.network.stats()).toMatchObject({ sent: 4, droppedRequests: 2, delivered: 2, answered: 2 });
  });

  it('only hits calls to its address and of its method', async () => {
    const { a, server, runs, call } = await setup();
    const other = await a.listen({ methods: ['m'], handler: async () => text('other') });
    w.network.dropRequests({ address: server.address, method: 'm' });
    expect(untext(await call('n'))).toBe('n:x');
    expect(untext(await call('m', 1_000, other))).toBe('other');
    const dropped = track(call('m'));
    await hops();
    await w.clock.advance(1_000);
    expectCode(dropped.error, ErrorCodes.DeadlineExceeded);
    expect(runs.map((r) => r.method)).toEqual(['n']);
    expect(w.network.stats(other.address)).toMatchObject({ sent: 1, delivered: 1, droppedRequests: 0 });
    expect(w.network.stats(server.address)).toMatchObject({ sent: 2, delivered: 1, droppedRequests: 1 });
  });

  it('stops hitting once removed', async () => {
    const { call } = await setup();
    const fault = w.network.dropRequests();
    expect(w.network.faults()).toEqual([fault]);
    fault.remove();
    fault.remove();
    expect(fault.active).toBe(false);
    expect(w.network.faults()).toEqual([]);
    expect(untext(await call())).toBe('m:x');
    expect(fault.hits).toBe(0);
  });
});

describe('dropResponses', () => {
  it('runs the handler but the caller never hears: a retry runs it again (at-least-once)', async () => {
    const { server, runs, b } = await setup();
    const fault = w.network.dropResponses({ count: 1 });
    const m = meta({ requestId: 'same-request' });
    const first = track(b.call(server.address, 'm', m, text('x'), { timeoutMs: 1_000 }));
    await hops();
    expect(runs).toHaveLength(1);
    await w.clock.advance(1_000);
    expectCode(first.error, ErrorCodes.DeadlineExceeded);
    expect(untext(await b.call(server.address, 'm', m, text('x'), { timeoutMs: 1_000 }))).toBe('m:x');
    expect(runs.map((r) => r.meta.requestId)).toEqual(['same-request', 'same-request']);
    expect(fault.hits).toBe(1);
    expect(w.network.stats(server.address)).toMatchObject({ sent: 2, delivered: 2, droppedResponses: 1, answered: 1 });
  });

  it('also drops error answers', async () => {
    const { call } = await setup();
    w.network.dropResponses({ method: 'zzz' });
    w.network.dropResponses();
    const unknown = track(call('zzz'));
    await hops();
    await w.clock.advance(1_000);
    expectCode(unknown.error, ErrorCodes.DeadlineExceeded);
    expect(w.network.stats()).toMatchObject({ rejected: 1, droppedResponses: 1 });
  });
});

describe('delays', () => {
  it('holds a request back by a fixed delay', async () => {
    const { runs, call } = await setup();
    const fault = w.network.delayRequests({ ms: 500 });
    const outcome = track(call('m', 10_000));
    await hops();
    await w.clock.advance(499);
    expect(runs).toHaveLength(0);
    await w.clock.advance(1);
    expect(runs).toHaveLength(1);
    await hops();
    expect(outcome.state).toBe('resolved');
    expect(fault.hits).toBe(1);
    expect(w.network.stats()).toMatchObject({ delayedRequests: 1, delayedResponses: 0, delivered: 1, answered: 1 });
  });

  it('draws a delay from a [min, max] range with random()', async () => {
    const { runs, call } = await setup({ random: () => 0.25 });
    w.network.delayRequests({ ms: [100, 500] });
    track(call('m', 10_000));
    await hops();
    await w.clock.advance(199);
    expect(runs).toHaveLength(0);
    await w.clock.advance(1);
    expect(runs).toHaveLength(1);
  });

  it('holds an answer back: the handler has run, the caller waits', async () => {
    const { runs, call } = await setup();
    w.network.delayResponses({ ms: 300 });
    const outcome = track(call('m', 10_000));
    await hops();
    expect(runs).toHaveLength(1);
    await w.clock.advance(299);
    expect(outcome.state).toBe('pending');
    await w.clock.advance(1);
    expect(outcome.state).toBe('resolved');
    expect(w.network.stats()).toMatchObject({ delayedResponses: 1, answered: 1 });
  });

  it('adds up the delays of every matching fault', async () => {
    const { runs, call } = await setup();
    w.network.delayRequests({ ms: 100 });
    w.network.delayRequests({ ms: 200, method: 'm' });
    w.network.delayRequests({ ms: 5_000, method: 'n' });
    track(call('m', 10_000));
    await hops();
    await w.clock.advance(299);
    expect(runs).toHaveLength(0);
    await w.clock.advance(1);
    expect(runs).toHaveLength(1);
  });

  it('a request delayed past the deadline is abandoned, and its timer goes with the call', async () => {
    const { runs, call } = await setup();
    w.network.delayRequests({ ms: 5_000 });
    const outcome = track(call('m', 1_000));
    await hops();
    await w.clock.advance(1_000);
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    expect(w.clock.pendingTimers()).toEqual([]);
    expect(runs).toHaveLength(0);
    expect(w.network.stats()).toMatchObject({ sent: 1, delayedRequests: 1, abandoned: 1, delivered: 0 });
  });

  it('an answer delayed past the deadline is late', async () => {
    const { runs, call } = await setup();
    w.network.delayResponses({ ms: 5_000 });
    const outcome = track(call('m', 1_000));
    await hops();
    await w.clock.advance(1_000);
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    expect(runs).toHaveLength(1);
    expect(w.clock.pendingTimers()).toEqual([]);
    expect(w.network.stats()).toMatchObject({ delivered: 1, delayedResponses: 1, late: 1, answered: 0 });
  });
});

describe('disconnect', () => {
  it('refuses calls with UnavailableError until reconnected; the handler never runs', async () => {
    const { server, runs, call } = await setup();
    w.network.disconnect(server.address);
    expect(w.network.isDisconnected(server.address)).toBe(true);
    const err = await call().catch((e: unknown) => e);
    expectCode(err, ErrorCodes.Unavailable);
    expect((err as TaskGraphError).retryable).toBe(true);
    expect((err as TaskGraphError).message).toMatch(/disconnected/);
    expect(runs).toHaveLength(0);
    w.network.reconnect(server.address);
    expect(w.network.isDisconnected(server.address)).toBe(false);
    expect(untext(await call())).toBe('m:x');
    expect(w.network.stats(server.address)).toMatchObject({ sent: 2, refused: 1, delivered: 1, answered: 1 });
  });

  it('loses the answers of calls running when the address is cut off', async () => {
    w = world();
    const a = w.node();
    const b = w.node();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started = false;
    const server = await a.listen({
      methods: ['hold'],
      handler: async () => {
        started = true;
        await released;
        return text('done');
      },
    });
    const outcome = track(b.call(server.address, 'hold', meta(), text('x'), { timeoutMs: 1_000 }));
    await hops();
    expect(started).toBe(true);
    w.network.disconnect(server.address);
    release();
    await hops();
    expect(outcome.state).toBe('pending');
    await w.clock.advance(1_000);
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    expect(w.network.stats(server.address)).toMatchObject({ delivered: 1, droppedResponses: 1, answered: 0 });
  });

  it('clearFaults removes every fault and reconnects every address', async () => {
    const { server, call } = await setup();
    const drop = w.network.dropRequests();
    w.network.delayResponses({ ms: 10 });
    w.network.disconnect(server.address);
    w.network.clearFaults();
    expect(w.network.faults()).toEqual([]);
    expect(drop.active).toBe(false);
    expect(w.network.isDisconnected(server.address)).toBe(false);
    expect(untext(await call())).toBe('m:x');
  });
});

describe('stats', () => {
  it('counts per address and in total, and resets', async () => {
    const { a, b, server, call } = await setup();
    const other = await a.listen({ methods: ['m'], handler: async () => text('o') });
    await call('m');
    await call('zzz').catch(() => undefined);
    await call('m', 1_000, other);
    await b.call('local://no-such-server', 'm', meta(), text('x'), { timeoutMs: 1_000 }).catch(() => undefined);
    expect(w.network.stats(server.address)).toEqual({
      sent: 2,
      delivered: 1,
      rejected: 1,
      refused: 0,
      droppedRequests: 0,
      droppedResponses: 0,
      duplicatedRequests: 0,
      delayedRequests: 0,
      delayedResponses: 0,
      cut: 0,
      answered: 2,
      late: 0,
      abandoned: 0,
    });
    expect(w.network.stats('local://no-such-server')).toMatchObject({ sent: 1, refused: 1 });
    expect(w.network.stats()).toMatchObject({ sent: 4, delivered: 2, rejected: 1, refused: 1, answered: 3 });
    const snapshot = w.network.stats();
    await call('m');
    expect(snapshot.sent).toBe(4);
    w.network.resetStats();
    expect(w.network.stats()).toMatchObject({ sent: 0, delivered: 0, answered: 0 });
    expect(w.network.stats(server.address).sent).toBe(0);
  });

  it('counts answers that come after the caller gave up as late', async () => {
    w = world();
    const a = w.node();
    const b = w.node();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const server = await a.listen({
      methods: ['slow'],
      handler: async () => {
        await released;
        return text('late');
      },
    });
    const outcome = track(b.call(server.address, 'slow', meta(), text('x'), { timeoutMs: 100 }));
    await hops();
    await w.clock.advance(100);
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    release();
    await hops();
    expect(w.network.stats(server.address)).toMatchObject({ delivered: 1, late: 1, answered: 0 });
  });
});

describe('fault options', () => {
  it('rejects bad options with InvalidArgumentError', async () => {
    w = world();
    const bad: (() => unknown)[] = [
      () => w.network.dropRequests({ probability: 1.5 }),
      () => w.network.dropRequests({ probability: Number.NaN }),
      () => w.network.dropRequests({ count: 0 }),
      () => w.network.dropRequests({ count: 1.5 }),
      () => w.network.dropResponses({ address: '127.0.0.1:4000' }),
      () => w.network.dropResponses({ method: 'not a method' }),
      () => w.network.delayRequests({ ms: -1 }),
      () => w.network.delayRequests({ ms: [5, 1] }),
      () => w.network.delayResponses({ ms: Number.POSITIVE_INFINITY }),
      () => w.network.delayResponses({} as never),
      () => w.network.disconnect('node-1'),
      () => w.network.stats('node-1'),
    ];
    for (const f of bad) {
      let caught: unknown;
      try {
        f();
      } catch (err) {
        caught = err;
      }
      expect(TaskGraphError.is(caught, ErrorCodes.InvalidArgument), `${f.toString()} must throw InvalidArgumentError`).toBe(true);
    }
    expect(w.network.faults()).toEqual([]);
  });
});
