import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, TaskGraphError } from '@taskgraph/api';
import type { InboundRequest } from '@taskgraph/api';
import { DeferringClock, ManualClock } from '@taskgraph/testkit';
import type { LocalServer, LocalTransport } from '@taskgraph/transport-local';
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


/** Every counter zero but those given: for exact comparisons of `stats()`. */
function counters(nonZero: Partial<ReturnType<World['network']['stats']>>) {
  return {
    sent: 0,
    delivered: 0,
    rejected: 0,
    refused: 0,
    droppedRequests: 0,
    droppedResponses: 0,
    duplicatedRequests: 0,
    delayedRequests: 0,
    delayedResponses: 0,
    cut: 0,
    answered: 0,
    late: 0,
    abandoned: 0,
    ...nonZero,
  };
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

describe('duplicateRequests', () => {
  it('runs the handler twice with the same request; the caller gets one answer, the first', async () => {
    w = world();
    const a = w.node();
    const b = w.node();
    const runs: InboundRequest[] = [];
    const server = await a.listen({
      methods: ['m'],
      handler: async (req) => {
        runs.push(req);
        return text(`run ${runs.length}`);
      },
    });
    const fault = w.network.duplicateRequests({ address: server.address });
    expect(fault.kind).toBe('duplicateRequest');
    const answer = await b.call(server.address, 'm', meta({ requestId: 'once' }), text('x'), { timeoutMs: 1_000 });
    expect(untext(answer)).toBe('run 1');
    await hops();
    expect(runs.map((r) => r.meta.requestId)).toEqual(['once', 'once']);
    expect(runs.map((r) => untext(r.payload))).toEqual(['x', 'x']);
    expect(fault.hits).toBe(1);
    expect(fault.active).toBe(true);
    expect(w.network.stats(server.address)).toEqual(counters({ sent: 1, delivered: 2, duplicatedRequests: 1, answered: 1, late: 1 }));
  });

  it('stops after `count` copies and is then spent', async () => {
    const { runs, b, server } = await setup();
    const fault = w.network.duplicateRequests({ count: 2 });
    for (const id of ['c1', 'c2', 'c3']) {
      expect(untext(await b.call(server.address, 'm', meta({ requestId: id }), text('x'), { timeoutMs: 1_000 }))).toBe('m:x');
    }
    await hops();
    expect(runs.map((r) => r.meta.requestId)).toEqual(['c1', 'c1', 'c2', 'c2', 'c3']);
    expect(fault.hits).toBe(2);
    expect(fault.active).toBe(false);
    expect(w.network.faults()).toEqual([]);
    expect(w.network.stats()).toEqual(counters({ sent: 3, delivered: 5, duplicatedRequests: 2, answered: 3, late: 2 }));
  });

  it("copies a call with its probability, drawn from the network's random()", async () => {
    const { runs, b, server } = await setup({ random: sequence(0.1, 0.9, 0.3, 0.7) });
    const fault = w.network.duplicateRequests({ probability: 0.5 });
    for (const id of ['c1', 'c2', 'c3', 'c4']) await b.call(server.address, 'm', meta({ requestId: id }), text('x'), { timeoutMs: 1_000 });
    await hops();
    expect(runs.map((r) => r.meta.requestId)).toEqual(['c1', 'c1', 'c2', 'c3', 'c3', 'c4']);
    expect(fault.hits).toBe(2);
    expect(w.network.stats()).toMatchObject({ sent: 4, delivered: 6, duplicatedRequests: 2, answered: 4, late: 2 });
  });

  it('only copies calls to its address and of its method', async () => {
    const { a, server, runs, call } = await setup();
    const other = await a.listen({ methods: ['m'], handler: async () => text('other') });
    w.network.duplicateRequests({ address: server.address, method: 'm' });
    await call('n');
    await call('m', 1_000, other);
    await call('m');
    await hops();
    expect(runs.map((r) => r.method)).toEqual(['n', 'm', 'm']);
    expect(w.network.stats(other.address)).toMatchObject({ delivered: 1, duplicatedRequests: 0 });
    expect(w.network.stats(server.address)).toMatchObject({ sent: 2, delivered: 3, duplicatedRequests: 1 });
  });

  it('delivers the copy `ms` after the original, on the clock, after the caller has its answer', async () => {
    const { server, runs, call } = await setup();
    w.network.duplicateRequests({ ms: 200 });
    const outcome = track(call('m', 1_000));
    await hops();
    expect(outcome.state).toBe('resolved');
    expect(untext(outcome.value!)).toBe('m:x');
    expect(runs).toHaveLength(1);
    expect(w.clock.pendingTimers().map((t) => t.dueAt)).toEqual([200]);
    await w.clock.advance(199);
    expect(runs).toHaveLength(1);
    expect(w.network.stats(server.address).duplicatedRequests).toBe(0);
    await w.clock.advance(1);
    expect(runs).toHaveLength(2);
    await hops();
    expect(w.network.stats(server.address)).toEqual(counters({ sent: 1, delivered: 2, duplicatedRequests: 1, answered: 1, late: 1 }));
  });

  it("draws the copy's delay from a [min, max] range with random()", async () => {
    const { runs, call } = await setup({ random: () => 0.25 });
    w.network.duplicateRequests({ ms: [100, 500] });
    await call('m', 1_000);
    expect(w.clock.pendingTimers().map((t) => t.dueAt)).toEqual([200]);
    await w.clock.advance(199);
    expect(runs).toHaveLength(1);
    await w.clock.advance(1);
    expect(runs).toHaveLength(2);
    await hops();
  });

  it('a copy comes after a delayed original, and is not recalled when the caller gives up', async () => {
    const { server, runs, call } = await setup();
    w.network.delayRequests({ ms: 5_000 });
    w.network.duplicateRequests({ ms: 1_000 });
    const outcome = track(call('m', 1_000));
    await hops();
    await w.clock.advance(1_000);
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    // The original's timer went with the call; the copy's is still on the wire.
    expect(w.clock.pendingTimers().map((t) => t.dueAt)).toEqual([6_000]);
    await w.clock.advance(4_999);
    expect(runs).toHaveLength(0);
    await w.clock.advance(1);
    expect(runs).toHaveLength(1);
    await hops();
    expect(w.network.stats(server.address)).toEqual(
      counters({ sent: 1, delayedRequests: 1, abandoned: 1, delivered: 1, duplicatedRequests: 1, late: 1 }),
    );
  });

  it("a copy that finds no server is lost: the caller still gets the original's answer", async () => {
    w = world();
    const a = w.node();
    const b = w.node();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let runs = 0;
    const server = await a.listen({
      methods: ['hold'],
      handler: async () => {
        runs++;
        await released;
        return text('done');
      },
    });
    w.network.duplicateRequests({ ms: 100 });
    const outcome = track(b.call(server.address, 'hold', meta(), text('x'), { timeoutMs: 10_000 }));
    await hops();
    expect(runs).toBe(1);
    const closing = server.close({ graceMs: 5_000 });
    await w.clock.advance(100);
    expect(outcome.state).toBe('pending');
    release();
    await closing;
    await hops();
    expect(outcome.state).toBe('resolved');
    expect(untext(outcome.value!)).toBe('done');
    expect(runs).toBe(1);
    expect(w.network.stats(server.address)).toEqual(counters({ sent: 1, delivered: 1, answered: 1 }));
  });
});

describe('from', () => {
  /** Three named nodes serving "m"; each handler records "<caller>-><server>". */
  async function triangle() {
    w = world();
    const seen: string[] = [];
    const nodes: Record<string, LocalTransport> = {};
    for (const name of ['a', 'b', 'c']) {
      const t = w.node({ name });
      nodes[name] = t;
      await t.listen({
        methods: ['m'],
        handler: async (req) => {
          seen.push(`${untext(req.payload)}->${name}`);
          return text(name);
        },
      });
    }
    const send = (from: string, to: string) => nodes[from]!.call(`local://${to}`, 'm', meta(), text(from), { timeoutMs: 1_000 });
    return { seen, send };
  }

  it('with an address, cuts one direction of one link: a->b lost, b->a, c->b and a->c fine', async () => {
    const { seen, send } = await triangle();
    const fault = w.network.dropRequests({ from: 'local://a', address: 'local://b' });
    expect(fault.from).toBe('local://a');
    const calls = [track(send('a', 'b')), track(send('b', 'a')), track(send('c', 'b')), track(send('a', 'c'))];
    await hops();
    expect(calls.map((c) => c.state)).toEqual(['pending', 'resolved', 'resolved', 'resolved']);
    expect(calls.slice(1).map((c) => untext(c.value!))).toEqual(['a', 'b', 'c']);
    await w.clock.advance(1_000);
    expectCode(calls[0]!.error, ErrorCodes.DeadlineExceeded);
    expect(seen).toEqual(['b->a', 'c->b', 'a->c']);
    expect(fault.hits).toBe(1);
    expect(w.network.stats('local://b')).toMatchObject({ sent: 2, droppedRequests: 1, delivered: 1, answered: 1 });
  });

  it('alone, hits every call the named transport makes (answers too), none of others, none of unnamed transports', async () => {
    const { seen, send } = await triangle();
    const unnamed = w.node();
    const fault = w.network.dropResponses({ from: 'local://a' });
    const calls = [
      track(send('a', 'b')),
      track(send('a', 'c')),
      track(send('b', 'c')),
      track(unnamed.call('local://b', 'm', meta(), text('?'), { timeoutMs: 1_000 })),
    ];
    await hops();
    expect(calls.map((c) => c.state)).toEqual(['pending', 'pending', 'resolved', 'resolved']);
    expect(calls.slice(2).map((c) => untext(c.value!))).toEqual(['c', 'b']);
    await w.clock.advance(1_000);
    expectCode(calls[0]!.error, ErrorCodes.DeadlineExceeded);
    expectCode(calls[1]!.error, ErrorCodes.DeadlineExceeded);
    expect(seen).toEqual(['a->b', 'a->c', 'b->c', '?->b']);
    expect(fault.hits).toBe(2);
    expect(w.network.stats()).toMatchObject({ sent: 4, delivered: 4, droppedResponses: 2, answered: 2 });
  });
});

describe('the clocks of the legs', () => {
  it("a delayed request arrives on the server's clock, not the caller's or the network's", async () => {
    w = world();
    const serverClock = new ManualClock();
    const callerClock = new ManualClock();
    const runs: string[] = [];
    const server = await w.node({ clock: serverClock }).listen({
      methods: ['m'],
      handler: async (req) => {
        runs.push(req.meta.requestId);
        return text('ok');
      },
    });
    const caller = w.node({ clock: callerClock });
    w.network.delayRequests({ ms: 100 });
    const outcome = track(caller.call(server.address, 'm', meta({ requestId: 'r' }), text('x'), { timeoutMs: 10_000 }));
    await hops();
    await callerClock.advance(1_000);
    await w.clock.advance(1_000);
    expect(runs).toEqual([]);
    expect(serverClock.pendingTimers().map((t) => t.dueAt)).toEqual([100]);
    await serverClock.advance(99);
    expect(runs).toEqual([]);
    await serverClock.advance(1);
    expect(runs).toEqual(['r']);
    await hops();
    expect(outcome.state).toBe('resolved');
    expect(callerClock.pendingTimers()).toEqual([]);
    expect(serverClock.pendingTimers()).toEqual([]);
  });

  it("a delayed answer arrives on the caller's clock, not the server's or the network's", async () => {
    w = world();
    const serverClock = new ManualClock();
    const callerClock = new ManualClock();
    let runs = 0;
    const server = await w.node({ clock: serverClock }).listen({
      methods: ['m'],
      handler: async () => {
        runs++;
        return text('ok');
      },
    });
    const caller = w.node({ clock: callerClock });
    w.network.delayResponses({ ms: 100 });
    const outcome = track(caller.call(server.address, 'm', meta(), text('x'), { timeoutMs: 10_000 }));
    await hops();
    expect(runs).toBe(1);
    await serverClock.advance(1_000);
    await w.clock.advance(1_000);
    expect(outcome.state).toBe('pending');
    // The caller's deadline and the held-back answer, both on the caller's clock.
    expect(callerClock.pendingTimers().map((t) => t.dueAt)).toEqual([100, 10_000]);
    await callerClock.advance(99);
    expect(outcome.state).toBe('pending');
    await callerClock.advance(1);
    expect(outcome.state).toBe('resolved');
    expect(untext(outcome.value!)).toBe('ok');
    expect(callerClock.pendingTimers()).toEqual([]);
    expect(w.network.stats(server.address)).toMatchObject({ delayedResponses: 1, answered: 1 });
  });

  it("legs with no delay wait for a turn of their receiver's clock when it has defer()", async () => {
    w = world();
    const serverClock = new DeferringClock();
    const callerClock = new DeferringClock();
    let runs = 0;
    const server = await w.node({ clock: serverClock }).listen({
      methods: ['m'],
      handler: async () => {
        runs++;
        return text('ok');
      },
    });
    const caller = w.node({ clock: callerClock });
    const outcome = track(caller.call(server.address, 'm', meta(), text('x'), { timeoutMs: 10_000 }));
    await hops();
    expect(runs).toBe(0);
    expect(callerClock.deferred).toHaveLength(0);
    expect(serverClock.runDeferred()).toBe(1);
    expect(runs).toBe(1);
    await hops();
    expect(outcome.state).toBe('pending');
    expect(serverClock.deferred).toHaveLength(0);
    expect(callerClock.runDeferred()).toBe(1);
    await hops(1);
    expect(outcome.state).toBe('resolved');
    expect(untext(outcome.value!)).toBe('ok');
    expect(w.network.stats(server.address)).toEqual(counters({ sent: 1, delivered: 1, answered: 1 }));
  });

  it("a network's random() defaults to its clock's random()", async () => {
    let draws = 0;
    class SeededClock extends ManualClock {
      random(): number {
        draws++;
        return 0.3;
      }
    }
    const { runs, call } = await setup({ clock: new SeededClock() });
    const misses = w.network.dropRequests({ probability: 0.2 });
    const delivered = track(call('m', 1_000));
    await hops();
    expect(delivered.state).toBe('resolved');
    expect(draws).toBe(1);
    expect(misses.hits).toBe(0);
    const dropped = w.network.dropRequests({ probability: 0.4, count: 1 });
    misses.remove();
    const outcome = track(call('m', 1_000));
    await hops();
    await w.clock.advance(1_000);
    expectCode(outcome.error, ErrorCodes.DeadlineExceeded);
    expect(draws).toBe(2);
    expect(dropped.hits).toBe(1);
    expect(runs).toHaveLength(1);
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

  it('refuses a `from` that is not a local:// address, and a bad duplicate `ms`, with InvalidArgumentError', () => {
    w = world();
    const bad: (() => unknown)[] = [];
    for (const from of ['a', 'node-1', 'grpc://a:7000', 'local://', 'local://a/b', 'LOCAL://a', 7 as never]) {
      bad.push(() => w.network.dropRequests({ from }));
      bad.push(() => w.network.delayResponses({ ms: 1, from }));
      bad.push(() => w.network.duplicateRequests({ from }));
    }
    bad.push(() => w.network.duplicateRequests({ ms: -1 }));
    bad.push(() => w.network.duplicateRequests({ ms: [5, 1] }));
    bad.push(() => w.network.duplicateRequests({ count: 0 }));
    bad.push(() => w.network.duplicateRequests(null as never));
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
    expect(w.network.dropRequests({ from: 'local://a' }).from).toBe('local://a');
  });
});
