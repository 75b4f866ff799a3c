// The multiplexed data plane: many calls on one stream per peer, deadlines and
// cancel frames reaching the handler, chunked payloads at and over the limits, a
// stream cut by its server, and malformed frames from a hostile client.
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, TaskGraphError } from '@taskgraph/api';
import type { RequestHandler } from '@taskgraph/api';
import { Client, Metadata, credentials } from '@grpc/grpc-js';
import type { ServiceError, StatusObject } from '@grpc/grpc-js';
import { eventually, freePort, rejection } from '@taskgraph/testkit';
import { createGrpcTransport, TrailerKeys } from '../src/index.js';
import type { GrpcTransport } from '../src/index.js';
import { callFrame, readResponseFrames } from '../src/frames.js';
import { envelopeFromMeta } from '../src/metadata.js';
import { bytes, meta, text } from './helpers.js';

const opened: GrpcTransport[] = [];
async function transport(options: Parameters<typeof createGrpcTransport>[0] = { host: '127.0.0.1' }): Promise<GrpcTransport> {
  const t = await createGrpcTransport(options);
  opened.push(t);
  return t;
}
afterEach(async () => {
  await Promise.all(opened.splice(0).map((t) => t.close()));
});

const opts = { timeoutMs: 20_000 };
const STREAM_PATH = '/taskgraph.v1.Task/_Stream';

describe('one stream per peer', () => {
  it('carries many concurrent calls whose answers come back in another order, each to its caller', async () => {
    // Each handler waits for the one started after it, so the answers leave in reverse order.
    const gates: Array<() => void> = [];
    const n = 64;
    const server = await (await transport()).listen({
      methods: ['Echo'],
      handler: async (req) => {
        const i = gates.length;
        await new Promise<void>((resolve) => gates.push(resolve));
        return bytes(`${text(req.payload)}:${i}`);
      },
    });
    const caller = await transport();
    const calls = Array.from({ length: n }, (_, i) => caller.call(server.address, 'Echo', meta({ requestId: `r${i}` }), bytes(`c${i}`), opts));
    await eventually('every call reached the handler', () => gates.length === n);
    for (let i = n - 1; i >= 0; i--) gates[i]!();
    const answers = (await Promise.all(calls)).map(text);
    for (let i = 0; i < n; i++) expect(answers[i]).toMatch(new RegExp(`^c${i}:\\d+$`));
    expect(new Set(answers.map((a) => a.split(':')[1])).size).toBe(n);

    const peer = caller.peerStats(server.address)!;
    expect(peer.dataPlane).toBe('stream');
    expect(peer.connections).toHaveLength(1);
    expect(server.stats().streams).toBe(1);
    expect(server.stats().connections[0]!.streamsStarted).toBe(1);
    // Calls started in the same turn of the event loop leave together.
    expect(peer.streamWrites.frames).toBeGreaterThan(peer.streamWrites.messages);
  });

  it("a deadline and an abort each send a cancel frame that aborts the handler's signal", async () => {
    const reasons: unknown[] = [];
    const started: string[] = [];
    const server = await (await transport()).listen({
      methods: ['Wait', 'Echo'],
      handler: async (req) => {
        if (req.method === 'Echo') return req.payload;
        started.push(req.meta.requestId);
        await new Promise<void>((resolve) => req.signal.addEventListener('abort', () => resolve(), { once: true }));
        reasons.push(req.signal.reason);
        return bytes('late');
      },
    });
    const caller = await transport();
    const late = await rejection(caller.call(server.address, 'Wait', meta({ requestId: 'deadline' }), bytes('x'), { timeoutMs: 200 }));
    expect(late.code).toBe(ErrorCodes.DeadlineExceeded);
    await eventually('the handler hears of the deadline', () => reasons.length === 1);

    const controller = new AbortController();
    const pending = rejection(caller.call(server.address, 'Wait', meta({ requestId: 'abort' }), bytes('x'), { timeoutMs: 20_000, signal: controller.signal }));
    await eventually('the second call reached the handler', () => started.length === 2);
    controller.abort();
    expect((await pending).code).toBe(ErrorCodes.Aborted);
    await eventually('the handler hears of the abort', () => reasons.length === 2);
    expect(reasons.every((r) => TaskGraphError.is(r))).toBe(true);
    expect(server.stats().callsInFlight).toBe(0);
    // The stream is still the one it was: cancelling a call does not cost the others their stream.
    expect(text(await caller.call(server.address, 'Echo', meta(), bytes('after'), opts))).toBe('after');
    expect(server.stats().connections[0]!.streamsStarted).toBe(1);
  });
});

describe('payloads at and over the limits', () => {
  const MiB = 1024 * 1024;
  const make: RequestHandler = async (req) => new Uint8Array(Buffer.from(req.payload).readUInt32BE(0));
  function ask(n: number, size: number): Uint8Array {
    const b = Buffer.alloc(Math.max(4, size));
    b.writeUInt32BE(n, 0);
    for (let i = 4; i < b.length; i++) b[i] = i & 0xff;
    return new Uint8Array(b);
  }

  it('a payload of exactly maxMessageBytes travels whole both ways, split across stream messages', async () => {
    const t = await transport({ host: '127.0.0.1', maxMessageBytes: 2 * MiB });
    const server = await t.listen({ methods: ['Echo'], handler: async (req) => req.payload });
    const payload = ask(0, 2 * MiB);
    const small = Array.from({ length: 8 }, (_, i) => t.call(server.address, 'Echo', meta(), bytes(`s${i}`), opts));
    const out = await t.call(server.address, 'Echo', meta(), payload, opts);
    expect(Buffer.from(out).equals(Buffer.from(payload))).toBe(true);
    expect((await Promise.all(small)).map(text)).toEqual(Array.from({ length: 8 }, (_, i) => `s${i}`));
    expect(t.peerStats(server.address)!.streamWrites.messages).toBeGreaterThan(2);
  });

  it('over the limits: typed InvalidArgumentError per call, and the stream keeps serving', async () => {
    const big = await transport({ host: '127.0.0.1', maxMessageBytes: 4 * MiB });
    const small = await transport({ host: '127.0.0.1', maxMessageBytes: MiB });
    const smallServer = await small.listen({ methods: ['Make'], handler: make });
    const bigServer = await big.listen({ methods: ['Make'], handler: make });

    // Over the caller's own limit: refused before sending.
    const own = await rejection(small.call(bigServer.address, 'Make', meta(), ask(1, MiB + 1), opts));
    expect(own.code).toBe(ErrorCodes.InvalidArgument);
    // A request over the server's limit, refused by its declared size.
    const request = await rejection(big.call(smallServer.address, 'Make', meta(), ask(1, 2 * MiB), opts));
    expect(request.code).toBe(ErrorCodes.InvalidArgument);
    expect(request.details).toMatchObject({ limit: MiB });
    // An answer over the server's limit, and one over the caller's.
    const answer = await rejection(big.call(smallServer.address, 'Make', meta(), ask(2 * MiB, 8), opts));
    expect(answer.code).toBe(ErrorCodes.InvalidArgument);
    const mine = await rejection(small.call(bigServer.address, 'Make', meta(), ask(2 * MiB, 8), opts));
    expect(mine.code).toBe(ErrorCodes.InvalidArgument);

    expect((await big.call(smallServer.address, 'Make', meta(), ask(10, 8), opts)).byteLength).toBe(10);
    expect((await small.call(bigServer.address, 'Make', meta(), ask(10, 8), opts)).byteLength).toBe(10);
    expect(smallServer.stats().connections[0]!.streamsStarted).toBe(1);
    expect(bigServer.stats().connections[0]!.streamsStarted).toBe(1);
  });
});

describe('a broken stream', () => {
  it('a server closed mid-call fails the call retryable; the next call opens a new stream', async () => {
    const port = await freePort();
    const host = await transport({ host: '127.0.0.1', port });
    const first = await host.listen({ methods: ['Wait'], handler: (req) => new Promise((_, reject) => req.signal.addEventListener('abort', () => reject(req.signal.reason as Error))) });
    const caller = await transport();
    const pending = rejection(caller.call(first.address, 'Wait', meta(), bytes('x'), opts));
    await eventually('the call is in flight', () => first.stats().callsInFlight === 1);
    await first.close({ graceMs: 0 });
    const err = await pending;
    expect(err.code).toBe(ErrorCodes.Unavailable);
    expect(err.retryable).toBe(true);

    const second = await host.listen({ methods: ['Echo'], handler: async (req) => req.payload });
    expect(second.address).toBe(first.address);
    expect(text(await caller.call(second.address, 'Echo', meta(), bytes('again'), opts))).toBe('again');
    expect(second.stats().streams).toBe(1);
  });
});

describe('hostile stream clients', () => {
  function openStream(address: string): { client: Client; status: Promise<StatusObject>; frames: Buffer[]; write(b: Buffer): void } {
    const client = new Client(address, credentials.createInsecure());
    const call = client.makeBidiStreamRequest<Buffer, Buffer>(STREAM_PATH, (b) => b, (b) => b, new Metadata());
    const frames: Buffer[] = [];
    call.on('data', (b: Buffer) => frames.push(b));
    call.on('error', () => undefined);
    const status = new Promise<StatusObject>((resolve) => call.on('status', resolve));
    return { client, status, frames, write: (b) => call.write(b) };
  }

  it('a malformed stream message ends that stream with a typed DecodeFailedError; the server keeps serving', async () => {
    const server = await (await transport()).listen({ methods: ['Echo'], handler: async (req) => req.payload });
    const s = openStream(server.address);
    s.write(Buffer.from([9, 9, 9]));
    const st = await s.status;
    expect(st.metadata.get(TrailerKeys.errorCode)).toEqual([ErrorCodes.DecodeFailed]);
    s.client.close();
    // A frame cut short, too.
    const t = openStream(server.address);
    t.write(Buffer.from([1, 0, 0, 0, 1, 0, 0]));
    expect((await t.status).metadata.get(TrailerKeys.errorCode)).toEqual([ErrorCodes.DecodeFailed]);
    t.client.close();

    const caller = await transport();
    expect(text(await caller.call(server.address, 'Echo', meta(), bytes('fine'), opts))).toBe('fine');
  });

  it('a well-framed call with a bad envelope, or to a method not served, gets its own typed error frame', async () => {
    const server = await (await transport()).listen({ methods: ['Echo'], handler: async (req) => req.payload });
    const s = openStream(server.address);
    const bad = callFrame(1, 5_000, 'Echo', 'not;an;envelope', '', bytes('x'));
    const unserved = callFrame(2, 5_000, 'Nope', envelopeFromMeta(meta()), '', bytes('x'));
    const good = callFrame(3, 5_000, 'Echo', envelopeFromMeta(meta()), '', bytes('ok'));
    const wire = (f: ReturnType<typeof callFrame>): Buffer => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(f.payload.byteLength, 0);
      return Buffer.concat([f.head, len, f.payload]);
    };
    s.write(Buffer.concat([wire(bad), wire(unserved), wire(good)]));
    await eventually('three answers came back', () => s.frames.flatMap((m) => readResponseFrames(m)).length === 3);
    const answers = s.frames.flatMap((m) => readResponseFrames(m));
    const byId = new Map(answers.map((f) => [f.id, f]));
    const codeOf = (id: number): string | undefined => {
      const f = byId.get(id);
      return f?.kind === 2 ? (JSON.parse(Buffer.from(f.json).toString('utf8')) as { code: string }).code : undefined;
    };
    expect(codeOf(1)).toBe(ErrorCodes.InvalidArgument);
    expect(codeOf(2)).toBe(ErrorCodes.MethodNotFound);
    const ok = byId.get(3);
    expect(ok?.kind === 1 ? text(ok.chunk) : undefined).toBe('ok');
    s.client.close();
  });
});

describe('peers without the stream', () => {
  it('a plain gRPC server gets unary calls, including the first', async () => {
    const { Server, ServerCredentials } = await import('@grpc/grpc-js');
    const plain = new Server();
    plain.addService(
      { Echo: { path: '/taskgraph.v1.Task/Echo', requestStream: false, responseStream: false, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } },
      { Echo: (call: { request: Buffer }, cb: (e: ServiceError | null, v: Buffer) => void) => cb(null, call.request) },
    );
    const port = await new Promise<number>((resolve, reject) => plain.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    try {
      const caller = await transport();
      const address = `127.0.0.1:${port}`;
      const outs = await Promise.all([1, 2, 3].map((i) => caller.call(address, 'Echo', meta(), bytes(`p${i}`), opts)));
      expect(outs.map(text)).toEqual(['p1', 'p2', 'p3']);
      expect(caller.peerStats(address)!.dataPlane).toBe('unary');
    } finally {
      plain.forceShutdown();
    }
  });
});
