/** Calls: payloads and meta arrive intact, handlers run apart from call(), every node reaches every server, concurrency, size limits, bad arguments. */
import assert from 'node:assert/strict';
import type { InboundRequest, RequestMeta, TransportServer } from '@taskgraph/api';
import { ErrorCodes } from '@taskgraph/api';
import type { SuiteContext } from './context.js';
import { echo, serveAll } from './context.js';
import { makeMeta, pattern, rejectsWith, sameBytes, sleep, text, untext } from './helpers.js';

export function callTests(s: SuiteContext): void {
  const { it, h, ms, patience, largeBytes, options } = s;

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

  it('carries a well-formed W3C trace context and drops a malformed one without failing the call', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const seen: RequestMeta[] = [];
    const server = await serveAll(a, {
      Trace: (req) => {
        seen.push(req.meta);
        return text('ok');
      },
    });
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const cases: Array<{ sent: Partial<RequestMeta>; arrives: { traceparent?: string; tracestate?: string } }> = [
      { sent: { traceparent }, arrives: { traceparent } },
      { sent: { traceparent, tracestate: 'congo=t61rcWkgMzE,ro;jo=00%f0' }, arrives: { traceparent, tracestate: 'congo=t61rcWkgMzE,ro;jo=00%f0' } },
      { sent: { traceparent: 'not-a-traceparent', tracestate: 'k=v' }, arrives: {} },
      { sent: { traceparent: `${traceparent};x` }, arrives: {} },
      { sent: { traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` }, arrives: {} },
      { sent: { traceparent: `01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-${'x'.repeat(4096)}` }, arrives: {} },
      { sent: { traceparent, tracestate: 'k=v\n' }, arrives: { traceparent } },
      { sent: { traceparent, tracestate: 'k='.padEnd(10_000, 'v') }, arrives: { traceparent } },
    ];
    for (const { sent, arrives } of cases) {
      const meta = makeMeta(sent);
      const out = await b.call(server.address, 'Trace', meta, text('m'), { timeoutMs: patience });
      assert.equal(untext(out), 'ok');
      const got = seen.at(-1);
      assert.ok(got !== undefined);
      const { traceparent: _p, tracestate: _s, ...rest } = meta;
      assert.deepEqual({ ...got }, { ...rest, ...arrives }, `sent ${JSON.stringify(sent).slice(0, 120)}`);
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
        // Not a wait: a few ms of jitter so the answers come back out of order.
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
}
