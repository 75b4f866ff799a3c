import { ApplicationError, DecodeFailedError, EpochChangedError, InvalidArgumentError, NotOwnerError } from '@taskgraph/api';
import type { Codec, InboundRequest, MethodSpec, RequestMeta } from '@taskgraph/api';
import { eventually, ManualClock } from '@taskgraph/testkit';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { AddressBook } from '../src/address-book.js';
import { defineMethod, jsonCodec } from '../src/codec.js';
import { DataClient } from '../src/data-client.js';
import { epochScope } from '../src/epoch.js';
import { encodeJson, keys } from '../src/layout.js';
import { newStats } from '../src/stats.js';
import { codeOf, gate, recordingLogger, rejectionOf, track } from './parts.js';

const JOB = 'data';
const double = defineMethod<number, number>('double');

interface Seen {
  readonly method: string;
  readonly meta: RequestMeta;
  readonly input: unknown;
}

let transports: LocalTransport[] = [];
afterEach(async () => {
  for (const t of transports) await t.close();
  transports = [];
});

/** A client on a local network and manual clock, and servers whose handler runs a script of answers. */
function setup() {
  const clock = new ManualClock();
  const network = new LocalNetwork({ clock });
  const transport = new LocalTransport({ network, clock });
  transports.push(transport);
  const logger = recordingLogger();
  const addresses = new AddressBook(JOB, transport, logger);
  const stats = newStats();
  const epochChangedAsked: Array<[number, number]> = [];
  const data = new DataClient({
    job: JOB,
    transport,
    addresses,
    clock,
    stats,
    attemptTimeoutMs: 1000,
    epochChanged: (asked, current) => {
      epochChangedAsked.push([asked, current]);
      return new EpochChangedError(`test: ${asked} is over, they are in ${current}`, { details: { current, requested: asked } });
    },
    logger: () => logger,
  });
  /** A server for task `task` with token `token`, known to the address book at once. */
  const server = async (task: number, token: string, script: Array<(req: InboundRequest) => Promise<Uint8Array> | Uint8Array> = []) => {
    const t = new LocalTransport({ network, clock });
    transports.push(t);
    const seen: Seen[] = [];
    const s = await t.listen({
      methods: ['double'],
      handler: async (req) => {
        seen.push({ method: req.method, meta: req.meta, input: JSON.parse(new TextDecoder().decode(req.payload)) });
        const step = script.shift();
        if (step) return step(req);
        return encodeJson(2 * (JSON.parse(new TextDecoder().decode(req.payload)) as number));
      },
    });
    const place = () => addresses.event({ type: 'put', key: keys.addr(JOB, task), value: encodeJson({ nodeId: `n${task}`, address: s.address, token, incarnation: 1 }), version: '1' });
    return { address: s.address, seen, place };
  };
  return { clock, network, transport, data, addresses, stats, logger, server, epochChangedAsked };
}

describe('DataClient', () => {
  it('sends the job, sender, target, epoch, target token and a request id; decodes the answer', async () => {
    const { data, server, stats } = setup();
    const target = await server(1, '7');
    target.place();
    const ctx = epochScope(3).context;
    expect(await data.request(ctx, 0, 1, double, 21, undefined)).toBe(42);
    expect(target.seen).toEqual([{ method: 'double', input: 21, meta: { job: JOB, from: 0, to: 1, epoch: 3, token: '7', requestId: expect.any(String) } }]);
    expect(stats.retries).toBe(0);
  });

  it('request ids are unique per request, kept across retries, and share this client’s prefix', async () => {
    const { data, server, clock, transport } = setup();
    const target = await server(1, '7', [() => Promise.reject(new EpochChangedError('not yet', { details: { current: 2 } }))]);
    target.place();
    const ctx = epochScope(3).context;
    const first = track(data.request(ctx, 0, 1, double, 1, undefined));
    await eventually('a backoff', () => target.seen.length === 1 && transport.pendingCalls === 0 && clock.pendingTimers().length === 1);
    await clock.advance(10);
    await first.promise;
    await data.request(ctx, 0, 1, double, 2, undefined);
    const ids = target.seen.map((s) => s.meta.requestId);
    expect(ids).toHaveLength(3);
    expect(ids[0]).toBe(ids[1]);
    expect(ids[2]).not.toBe(ids[0]);
    const prefix = (id: string) => id.slice(0, id.lastIndexOf('-') + 1);
    expect(prefix(ids[2]!)).toBe(prefix(ids[0]!));
    expect(prefix(ids[0]!).length).toBeGreaterThan(1);
  });

  describe('input and output', () => {
    it('refuses what is not a MethodSpec, sending nothing', async () => {
      const { data, network } = setup();
      const ctx = epochScope(0).context;
      for (const bad of [undefined, { name: 'x' }, { name: 3, input: jsonCodec(), output: jsonCodec() }]) {
        const err = await rejectionOf(data.request(ctx, 0, 1, bad as unknown as MethodSpec<number, number>, 1, undefined));
        expect(err).toBeInstanceOf(InvalidArgumentError);
        expect((err as Error).message).toBe('dataRequest needs a MethodSpec ({ name, input, output })');
      }
      expect(network.stats().sent).toBe(0);
    });

    it('an input the codec cannot encode: InvalidArgumentError naming the codec (a typed codec error as it is)', async () => {
      const { data, network } = setup();
      const ctx = epochScope(0).context;
      const boom = new Error('no such shape');
      const picky: Codec<number> = { name: 'picky', encode: () => { throw boom; }, decode: () => 0 };
      const err = await rejectionOf(data.request(ctx, 0, 1, defineMethod('m', { input: picky }), 1, undefined));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect((err as Error).message).toBe('dataRequest m: cannot encode the input with picky: no such shape');
      expect((err as Error).cause).toBe(boom);
      const typed = await rejectionOf(data.request(ctx, 0, 1, defineMethod<bigint, number>('m'), 1n, undefined));
      expect((typed as Error).message).toContain('json codec cannot encode the value');
      expect(network.stats().sent).toBe(0);
    });

    it('an answer the codec cannot decode: DecodeFailedError naming the target (a typed codec error as it is)', async () => {
      const { data, server } = setup();
      const target = await server(1, '7', [() => new TextEncoder().encode('not json'), () => new TextEncoder().encode('1')]);
      target.place();
      const ctx = epochScope(0).context;
      const typed = await rejectionOf(data.request(ctx, 0, 1, double, 1, undefined));
      expect(typed).toBeInstanceOf(DecodeFailedError);
      expect((typed as Error).message).toContain('json codec cannot decode');
      const broken = new Error('bad shape');
      const strict: Codec<number> = { name: 'strict', encode: (n) => encodeJson(n), decode: () => { throw broken; } };
      const err = await rejectionOf(data.request(ctx, 0, 1, defineMethod('double', { output: strict }), 1, undefined));
      expect(err).toBeInstanceOf(DecodeFailedError);
      expect((err as Error).message).toBe('dataRequest double from task 1: cannot decode the output: bad shape');
      expect((err as Error).cause).toBe(broken);
    });
  });

  describe('retries', () => {
    it('waits for a target whose address is not known yet', async () => {
      const { data, server, stats, network, clock } = setup();
      const target = await server(1, '7');
      const run = track(data.request(epochScope(0).context, 0, 1, double, 4, undefined));
      await eventually('a wait for the address', () => clock.pendingTimers().length === 1);
      expect(network.stats().sent).toBe(0);
      target.place();
      expect(await run.promise).toBe(8);
      expect(target.seen).toHaveLength(1);
      expect(stats.retries).toBe(1);
    });

    it('NOT_OWNER: re-resolves the address and goes to the new owner', async () => {
      const { data, server, stats, logger, addresses, clock } = setup();
      const old = await server(1, '7', [() => Promise.reject(new NotOwnerError('not me any more'))]);
      const next = await server(1, '8');
      old.place();
      // The book is level-triggered: use up the wake-up of that first placement.
      await addresses.waitForChange(clock, 1, new AbortController().signal);
      const run = track(data.request(epochScope(0).context, 2, 1, double, 5, undefined));
      await eventually('the first attempt', () => old.seen.length === 1);
      next.place();
      expect(await run.promise).toBe(10);
      expect(next.seen.map((s) => s.meta.token)).toEqual(['8']);
      expect(stats.retries).toBe(1);
      expect(logger.lines).toContainEqual({
        level: 'debug',
        message: 'data request: target not reachable at its address; re-resolving',
        fields: { to: 1, method: 'double', address: old.address, code: 'NOT_OWNER' },
      });
    });

    it('UNAVAILABLE: waits for a new address or a backoff, then tries again', async () => {
      const { data, server, network, clock, stats, addresses, transport } = setup();
      const target = await server(1, '7');
      target.place();
      await addresses.waitForChange(clock, 1, new AbortController().signal);
      network.disconnect(target.address);
      const run = track(data.request(epochScope(0).context, 0, 1, double, 3, undefined));
      await eventually('a refusal and a wait', () => network.stats(target.address).refused === 1 && transport.pendingCalls === 0 && clock.pendingTimers().length === 1);
      network.reconnect(target.address);
      await clock.advance(10);
      expect(await run.promise).toBe(6);
      expect(stats.retries).toBe(1);
      expect(target.seen).toHaveLength(1);
    });

    it('EPOCH_CHANGED from a target still behind (or not saying): waits and asks again', async () => {
      const { data, server, clock, stats, transport } = setup();
      const target = await server(1, '7', [
        () => Promise.reject(new EpochChangedError('behind', { details: { current: 2 } })),
        () => Promise.reject(new EpochChangedError('no epoch said')),
      ]);
      target.place();
      const run = track(data.request(epochScope(3).context, 0, 1, double, 1, undefined));
      await eventually('the first backoff', () => target.seen.length === 1 && transport.pendingCalls === 0 && clock.pendingTimers().length === 1);
      await clock.advance(10);
      await eventually('the second backoff', () => target.seen.length === 2 && transport.pendingCalls === 0 && clock.pendingTimers().length === 1);
      expect(run.state.settled).toBe(false);
      await clock.advance(20);
      expect(await run.promise).toBe(2);
      expect(stats.retries).toBe(2);
    });

    it('EPOCH_CHANGED from a target ahead: the caller’s epoch is over, no retry', async () => {
      const { data, server, clock, epochChangedAsked } = setup();
      const target = await server(1, '7', [() => Promise.reject(new EpochChangedError('ahead', { details: { current: 5 } }))]);
      target.place();
      const err = await rejectionOf(data.request(epochScope(3).context, 0, 1, double, 1, undefined));
      expect(err).toBeInstanceOf(EpochChangedError);
      expect((err as EpochChangedError).details).toEqual({ current: 5, requested: 3 });
      expect(epochChangedAsked).toEqual([[3, 5]]);
      expect(target.seen).toHaveLength(1);
      expect(clock.pendingTimers()).toEqual([]);
    });

    it('another retryable failure (a lost request: its deadline) waits a backoff; the attempt deadline is per call', async () => {
      const { data, server, network, clock, stats, transport } = setup();
      const target = await server(1, '7');
      target.place();
      network.dropRequests({ address: target.address, count: 1 });
      const run = track(data.request(epochScope(0).context, 0, 1, double, 7, 50));
      await eventually('the lost request', () => network.stats().droppedRequests === 1);
      await clock.advance(49);
      expect(transport.pendingCalls).toBe(1);
      await clock.advance(1);
      await eventually('the deadline, then a backoff', () => transport.pendingCalls === 0 && clock.pendingTimers().length === 1);
      expect(stats.retries).toBe(0);
      await clock.advance(10);
      expect(await run.promise).toBe(14);
      expect(target.seen).toHaveLength(1);
    });

    it('a failure that is not retryable is thrown after one attempt', async () => {
      const { data, server, stats } = setup();
      const target = await server(1, '7', [() => Promise.reject(new Error('application bug'))]);
      target.place();
      const err = await rejectionOf(data.request(epochScope(0).context, 0, 1, double, 1, undefined));
      expect(err).toBeInstanceOf(ApplicationError);
      expect(target.seen).toHaveLength(1);
      expect(stats.retries).toBe(0);
    });
  });

  describe('never into another epoch', () => {
    it('an epoch already over: rejects with its reason, sending nothing', async () => {
      const { data, server, network } = setup();
      (await server(1, '7')).place();
      const scope = epochScope(2);
      const over = new EpochChangedError('epoch 2 is over');
      scope.end(() => over);
      expect(await rejectionOf(data.request(scope.context, 0, 1, double, 1, undefined))).toBe(over);
      expect(network.stats().sent).toBe(0);
    });

    it('the epoch ends during a call: rejects with the end’s reason and does not send again', async () => {
      const { data, server, clock } = setup();
      const held = gate();
      const target = await server(1, '7', [
        async (req) => {
          await held.promise;
          return encodeJson(req.signal.aborted ? -1 : 0);
        },
      ]);
      target.place();
      const scope = epochScope(2);
      const run = track(data.request(scope.context, 0, 1, double, 1, undefined));
      await eventually('the call', () => target.seen.length === 1);
      const over = new EpochChangedError('epoch 2 is over');
      scope.end(() => over);
      expect(await rejectionOf(run.promise)).toBe(over);
      held.open();
      await clock.advance(5000);
      expect(target.seen).toHaveLength(1);
    });

    it('the epoch ends while it waits to retry: rejects with the end’s reason', async () => {
      const { data, server, clock, transport } = setup();
      const target = await server(1, '7', [() => Promise.reject(new EpochChangedError('behind', { details: { current: 1 } }))]);
      target.place();
      const scope = epochScope(2);
      const run = track(data.request(scope.context, 0, 1, double, 1, undefined));
      await eventually('the backoff', () => target.seen.length === 1 && transport.pendingCalls === 0 && clock.pendingTimers().length === 1);
      const over = new EpochChangedError('epoch 2 is over');
      scope.end(() => over);
      expect(await rejectionOf(run.promise)).toBe(over);
      await clock.advance(5000);
      expect(target.seen).toHaveLength(1);
      expect(clock.pendingTimers()).toEqual([]);
    });

    it('the epoch ends while it waits for an address: rejects with the end’s reason', async () => {
      const { data, clock } = setup();
      const scope = epochScope(2);
      const run = track(data.request(scope.context, 0, 1, double, 1, undefined));
      await eventually('the wait', () => clock.pendingTimers().length === 1);
      const over = new EpochChangedError('epoch 2 is over');
      scope.end(() => over);
      const err = await rejectionOf(run.promise);
      expect(err).toBe(over);
      expect(codeOf(err)).toBe('EPOCH_CHANGED');
    });
  });
});
