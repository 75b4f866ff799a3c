import { DecodeFailedError, EpochChangedError, InvalidArgumentError, MethodNotFoundError, NotOwnerError } from '@taskgraph/api';
import type { AnyMethodHandler, Codec, EpochContext, InboundRequest, RequestMeta } from '@taskgraph/api';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { defineMethod, serve } from '../src/codec.js';
import { EpochTracker } from '../src/epoch.js';
import { encodeJson } from '../src/layout.js';
import { RequestServer } from '../src/request-server.js';
import type { ServedTask } from '../src/request-server.js';
import { newStats } from '../src/stats.js';
import type { NodeStats } from '../src/stats.js';
import { bytes, gate, memoryWorld, recordingLogger, rejectionOf, text, track } from './parts.js';

const JOB = 'serve';
const double = defineMethod<number, number>('double');

let w: ReturnType<typeof memoryWorld>;
afterEach(async () => {
  await w.close();
});

interface Call {
  readonly ctx: EpochContext;
  readonly input: unknown;
  readonly from: number;
}

/** `double`, recording each call. */
function recordedDouble(calls: Call[]): AnyMethodHandler {
  return serve(double, (ctx, n, from) => {
    calls.push({ ctx, input: n, from });
    return n * 2;
  });
}

/** A request server for task 1 (token 7) in epoch 4, with a real epoch tracker; what it serves and the session's state are plain data. */
function setup(handlers: (calls: Call[]) => AnyMethodHandler[] = (calls) => [recordedDouble(calls)]) {
  w = memoryWorld();
  const tracker = new EpochTracker({ job: JOB, coordinator: w.client(), clock: w.clock, logger: recordingLogger(), stats: newStats(), onChange: () => undefined });
  const setEpoch = (e: number) => tracker.apply(bytes(String(e)), String(e + 1));
  setEpoch(4);
  const calls: Call[] = [];
  const task: ServedTask = { id: 1, token: '7', methods: new Map(handlers(calls).map((h) => [h.spec.name, h])) };
  const state: { served: ServedTask | undefined; lost: boolean } = { served: task, lost: false };
  const stats = newStats();
  const server = new RequestServer({
    job: JOB,
    stats,
    served: () => state.served,
    sessionLost: () => state.lost,
    epochs: tracker,
    internal: async (req) => encodeJson(`internal ${req.method}`),
  });
  const request = (meta: Partial<RequestMeta> = {}, method = 'double', payload: Uint8Array = encodeJson(21), authenticated = true): InboundRequest => ({
    method,
    meta: { job: JOB, from: 0, to: 1, epoch: 4, token: '7', requestId: 'r1', ...meta },
    payload,
    signal: new AbortController().signal,
    authenticated,
  });
  return { server, tracker, setEpoch, task, state, stats, calls, request };
}

const counters = (s: NodeStats) => ({ served: s.served, rejectedNotOwner: s.rejectedNotOwner, rejectedEpoch: s.rejectedEpoch, fencedLateResults: s.fencedLateResults });

describe('RequestServer', () => {
  it('serves a request for its task, token and epoch: the handler gets the epoch’s context, the input and the sender', async () => {
    const { server, tracker, calls, stats, request } = setup();
    const out = await server.handle(request({ from: 3 }));
    expect(JSON.parse(text(out))).toBe(42);
    expect(calls).toEqual([{ ctx: tracker.context, input: 21, from: 3 }]);
    expect(counters(stats)).toEqual({ served: 1, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 0 });
  });

  describe('checks before the handler runs', () => {
    it('another job: NotOwnerError that does not name the job served', async () => {
      const { server, calls, stats, request } = setup();
      const err = await rejectionOf(server.handle(request({ job: 'elsewhere' })));
      expect(err).toBeInstanceOf(NotOwnerError);
      expect((err as Error).message).toBe('this node does not serve the job the request names');
      expect((err as NotOwnerError).details).toEqual({});
      expect(calls).toEqual([]);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 1, rejectedEpoch: 0, fencedLateResults: 0 });
    });

    it('no task served, another task, or another token: NotOwnerError that never tells the real token', async () => {
      const { server, state, calls, stats, request } = setup();
      const wrongTask = await rejectionOf(server.handle(request({ to: 2 })));
      expect(wrongTask).toBeInstanceOf(NotOwnerError);
      expect((wrongTask as NotOwnerError).details).toEqual({ task: 2 });
      const wrongToken = await rejectionOf(server.handle(request({ token: '6' })));
      expect((wrongToken as NotOwnerError).details).toEqual({ task: 1 });
      expect((wrongToken as Error).message).toBe('this node does not run task 1 with the requested token');
      state.served = undefined;
      const none = await rejectionOf(server.handle(request()));
      expect(none).toBeInstanceOf(NotOwnerError);
      expect((none as NotOwnerError).details).toEqual({ task: 1 });
      expect(calls).toEqual([]);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 3, rejectedEpoch: 0, fencedLateResults: 0 });
    });

    it('a lost session: NotOwnerError', async () => {
      const { server, state, calls, stats, request } = setup();
      state.lost = true;
      expect(await rejectionOf(server.handle(request()))).toBeInstanceOf(NotOwnerError);
      expect(calls).toEqual([]);
      expect(stats.rejectedNotOwner).toBe(1);
    });

    it('another epoch, behind or ahead: EpochChangedError saying both epochs to an authenticated caller', async () => {
      const { server, calls, stats, request } = setup();
      for (const epoch of [3, 5]) {
        const err = await rejectionOf(server.handle(request({ epoch })));
        expect(err).toBeInstanceOf(EpochChangedError);
        expect((err as EpochChangedError).details).toEqual({ current: 4, requested: epoch });
        expect((err as EpochChangedError).currentEpoch).toBe(4);
      }
      expect(calls).toEqual([]);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 2, fencedLateResults: 0 });
    });

    it('another epoch from a caller the transport did not authenticate: EpochChangedError without the current epoch', async () => {
      const { server, stats, request } = setup();
      const err = await rejectionOf(server.handle(request({ epoch: 9 }, 'double', encodeJson(21), false)));
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as EpochChangedError).details).toEqual({ requested: 9 });
      expect((err as EpochChangedError).currentEpoch).toBeUndefined();
      expect((err as Error).message).not.toMatch(/\b4\b/);
      expect(stats.rejectedEpoch).toBe(1);
    });

    it('ownership is checked before the epoch', async () => {
      const { server, stats, request } = setup();
      expect(await rejectionOf(server.handle(request({ token: '6', epoch: 9 })))).toBeInstanceOf(NotOwnerError);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 1, rejectedEpoch: 0, fencedLateResults: 0 });
    });

    it('a method the task does not serve: MethodNotFoundError', async () => {
      const { server, calls, stats, request } = setup();
      const err = await rejectionOf(server.handle(request({}, 'triple')));
      expect(err).toBeInstanceOf(MethodNotFoundError);
      expect((err as Error).message).toBe('task 1 does not serve method "triple"');
      expect(calls).toEqual([]);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 0 });
    });

    it('an input the codec cannot decode: DecodeFailedError (a codec’s own DecodeFailedError as it is)', async () => {
      const boom = new Error('odd bytes');
      const picky: Codec<number> = {
        name: 'picky',
        encode: (n) => encodeJson(n),
        decode: () => {
          throw boom;
        },
      };
      const { server, calls, request } = setup((c) => [
        recordedDouble(c),
        serve(defineMethod('picky', { input: picky }), () => 0),
      ]);
      const own = await rejectionOf(server.handle(request({}, 'double', bytes('not json'))));
      expect(own).toBeInstanceOf(DecodeFailedError);
      expect((own as Error).message).toContain('json codec cannot decode');
      const wrapped = await rejectionOf(server.handle(request({}, 'picky')));
      expect(wrapped).toBeInstanceOf(DecodeFailedError);
      expect((wrapped as Error).message).toBe('method picky: cannot decode the input: odd bytes');
      expect((wrapped as Error).cause).toBe(boom);
      expect(calls).toEqual([]);
    });
  });

  it('a handler’s error goes to the caller as it is, and is not counted as served', async () => {
    const bad = new InvalidArgumentError('no negatives');
    const { server, stats, request } = setup(() => [
      serve(double, () => {
        throw bad;
      }),
    ]);
    expect(await rejectionOf(server.handle(request()))).toBe(bad);
    expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 0 });
  });

  describe('fencing after the handler', () => {
    function slow() {
      const held = gate();
      const seen: EpochContext[] = [];
      const s = setup(() => [
        serve(double, async (ctx, n) => {
          seen.push(ctx);
          await held.promise;
          return n * 2;
        }),
      ]);
      return { ...s, held, seen };
    }

    it('the task was lost while the handler ran: its answer is dropped (NotOwnerError), counted in fencedLateResults', async () => {
      const { server, state, stats, held, seen, request } = slow();
      const run = track(server.handle(request()));
      await eventually('the handler', () => seen.length === 1);
      state.served = undefined;
      held.open();
      const err = await rejectionOf(run.promise);
      expect(err).toBeInstanceOf(NotOwnerError);
      expect((err as Error).message).toBe('task 1 lost its lease while serving double');
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 1 });
    });

    it('another incarnation took over meanwhile (a new served task object): dropped too', async () => {
      const { server, state, task, stats, held, seen, request } = slow();
      const run = track(server.handle(request()));
      await eventually('the handler', () => seen.length === 1);
      state.served = { ...task, token: '8' };
      held.open();
      expect(await rejectionOf(run.promise)).toBeInstanceOf(NotOwnerError);
      expect(stats.fencedLateResults).toBe(1);
    });

    it('the session was lost while the handler ran: dropped', async () => {
      const { server, state, stats, held, seen, request } = slow();
      const run = track(server.handle(request()));
      await eventually('the handler', () => seen.length === 1);
      state.lost = true;
      held.open();
      expect(await rejectionOf(run.promise)).toBeInstanceOf(NotOwnerError);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 1 });
    });

    it('the epoch ended while the handler ran: EpochChangedError, and the handler’s context was aborted', async () => {
      const { server, setEpoch, stats, held, seen, request } = slow();
      const run = track(server.handle(request()));
      await eventually('the handler', () => seen.length === 1);
      setEpoch(5);
      expect(seen[0]?.signal.aborted).toBe(true);
      held.open();
      const err = await rejectionOf(run.promise);
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as Error).message).toBe('epoch 4 ended while serving double');
      expect((err as EpochChangedError).currentEpoch).toBe(5);
      expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 1 });
    });
  });

  it('is a transport handler: over a local network the errors arrive typed', async () => {
    const { server, request } = setup();
    const network = new LocalNetwork();
    const a = new LocalTransport({ network });
    const b = new LocalTransport({ network });
    try {
      const s = await a.listen({ handler: server.handle, methods: ['double'] });
      const meta = request().meta;
      expect(JSON.parse(text(await b.call(s.address, 'double', meta, encodeJson(5), { timeoutMs: 5000 })))).toBe(10);
      const err = await rejectionOf(b.call(s.address, 'double', { ...meta, epoch: 3 }, encodeJson(5), { timeoutMs: 5000 }));
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as EpochChangedError).currentEpoch).toBe(4);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('drain waits for the handlers still running (their late answers fenced), and no longer than it is given', async () => {
    const held = gate();
    const { server, request, state, stats } = setup(() => [serve(double, async (_ctx, n: number) => (await held.promise, n * 2))]);
    await server.drain(w.clock, 10_000);
    const run = track(server.handle(request()));
    await eventually('the handler runs', () => !run.state.settled);
    state.lost = true;
    const short = track(server.drain(w.clock, 50));
    await w.clock.advance(50);
    await eventually('the short drain gives up', () => short.state.settled);
    const drained = track(server.drain(w.clock, 60_000));
    held.open();
    await drained.promise;
    expect(run.state.settled).toBe(true);
    expect(run.state.error).toBeInstanceOf(NotOwnerError);
    expect(counters(stats)).toEqual({ served: 0, rejectedNotOwner: 0, rejectedEpoch: 0, fencedLateResults: 1 });
  });
});
