/**
 * The transport conformance suite: what every Transport must do, observed only
 * through the SPI, so the local and the gRPC transport (and any later one) are
 * interchangeable under the framework. A transport's test file runs it in a few
 * lines: `transportSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach }, factory, options)`.
 */
import assert from 'node:assert/strict';
import type { InboundRequest, RequestMeta, Transport, TransportServer } from '@taskgraph/api';
import {
  ConflictError,
  EpochChangedError,
  ErrorCodes,
  NotOwnerError,
  TaskGraphError,
} from '@taskgraph/api';
import type { TestApi } from './types.js';
import {
  aborted,
  deferred,
  describeError,
  makeMeta,
  pattern,
  rejectsWith,
  resourceCounts,
  resourceExcess,
  sameBytes,
  sleep,
  text,
  untext,
  waitFor,
} from './transport-suite/helpers.js';

export interface TransportSuiteOptions {
  /** Shown in the suite's title, e.g. "local" or "grpc". */
  readonly name: string;
  /** An address in this transport's format where nothing listens (e.g. a closed loopback port). */
  readonly unreachableAddress: () => Promise<string> | string;
  /** The size of the "several MiB" payloads sent both ways (default 4 MiB). */
  readonly largePayloadBytes?: number;
  /** Multiplies every timeout and wait of the suite (default 1); raise it on slow machines. */
  readonly timeScale?: number;
}

/** What a test gets: `node()` makes a transport that the suite closes after the test. */
interface Harness {
  node(): Promise<Transport>;
}

type Handler = (request: InboundRequest) => Promise<Uint8Array> | Uint8Array;

/** Starts a server that dispatches by method name to `handlers`, serving exactly their names. */
function serveAll(transport: Transport, handlers: Record<string, Handler>): Promise<TransportServer> {
  return transport.listen({
    methods: Object.keys(handlers),
    handler: async (request) => {
      const handler = handlers[request.method];
      if (handler === undefined) throw new Error(`the suite's handler was called for "${request.method}", which it does not serve`);
      return handler(request);
    },
  });
}

const echo: Handler = (request) => request.payload;

/**
 * Registers the suite's tests. `factory` makes a new transport (a "node"); every
 * transport it makes must reach every other one's servers.
 */
export function transportSuite(test: TestApi, factory: () => Promise<Transport>, options: TransportSuiteOptions): void {
  const { describe, beforeAll, afterEach } = test;
  const scale = options.timeScale ?? 1;
  const ms = (n: number): number => Math.round(n * scale);
  const largeBytes = options.largePayloadBytes ?? 4 * 1024 * 1024;
  /** How long the suite waits for something that should happen promptly. */
  const patience = ms(10_000);
  const it = (name: string, fn: () => Promise<void>): void => test.it(name, fn, ms(60_000));

  const open: Transport[] = [];
  const h: Harness = {
    async node() {
      const transport = await factory();
      open.push(transport);
      return transport;
    },
  };
  let baseline = new Map<string, number>();

  describe(`transportSuite: ${options.name}`, () => {
    beforeAll(() => {
      baseline = resourceCounts();
    });

    afterEach(async () => {
      const closing = open.splice(0).map((t) => t.close());
      const results = await Promise.allSettled(closing);
      for (const r of results) {
        if (r.status === 'rejected') assert.fail(`closing a transport failed: ${describeError(r.reason)}`);
      }
    }, ms(30_000));

    describe('calls', () => {
      it('round-trips binary and empty payloads as copies', async () => {
        const [a, b] = [await h.node(), await h.node()];
        const sent = pattern(1024, 1);
        let seen: Uint8Array | undefined;
        const reply = pattern(777, 2);
        const server = await serveAll(a, {
          echo,
          reply: (req) => {
            seen = req.payload;
            return reply;
          },
          empty: (req) => {
            assert.equal(req.payload.length, 0);
            return new Uint8Array(0);
          },
        });
        sameBytes(await b.call(server.address, 'echo', makeMeta(), sent, { timeoutMs: patience }), sent, 'echo');
        const got = await b.call(server.address, 'reply', makeMeta(), sent, { timeoutMs: patience });
        sameBytes(got, reply, 'reply');
        assert.ok(seen !== undefined);
        sameBytes(seen, sent, 'request seen by the handler');
        assert.notEqual(seen, sent, 'the handler must get a copy of the request, not the caller\'s buffer');
        assert.notEqual(got, reply, 'the caller must get a copy of the response, not the handler\'s buffer');
        const empty = await b.call(server.address, 'empty', makeMeta(), new Uint8Array(0), { timeoutMs: patience });
        assert.equal(empty.length, 0);
        sameBytes(await b.call(server.address, 'echo', makeMeta(), new Uint8Array(0), { timeoutMs: patience }), new Uint8Array(0), 'empty echo');
      });

      it('delivers the method and the request meta intact', async () => {
        const [a, b] = [await h.node(), await h.node()];
        const seen: InboundRequest[] = [];
        const server = await serveAll(a, {
          Inspect_1: (req) => {
            seen.push(req);
            return text(JSON.stringify(req.meta));
          },
        });
        const metas: RequestMeta[] = [
          makeMeta(),
          { job: 'jöb/α β', from: -1, to: 0, epoch: 0, token: '18446744073709551617', requestId: 'c5a7e3e2-0b5e-4d1a-9f8e-2a6f1b4d9c01' },
          { job: 'j', from: 2147483647, to: 12345, epoch: 9007199254740991, token: '0', requestId: 'x'.repeat(200) },
        ];
        for (const meta of metas) {
          const out = await b.call(server.address, 'Inspect_1', meta, text('m'), { timeoutMs: patience });
          const request = seen.at(-1);
          assert.ok(request !== undefined);
          assert.equal(request.method, 'Inspect_1');
          assert.deepEqual({ ...request.meta }, meta);
          assert.deepEqual(JSON.parse(untext(out)), meta);
          assert.equal(request.signal.aborted, false, 'the handler\'s signal must not be aborted while it runs normally');
        }
      });

      it('runs the handler asynchronously, never inside call()', async () => {
        const [a, b] = [await h.node(), await h.node()];
        let ran = false;
        const server = await serveAll(a, {
          mark: () => {
            ran = true;
            return text('ok');
          },
        });
        const pending = b.call(server.address, 'mark', makeMeta(), text('x'), { timeoutMs: patience });
        assert.equal(ran, false, 'the handler ran synchronously inside call()');
        assert.equal(untext(await pending), 'ok');
        assert.equal(ran, true);
      });

      it('lets a node call its own server, and every node reach every other', async () => {
        const nodes = [await h.node(), await h.node(), await h.node()];
        const servers: TransportServer[] = [];
        for (const [i, node] of nodes.entries()) servers.push(await serveAll(node, { who: () => text(`node${i}`) }));
        assert.equal(new Set(servers.map((s) => s.address)).size, servers.length, 'every server must have its own address');
        for (const caller of nodes) {
          for (const [i, server] of servers.entries()) {
            const out = await caller.call(server.address, 'who', makeMeta(), new Uint8Array(0), { timeoutMs: patience });
            assert.equal(untext(out), `node${i}`);
          }
        }
        // forget() drops a cached connection: the next call makes a new one; an unknown address is fine.
        const first = servers[0];
        assert.ok(first !== undefined);
        nodes[1]?.forget(first.address);
        nodes[1]?.forget(await options.unreachableAddress());
        assert.equal(untext(await nodes[1]!.call(first.address, 'who', makeMeta(), new Uint8Array(0), { timeoutMs: patience })), 'node0');
      });

      it('answers 200 concurrent calls, each with its own answer', async () => {
        const [a, b, c] = [await h.node(), await h.node(), await h.node()];
        const server = await serveAll(a, {
          twist: async (req) => {
            await sleep(Number(req.meta.requestId.slice(-1)) % 4);
            const out = new Uint8Array(req.payload.length + 1);
            out.set(req.payload.map((x) => x ^ 0x5a));
            out[req.payload.length] = req.meta.from & 0xff;
            return out;
          },
        });
        const calls = Array.from({ length: 200 }, (_, i) => {
          const payload = pattern(64 + i * 7, i);
          const caller = i % 2 === 0 ? b : c;
          return caller
            .call(server.address, 'twist', makeMeta({ from: i, requestId: `r${i}` }), payload, { timeoutMs: ms(30_000) })
            .then((out) => {
              const expected = new Uint8Array(payload.length + 1);
              expected.set(payload.map((x) => x ^ 0x5a));
              expected[payload.length] = i & 0xff;
              sameBytes(out, expected, `call ${i}`);
            });
        });
        await Promise.all(calls);
      });

      it(`carries payloads of ${largeBytes} bytes both ways`, async () => {
        const [a, b] = [await h.node(), await h.node()];
        const request = pattern(largeBytes, 11);
        const response = pattern(largeBytes + 1, 12);
        const server = await serveAll(a, {
          big: (req) => {
            sameBytes(req.payload, request, 'large request seen by the handler');
            return response;
          },
        });
        sameBytes(await b.call(server.address, 'big', makeMeta(), request, { timeoutMs: ms(30_000) }), response, 'large response');
      });

      it('rejects a payload over maxMessageBytes with InvalidArgumentError and keeps serving', async () => {
        const [a, b] = [await h.node(), await h.node()];
        assert.ok(Number.isSafeInteger(b.maxMessageBytes) && b.maxMessageBytes > 0, 'maxMessageBytes must be a positive integer');
        const server = await serveAll(a, {
          echo,
          huge: () => new Uint8Array(a.maxMessageBytes + 1),
        });
        await rejectsWith(
          b.call(server.address, 'echo', makeMeta(), new Uint8Array(b.maxMessageBytes + 1), { timeoutMs: ms(30_000) }),
          ErrorCodes.InvalidArgument,
          'a request over maxMessageBytes',
        );
        await rejectsWith(
          b.call(server.address, 'huge', makeMeta(), new Uint8Array(0), { timeoutMs: ms(30_000) }),
          ErrorCodes.InvalidArgument,
          'a response over maxMessageBytes',
        );
        sameBytes(await b.call(server.address, 'echo', makeMeta(), text('still here'), { timeoutMs: patience }), text('still here'), 'after');
      });

      it('rejects bad call arguments with InvalidArgumentError', async () => {
        const [a, b] = [await h.node(), await h.node()];
        let calls = 0;
        const server = await serveAll(a, {
          count: () => {
            calls++;
            return new Uint8Array(0);
          },
        });
        await rejectsWith(
          b.call(server.address, 'not a method!', makeMeta(), new Uint8Array(0), { timeoutMs: patience }),
          ErrorCodes.InvalidArgument,
          'an invalid method name',
        );
        for (const timeoutMs of [Number.NaN, 0, -5]) {
          await rejectsWith(
            b.call(server.address, 'count', makeMeta(), new Uint8Array(0), { timeoutMs }),
            ErrorCodes.InvalidArgument,
            `timeoutMs ${timeoutMs}`,
          );
        }
        assert.equal(calls, 0, 'no handler may run for a rejected call');
      });
    });

    describe('methods', () => {
      it('answers MethodNotFoundError for a method it does not serve, and serve() changes the set at run time', async () => {
        const [a, b] = [await h.node(), await h.node()];
        const server = await a.listen({ handler: async (req) => text(req.method) });
        const call = (method: string): Promise<Uint8Array> => b.call(server.address, method, makeMeta(), new Uint8Array(0), { timeoutMs: patience });
        await rejectsWith(call('first'), ErrorCodes.MethodNotFound, 'a server listening with no methods');
        server.serve(['first', 'second']);
        assert.equal(untext(await call('first')), 'first');
        assert.equal(untext(await call('second')), 'second');
        await rejectsWith(call('third'), ErrorCodes.MethodNotFound, 'a method outside the served set');
        server.serve(['second']);
        await rejectsWith(call('first'), ErrorCodes.MethodNotFound, 'a method removed by serve()');
        assert.equal(untext(await call('second')), 'second');
        assert.throws(
          () => server.serve(['ok', 'not ok']),
          (err: unknown) => TaskGraphError.is(err, ErrorCodes.InvalidArgument),
          'serve() with an invalid method name must throw InvalidArgumentError',
        );
        server.serve([]);
        const err = await rejectsWith(call('second'), ErrorCodes.MethodNotFound, 'serve([]) serves nothing');
        assert.equal(err.retryable, false);
      });
    });

    describe('errors', () => {
      it('rebuilds a typed handler error on the caller side with its code, message and details', async () => {
        const [a, b] = [await h.node(), await h.node()];
        const server = await serveAll(a, {
          epoch: () => {
            throw new EpochChangedError('the epoch moved on to 7', { details: { current: 7 } });
          },
          owner: async () => {
            throw new NotOwnerError('node-x no longer runs task 2', { details: { task: 2, token: '99' } });
          },
          conflict: async () => {
            throw new ConflictError('lost the race', { retryable: true, details: { nested: { a: [1, 'two', null] }, flag: false } });
          },
        });
        const call = (method: string): Promise<Uint8Array> => b.call(server.address, method, makeMeta(), new Uint8Array(0), { timeoutMs: patience });

        const epoch = await rejectsWith(call('epoch'), ErrorCodes.EpochChanged, 'EpochChangedError');
        assert.ok(epoch instanceof EpochChangedError, `expected an EpochChangedError instance, got ${epoch.name}`);
        assert.equal(epoch.name, 'EpochChangedError');
        assert.match(epoch.message, /the epoch moved on to 7/);
        assert.equal(epoch.details['current'], 7);
        assert.equal(epoch.currentEpoch, 7);
        assert.equal(epoch.retryable, false);

        const owner = await rejectsWith(call('owner'), ErrorCodes.NotOwner, 'NotOwnerError');
        assert.ok(owner instanceof NotOwnerError);
        assert.match(owner.message, /node-x no longer runs task 2/);
        assert.deepEqual(owner.details, { task: 2, token: '99' });
        assert.equal(owner.retryable, true);

        const conflict = await rejectsWith(call('conflict'), ErrorCodes.Conflict, 'ConflictError');
        assert.equal(conflict.retryable, true, 'a retryable flag set by the handler must survive the wire');
        assert.deepEqual(conflict.details, { nested: { a: [1, 'two', null] }, flag: false });
      });

      it('turns a plain Error, or a thrown non-error, into APPLICATION', async () => {
        const [a, b] = [await h.node(), await h.node()];
        const server = await serveAll(a, {
          plain: async () => {
            throw new TypeError('cannot read the thing');
          },
          sync: () => {
            throw new Error('thrown synchronously');
          },
          stringy: async () => {
            throw 'just a string' as unknown as Error;
          },
        });
        const call = (method: string): Promise<Uint8Array> => b.call(server.address, method, makeMeta(), new Uint8Array(0), { timeoutMs: patience });
        const plain = await rejectsWith(call('plain'), ErrorCodes.Application, 'a TypeError');
        assert.match(plain.message, /cannot read the thing/);
        assert.equal(plain.details['name'], 'TypeError');
        assert.equal(plain.retryable, false);
        const sync = await rejectsWith(call('sync'), ErrorCodes.Application, 'a synchronous throw');
        assert.match(sync.message, /thrown synchronously/);
        const stringy = await rejectsWith(call('stringy'), ErrorCodes.Application, 'a thrown string');
        assert.match(stringy.message, /just a string/);
      });

      it('reports an unreachable address as UnavailableError, retryable', async () => {
        const b = await h.node();
        const address = await options.unreachableAddress();
        const err = await rejectsWith(
          b.call(address, 'anything', makeMeta(), text('x'), { timeoutMs: ms(20_000) }),
          ErrorCodes.Unavailable,
          `a call to ${address}`,
        );
        assert.equal(err.retryable, true);
      });
    });

    describe('deadlines and cancellation', () => {
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
        await waitFor(() => signal?.aborted === true, 'the handler\'s signal aborts after the caller\'s deadline', patience);
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
        await waitFor(() => signal?.aborted === true, 'the handler\'s signal aborts after the caller aborted', patience);

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
        await waitFor(() => runs === 2, 'the second call reaches its handler', patience);
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
        await waitFor(() => waiting === 6, 'all six calls reach their handler', patience);
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
    });

    describe('closing', () => {
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
        await waitFor(() => started === 3, 'three calls are running', patience);
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
        await waitFor(() => signal !== undefined, 'the call is running', patience);
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
        await waitFor(() => signals.length === 1, 'b\'s call is running', patience);
        await b.close();
        await fromB;
        await waitFor(() => signals[0]?.aborted === true, 'the handler\'s signal aborts when the caller\'s transport closes', patience);
        await rejectsWith(b.call(server.address, 'echo', makeMeta(), text('x'), { timeoutMs: patience }), ErrorCodes.Closed, 'a call after close');
        await rejectsWith(b.listen({ handler: async () => new Uint8Array(0) }), ErrorCodes.Closed, 'listen after close');
        await b.close();

        // a's server is closed with it: c's call in flight is cut, later calls are refused.
        const fromC = rejectsWith(
          c.call(server.address, 'stuck', makeMeta(), text('c'), { timeoutMs: ms(40_000) }),
          ErrorCodes.Unavailable,
          'a call in flight at a closed transport\'s server',
        );
        await waitFor(() => signals.length === 2, 'c\'s call is running', patience);
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
        for (const t of open.splice(0)) await t.close();
        const deadline = performance.now() + patience;
        let excess = resourceExcess(baseline, resourceCounts());
        while (excess.length > 0 && performance.now() < deadline) {
          await sleep(20);
          excess = resourceExcess(baseline, resourceCounts());
        }
        assert.deepEqual(excess, [], 'handles left open after closing every transport (type: now > before the suite)');
      });
    });
  });
}
