import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, NotOwnerError, TaskGraphError } from '@taskgraph/api';
import type { InboundRequest } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { DEFAULT_GRACE_MS, LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import type { World } from './helpers.js';
import { hops, meta, text, track, untext, world } from './helpers.js';

let w: World;

afterEach(async () => {
  await w.close();
  expect(w.clock.pendingTimers()).toEqual([]);
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(TaskGraphError.is(err), `expected a TaskGraphError, got ${String(err)}`).toBe(true);
    return (err as TaskGraphError).code;
  }
  throw new Error('expected a rejection');
}

/** A server whose "hold" handler waits until released (or its signal aborts), recording its requests. */
async function holdingServer(transport: LocalTransport) {
  const requests: InboundRequest[] = [];
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const server = await transport.listen({
    methods: ['hold', 'echo'],
    handler: async (req) => {
      if (req.method === 'echo') return req.payload;
      requests.push(req);
      await Promise.race([released, new Promise((resolve) => req.signal.addEventListener('abort', resolve, { once: true }))]);
      return text(`held:${untext(req.payload)}`);
    },
  });
  return { server, requests, release };
}

describe('payloads behave like bytes on a wire', () => {
  it('copies the request when sent and the answer when returned', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    let output: Uint8Array | undefined;
    let seen: Uint8Array | undefined;
    const server = await a.listen({
      methods: ['m'],
      handler: async (req) => {
        seen = req.payload;
        req.payload[0] = 0;
        output = text('answer');
        const out = output;
        setImmediate(() => (out[0] = 0));
        return out;
      },
    });
    const payload = text('request');
    const pending = b.call(server.address, 'm', meta(), payload, { timeoutMs: 1_000 });
    payload[1] = 0;
    const got = await pending;
    await hops();
    expect(untext(payload)).toBe('r\0quest');
    expect(seen?.[1]).toBe('e'.charCodeAt(0));
    expect(untext(got)).toBe('answer');
    expect(output?.[0]).toBe(0);
  });

  it('hands the handler a plain Uint8Array and the caller one too, whatever was sent', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    let seen: Uint8Array | undefined;
    const server = await a.listen({
      methods: ['m'],
      handler: async (req) => {
        seen = req.payload;
        return Buffer.from('from a buffer');
      },
    });
    const got = await b.call(server.address, 'm', meta(), Buffer.from('buffer in'), { timeoutMs: 1_000 });
    expect(Object.getPrototypeOf(seen)).toBe(Uint8Array.prototype);
    expect(Object.getPrototypeOf(got)).toBe(Uint8Array.prototype);
    expect(untext(got)).toBe('from a buffer');
  });

  it('checks the size on both sides: the caller\'s limit and the server\'s', async () => {
    w = world();
    const small = w.node({ maxMessageBytes: 1024 });
    const large = w.node({ maxMessageBytes: 4096 });
    let runs = 0;
    const handler = async (req: InboundRequest): Promise<Uint8Array> => {
      runs++;
      return new Uint8Array(Number(untext(req.payload)));
    };
    const smallServer = await small.listen({ methods: ['m'], handler });
    const largeServer = await large.listen({ methods: ['m'], handler });
    // The server's limit: refused by the server without running the handler.
    const big = new Uint8Array(2000);
    expect(await codeOf(large.call(smallServer.address, 'm', meta(), big, { timeoutMs: 1_000 }))).toBe(ErrorCodes.InvalidArgument);
    expect(runs).toBe(0);
    expect(w.network.stats(smallServer.address)).toMatchObject({ rejected: 1, delivered: 0 });
    // The caller's limit on the answer: the handler ran, the caller refuses its answer.
    expect(await codeOf(small.call(largeServer.address, 'm', meta(), text('2000'), { timeoutMs: 1_000 }))).toBe(ErrorCodes.InvalidArgument);
    expect(runs).toBe(1);
    // The server's limit on its own answer.
    expect(await codeOf(large.call(smallServer.address, 'm', meta(), text('1025'), { timeoutMs: 1_000 }))).toBe(ErrorCodes.InvalidArgument);
    expect((await large.call(smallServer.address, 'm', meta(), text('1024'), { timeoutMs: 1_000 })).length).toBe(1024);
  });
});

describe('meta and arguments', () => {
  it('passes exactly the meta fields, frozen, and rejects malformed meta', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    let request: InboundRequest | undefined;
    const server = await a.listen({
      methods: ['m'],
      handler: async (req) => {
        request = req;
        return new Uint8Array(0);
      },
    });
    const withExtra = { ...meta({ requestId: 'abc' }), secret: 'not on the wire' };
    await b.call(server.address, 'm', withExtra, new Uint8Array(0), { timeoutMs: 1_000 });
    expect(request?.meta).toEqual({ job: 'job', from: 0, to: 1, epoch: 1, token: '7', requestId: 'abc' });
    expect(Object.isFrozen(request?.meta)).toBe(true);
    expect(Object.isFrozen(request)).toBe(true);
    for (const bad of [{ ...meta(), job: 3 }, { ...meta(), from: 1.5 }, { ...meta(), epoch: '1' }, { ...meta(), token: 7 }, null]) {
      expect(await codeOf(b.call(server.address, 'm', bad as never, new Uint8Array(0), { timeoutMs: 1_000 }))).toBe(ErrorCodes.InvalidArgument);
    }
  });

  it('rejects bad addresses, payloads and options with InvalidArgumentError', async () => {
    w = world();
    const b = w.node();
    const ok = { timeoutMs: 1_000 };
    const cases: Promise<unknown>[] = [
      b.call('grpc://127.0.0.1:4000', 'm', meta(), new Uint8Array(0), ok),
      b.call('127.0.0.1:4000', 'm', meta(), new Uint8Array(0), ok),
      b.call('local://', 'm', meta(), new Uint8Array(0), ok),
      b.call('local://a/b', 'm', meta(), new Uint8Array(0), ok),
      b.call('local://a', 'm', meta(), 'text' as never, ok),
      b.call('local://a', 'm', meta(), new Uint8Array(0), { timeoutMs: 'soon' as never }),
      b.call('local://a', 'm', meta(), new Uint8Array(0), { timeoutMs: 10, signal: {} as never }),
      b.call('local://a', 'm', meta(), new Uint8Array(0), null as never),
    ];
    for (const c of cases) expect(await codeOf(c)).toBe(ErrorCodes.InvalidArgument);
    expect(b.pendingCalls).toBe(0);
  });

  it('rebuilds errors from their wire form: bigint details become strings, a non-bytes answer is INTERNAL', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    const server = await a.listen({
      methods: ['owner', 'notBytes'],
      handler: async (req) => {
        if (req.method === 'owner') throw new NotOwnerError('moved', { details: { token: 12345678901234567890n } });
        return 'a string' as never;
      },
    });
    const err = await b.call(server.address, 'owner', meta(), new Uint8Array(0), { timeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotOwnerError);
    expect((err as NotOwnerError).details).toEqual({ token: '12345678901234567890' });
    expect(await codeOf(b.call(server.address, 'notBytes', meta(), new Uint8Array(0), { timeoutMs: 1_000 }))).toBe(ErrorCodes.Internal);
  });
});

describe('deadlines and signals', () => {
  it('aborts the handler\'s signal with the caller\'s reason', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    const { server, requests } = await holdingServer(a);
    const timedOut = track(b.call(server.address, 'hold', meta(), text('1'), { timeoutMs: 500 }));
    await hops();
    await w.clock.advance(500);
    expect(await codeOf(Promise.reject(timedOut.error))).toBe(ErrorCodes.DeadlineExceeded);
    expect(TaskGraphError.is(requests[0]?.signal.reason, ErrorCodes.DeadlineExceeded)).toBe(true);

    const controller = new AbortController();
    const aborted = codeOf(b.call(server.address, 'hold', meta(), text('2'), { timeoutMs: 10_000, signal: controller.signal }));
    await eventually('the second call runs', () => requests.length === 2);
    controller.abort(new Error('not ours'));
    expect(await aborted).toBe(ErrorCodes.Aborted);
    expect(TaskGraphError.is(requests[1]?.signal.reason, ErrorCodes.Aborted)).toBe(true);
    expect(b.pendingCalls).toBe(0);
  });

  it('treats a deadline beyond the timer range as none', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    const { server, release } = await holdingServer(a);
    const pending = b.call(server.address, 'hold', meta(), text('x'), { timeoutMs: Number.POSITIVE_INFINITY });
    await hops();
    expect(w.clock.pendingTimers()).toEqual([]);
    release();
    expect(untext(await pending)).toBe('held:x');
  });
});

describe('server close', () => {
  it('waits DEFAULT_GRACE_MS for calls in flight, then cuts them: UnavailableError, signal aborted with ClosedError', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    const { server, requests } = await holdingServer(a);
    const outcome = track(b.call(server.address, 'hold', meta(), text('x'), { timeoutMs: 60_000 }));
    await hops();
    expect(server.inFlight).toBe(1);
    const closed = track(server.close());
    expect(server.close()).toBe(server.close());
    await hops();
    await w.clock.advance(DEFAULT_GRACE_MS - 1);
    expect(outcome.state).toBe('pending');
    expect(closed.state).toBe('pending');
    await w.clock.advance(1);
    await hops();
    expect(closed.state).toBe('resolved');
    const err = outcome.error as TaskGraphError;
    expect(err.code).toBe(ErrorCodes.Unavailable);
    expect(err.details).toMatchObject({ handlerStarted: true, method: 'hold' });
    expect(TaskGraphError.is(requests[0]?.signal.reason, ErrorCodes.Closed)).toBe(true);
    expect(server.inFlight).toBe(0);
    expect(w.network.stats(server.address)).toMatchObject({ delivered: 1, cut: 1, answered: 1 });
    expect(a.servers).toEqual([]);
  });

  it('resolves as soon as the last call finishes, and frees the name for a new server', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    const requests: InboundRequest[] = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const server = await a.listen({
      name: 'fixed',
      methods: ['hold'],
      handler: async (req) => {
        requests.push(req);
        await released;
        return text('ok');
      },
    });
    expect(server.address).toBe('local://fixed');
    const pending = b.call(server.address, 'hold', meta(), text('x'), { timeoutMs: 60_000 });
    await hops();
    const closing = server.close({ graceMs: 50_000 });
    expect(server.closing).toBe(true);
    expect(w.network.addresses()).toEqual([]);
    const again = await a.listen({ name: 'fixed', methods: ['hold'], handler: async () => text('new') });
    expect(untext(await b.call(again.address, 'hold', meta(), text('x'), { timeoutMs: 1_000 }))).toBe('new');
    release();
    expect(untext(await pending)).toBe('ok');
    await closing;
    expect(w.clock.pendingTimers()).toEqual([]);
    expect(requests[0]?.signal.aborted).toBe(false);
  });

  it('rejects a bad graceMs, and serve() on a closed server changes nothing visible', async () => {
    w = world();
    const a = w.node();
    const server = await a.listen({ methods: ['m'], handler: async () => new Uint8Array(0) });
    expect(await codeOf(server.close({ graceMs: -1 }))).toBe(ErrorCodes.InvalidArgument);
    expect(await codeOf(server.close({ graceMs: Number.NaN }))).toBe(ErrorCodes.InvalidArgument);
    await server.close({ graceMs: 0 });
    server.serve(['m', 'n']);
    expect(await codeOf(w.node().call(server.address, 'n', meta(), new Uint8Array(0), { timeoutMs: 1_000 }))).toBe(ErrorCodes.Unavailable);
  });
});

describe('transport close', () => {
  it('with graceMs lets its servers drain; a plain close ends a grace period under way', async () => {
    w = world();
    const [a, b, c] = [w.node(), w.node(), w.node()];
    const first = await holdingServer(a);
    const fromB = b.call(first.server.address, 'hold', meta(), text('b'), { timeoutMs: 60_000 });
    await hops();
    const closingA = a.close({ graceMs: 10_000 });
    expect(a.closed).toBe(true);
    first.release();
    expect(untext(await fromB)).toBe('held:b');
    await closingA;

    const second = await holdingServer(c);
    const fromB2 = codeOf(b.call(second.server.address, 'hold', meta(), text('b2'), { timeoutMs: 60_000 }));
    await hops();
    const slowClose = track(second.server.close({ graceMs: 50_000 }));
    await c.close();
    await hops();
    expect(slowClose.state).toBe('resolved');
    expect(await fromB2).toBe(ErrorCodes.Unavailable);
    expect(await codeOf(w.node().close({ graceMs: -1 }))).toBe(ErrorCodes.InvalidArgument);
  });

  it('fails its own pending calls with ClosedError, counting what happens on the wire', async () => {
    w = world();
    const [a, b] = [w.node(), w.node()];
    const { server, requests } = await holdingServer(a);
    w.network.delayRequests({ ms: 1_000, method: 'echo' });
    const running = codeOf(b.call(server.address, 'hold', meta(), text('x'), { timeoutMs: 60_000 }));
    const delayed = codeOf(b.call(server.address, 'echo', meta(), text('x'), { timeoutMs: 60_000 }));
    await hops();
    expect(b.pendingCalls).toBe(2);
    await b.close();
    expect(await running).toBe(ErrorCodes.Closed);
    expect(await delayed).toBe(ErrorCodes.Closed);
    expect(TaskGraphError.is(requests[0]?.signal.reason, ErrorCodes.Closed)).toBe(true);
    await hops();
    expect(b.pendingCalls).toBe(0);
    expect(w.network.stats(server.address)).toMatchObject({ sent: 2, delivered: 1, abandoned: 1, late: 1 });
  });

  it('leaves no timers or immediates behind on the real clock', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
    const network = new LocalNetwork();
    w = world();
    const a = new LocalTransport({ network });
    const b = new LocalTransport({ network });
    const server = await a.listen({ methods: ['m'], handler: (req) => new Promise((resolve) => req.signal.addEventListener('abort', () => resolve(text('')))) });
    network.delayRequests({ ms: 60_000, count: 1 });
    network.delayResponses({ ms: 60_000 });
    const calls = [
      b.call(server.address, 'm', meta(), text('delayed request'), { timeoutMs: 120_000 }),
      b.call(server.address, 'm', meta(), text('delayed response'), { timeoutMs: 120_000 }),
    ];
    await eventually('the second call runs', () => server.inFlight === 1);
    await Promise.all([a.close(), b.close()]);
    await Promise.allSettled(calls);
    await eventually(
      'the transports\' timers are gone',
      () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length <= before,
    );
  });
});
