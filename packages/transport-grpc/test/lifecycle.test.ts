import { afterEach, describe, expect, it } from 'vitest';
import { ClosedError, ErrorCodes, TaskGraphError, UnavailableError } from '@taskgraph/api';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport, GrpcTransportServer } from '../src/index.js';
import { eventually, rejection } from '@taskgraph/testkit';
import { bytes, meta, socketHandles, text } from './helpers.js';

const opts = { timeoutMs: 10_000 };
const echo = { methods: ['Echo'], handler: async (req: { payload: Uint8Array }) => req.payload };

const opened: GrpcTransport[] = [];
async function transport(options: Parameters<typeof createGrpcTransport>[0] = { host: '127.0.0.1' }): Promise<GrpcTransport> {
  const t = await createGrpcTransport(options);
  opened.push(t);
  return t;
}
afterEach(async () => {
  await Promise.all(opened.splice(0).map((t) => t.close()));
});

describe('channels and connections', () => {
  it.each([
    ['stream', 1],
    ['unary', 51],
  ] as const)('uses one channel and one TCP connection per peer across many calls (%s: %i HTTP/2 streams)', async (dataPlane, streams) => {
    const a = await transport();
    const b = await transport();
    const serverA = await a.listen(echo);
    const serverB = await b.listen(echo);
    const caller = await transport({ host: '127.0.0.1', dataPlane });

    await caller.call(serverA.address, 'Echo', meta(), bytes('first'), opts);
    const first = caller.peerStats(serverA.address)!;
    expect(first.connections).toHaveLength(1);
    const serverSide = serverA.stats().connections;
    expect(serverSide).toHaveLength(1);

    for (let i = 0; i < 50; i++) {
      await Promise.all([
        caller.call(serverA.address, 'Echo', meta({ requestId: `a${i}` }), bytes(`a${i}`), opts),
        caller.call(serverB.address, 'Echo', meta({ requestId: `b${i}` }), bytes(`b${i}`), opts),
      ]);
    }
    const stats = caller.stats();
    expect(stats.channels).toBe(2);
    const peerA = caller.peerStats(serverA.address)!;
    expect(peerA.state).toBe('READY');
    expect(peerA.calls).toBe(51);
    // The same connection, on both ends, for every call: channelz socket ids are never reused.
    expect(peerA.connections.map((c) => c.id)).toEqual([first.connections[0]!.id]);
    expect(serverA.stats().connections.map((c) => c.id)).toEqual([serverSide[0]!.id]);
    expect(serverA.stats().connections[0]!.streamsStarted).toBe(streams);
    expect(peerA.dataPlane).toBe(dataPlane);
    expect(caller.peerStats(serverB.address)!.connections).toHaveLength(1);
    expect(serverB.stats().connections).toHaveLength(1);
  });

  it('gives each transport in a process its own connection (no shared subchannels)', async () => {
    const server = await (await transport()).listen(echo);
    const one = await transport();
    const two = await transport();
    await one.call(server.address, 'Echo', meta(), bytes('1'), opts);
    await two.call(server.address, 'Echo', meta(), bytes('2'), opts);
    expect(server.stats().connections).toHaveLength(2);
    one.forget(server.address);
    await eventually('the server has one connection left', () => server.stats().connections.length === 1);
    expect(text(await two.call(server.address, 'Echo', meta(), bytes('still'), opts))).toBe('still');
  });

  it('forget(address) closes the channel and its connection; the next call opens new ones', async () => {
    const server = await (await transport()).listen(echo);
    const caller = await transport();
    await caller.call(server.address, 'Echo', meta(), bytes('x'), opts);
    const before = server.stats().connections.map((c) => c.id);
    expect(before).toHaveLength(1);

    caller.forget(server.address);
    expect(caller.stats().channels).toBe(0);
    expect(caller.peerStats(server.address)).toBeUndefined();
    await eventually('the server sees the connection close', () => server.stats().connections.length === 0);

    await caller.call(server.address, 'Echo', meta(), bytes('y'), opts);
    expect(caller.stats().channels).toBe(1);
    const after = server.stats().connections.map((c) => c.id);
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before[0]);

    // Forgetting an unknown or malformed address is a no-op.
    caller.forget('127.0.0.1:1');
    caller.forget('not an address');
    expect(caller.stats().channels).toBe(1);
  });

  it('forget(address) lets calls in flight on the channel finish, then its connection closes', async () => {
    let release: (() => void) | undefined;
    const server = await (await transport()).listen({
      methods: ['Slow'],
      handler: async (req) => {
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return req.payload;
      },
    });
    const caller = await transport();
    const pending = caller.call(server.address, 'Slow', meta(), bytes('kept'), opts);
    await eventually('the call is in flight', () => release !== undefined);
    caller.forget(server.address);
    expect(caller.stats().channels).toBe(0);
    release?.();
    expect(text(await pending)).toBe('kept');
    await eventually('the forgotten connection is closed', () => server.stats().connections.length === 0);
  });

  it('close() closes every channel and server, leaves no sockets, and refuses further use', async () => {
    // The previous test's sockets may still be closing: they count in the baseline.
    const baseline = socketHandles();
    const t = await createGrpcTransport({ host: '127.0.0.1' });
    const other = await createGrpcTransport({ host: '127.0.0.1' });
    const s1 = await t.listen(echo);
    const s2 = await other.listen(echo);
    await t.call(s2.address, 'Echo', meta(), bytes('x'), opts);
    await other.call(s1.address, 'Echo', meta(), bytes('x'), opts);
    expect(socketHandles()).toBeGreaterThan(baseline);
    expect(t.stats()).toMatchObject({ channels: 1, servers: 1 });

    await Promise.all([t.close(), other.close()]);
    expect(t.stats()).toMatchObject({ channels: 0, servers: 0 });
    await eventually('every socket is closed', () => socketHandles() <= baseline);

    await expect(t.call(s2.address, 'Echo', meta(), bytes('x'), opts)).rejects.toBeInstanceOf(ClosedError);
    await expect(t.listen(echo)).rejects.toBeInstanceOf(ClosedError);
    await t.close();
  });
});

describe('keepalive', () => {
  it('pings an idle connection without the server dropping it (no GOAWAY too_many_pings)', async () => {
    const server = await (await transport({ host: '127.0.0.1', keepaliveTimeMs: 100, keepaliveTimeoutMs: 5_000 })).listen(echo);
    const caller = await transport({ host: '127.0.0.1', keepaliveTimeMs: 100, keepaliveTimeoutMs: 5_000 });
    await caller.call(server.address, 'Echo', meta(), bytes('x'), opts);
    const clientConn = caller.peerStats(server.address)!.connections[0]!;
    const serverConn = server.stats().connections[0]!;

    // Idle: no calls, only pings, both ways, for many ping intervals.
    await eventually('the client sent 10 pings', () => (caller.peerStats(server.address)!.connections[0]?.keepalivesSent ?? 0) >= 10, { timeoutMs: 20_000 });
    await eventually('the server sent 10 pings', () => (server.stats().connections[0]?.keepalivesSent ?? 0) >= 10, { timeoutMs: 20_000 });

    const peer = caller.peerStats(server.address)!;
    expect(peer.state).toBe('READY');
    expect(peer.connections.map((c) => c.id)).toEqual([clientConn.id]);
    expect(server.stats().connections.map((c) => c.id)).toEqual([serverConn.id]);
    expect(text(await caller.call(server.address, 'Echo', meta(), bytes('after'), opts))).toBe('after');
    expect(server.stats().connections.map((c) => c.id)).toEqual([serverConn.id]);
  });
});

describe('graceful close', () => {
  function gated() {
    const waiting: Array<() => void> = [];
    const aborts: unknown[] = [];
    const listen = {
      methods: ['Slow', 'Echo'],
      handler: async (req: { method: string; payload: Uint8Array; signal: AbortSignal }) => {
        if (req.method === 'Echo') return req.payload;
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          req.signal.addEventListener('abort', () => {
            aborts.push(req.signal.reason);
            resolve();
          });
        });
        return bytes(`done ${text(req.payload)}`);
      },
    };
    return { waiting, aborts, listen };
  }

  it('stops taking calls and lets calls in flight finish', async () => {
    const g = gated();
    const server: GrpcTransportServer = await (await transport()).listen(g.listen);
    const caller = await transport();
    const inFlight = [1, 2, 3].map((i) => caller.call(server.address, 'Slow', meta(), bytes(String(i)), opts));
    await eventually('three calls are in flight', () => g.waiting.length === 3);
    expect(server.stats().callsInFlight).toBe(3);

    const closed = server.close({ graceMs: 30_000 });
    // A new caller cannot get in: the listener is closed.
    const late = await transport();
    const err = await rejection(late.call(server.address, 'Echo', meta(), bytes('x'), opts));
    expect(err).toBeInstanceOf(UnavailableError);

    for (const release of g.waiting) release();
    expect((await Promise.all(inFlight)).map(text)).toEqual(['done 1', 'done 2', 'done 3']);
    await closed;
    expect(g.aborts).toEqual([]);
    expect(server.stats().callsInFlight).toBe(0);
  });

  it('after graceMs aborts the handlers (ClosedError) and answers UnavailableError', async () => {
    const g = gated();
    const server = await (await transport()).listen(g.listen);
    const caller = await transport();
    const inFlight = rejection(caller.call(server.address, 'Slow', meta(), bytes('x'), opts));
    await eventually('the call is in flight', () => g.waiting.length === 1);
    await server.close({ graceMs: 100 });
    const err = await inFlight;
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.retryable).toBe(true);
    expect(err.details).toMatchObject({ maybeDelivered: true });
    expect(g.aborts).toHaveLength(1);
    expect(TaskGraphError.is(g.aborts[0], ErrorCodes.Closed)).toBe(true);
  });

  it("closing the caller's transport fails its calls in flight with ClosedError and the handler hears it", async () => {
    const g = gated();
    const server = await (await transport()).listen(g.listen);
    const caller = await createGrpcTransport({ host: '127.0.0.1' });
    const inFlight = rejection(caller.call(server.address, 'Slow', meta(), bytes('x'), opts));
    await eventually('the call is in flight', () => g.waiting.length === 1);
    await caller.close();
    expect(await inFlight).toBeInstanceOf(ClosedError);
    await eventually('the handler hears the cancel', () => g.aborts.length === 1);
    expect(TaskGraphError.is(g.aborts[0], ErrorCodes.Aborted)).toBe(true);
  });

  it('close is idempotent and rejects a bad graceMs', async () => {
    const server = await (await transport()).listen(echo);
    await expect(server.close({ graceMs: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await Promise.all([server.close({ graceMs: 0 }), server.close()]);
    server.serve(['Echo']);
    expect(server.stats().methods).toEqual([]);
  });
});

describe('listening and the advertised address', () => {
  const env = 'TASKGRAPH_ADVERTISE_HOST';
  afterEach(() => {
    delete process.env[env];
  });

  it('advertises the listen host and the bound port', async () => {
    const server = await (await transport('grpc://127.0.0.1:0')).listen(echo);
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(server.address).not.toBe('127.0.0.1:0');
  });

  it('on 0.0.0.0 advertises 127.0.0.1 by default, and it is dialable', async () => {
    const server = await (await transport('grpc://0.0.0.0:0')).listen(echo);
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const caller = await transport();
    expect(text(await caller.call(server.address, 'Echo', meta(), bytes('hi'), opts))).toBe('hi');
  });

  it('on 0.0.0.0 advertises the advertise option, else TASKGRAPH_ADVERTISE_HOST', async () => {
    const t = await transport('grpc://0.0.0.0:0?advertise=10.0.0.5');
    const s = await t.listen(echo);
    expect(s.address).toMatch(/^10\.0\.0\.5:\d+$/);
    expect(s.address.split(':')[1]).toBe(String(Number(s.address.split(':')[1])));

    process.env[env] = 'node-7.cluster.local';
    const s2 = await (await transport('grpc://0.0.0.0:0')).listen(echo);
    expect(s2.address).toMatch(/^node-7\.cluster\.local:\d+$/);

    const s3 = await (await transport({ advertise: 'gateway.example:443' })).listen(echo);
    expect(s3.address).toBe('gateway.example:443');

    const s4 = await (await transport({ host: '::', advertise: '::1' })).listen(echo);
    expect(s4.address).toMatch(/^\[::1\]:\d+$/);
    const caller = await transport();
    expect(text(await caller.call(s4.address, 'Echo', meta(), bytes('v6'), opts))).toBe('v6');
  });

  it('a port in use is UnavailableError', async () => {
    const first = await (await transport()).listen(echo);
    const port = Number(first.address.split(':')[1]);
    const t = await transport({ host: '127.0.0.1', port });
    const err = await rejection(t.listen(echo));
    expect(err.code).toBe(ErrorCodes.Unavailable);
    expect(err.message).toContain(`127.0.0.1:${port}`);
  });

  it('one transport can run several servers on port 0', async () => {
    const t = await transport();
    const [s1, s2] = await Promise.all([t.listen(echo), t.listen(echo)]);
    expect(s1.address).not.toBe(s2.address);
    expect(t.stats().servers).toBe(2);
    await s1.close({ graceMs: 0 });
    expect(t.stats().servers).toBe(1);
  });
});
