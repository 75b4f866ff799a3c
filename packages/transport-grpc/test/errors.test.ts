import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, Server, ServerCredentials, status as Status } from '@grpc/grpc-js';
import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import {
  AbortedError,
  DecodeFailedError,
  EpochChangedError,
  ErrorCodes,
  InvalidArgumentError,
  JobDoneError,
  NotOwnerError,
  TaskGraphError,
  UnavailableError,
} from '@taskgraph/api';
import type { InboundRequest, RequestHandler } from '@taskgraph/api';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport, GrpcTransportServer } from '../src/index.js';
import { eventually, freePort, rejection } from '@taskgraph/testkit';
import { bytes, goodHeaders, meta, plainCall, plainClient, plainMetadata, text } from './helpers.js';

const opts = { timeoutMs: 10_000 };

describe('handler errors travel as gRPC statuses and come back typed', () => {
  let transport: GrpcTransport;
  let server: GrpcTransportServer;
  let handler: RequestHandler = async (req) => req.payload;

  beforeAll(async () => {
    transport = await createGrpcTransport('grpc://127.0.0.1:0');
    server = await transport.listen({ methods: ['M'], handler: (req) => handler(req) });
  });
  afterAll(async () => {
    await transport.close();
  });

  const call = () => transport.call(server.address, 'M', meta(), bytes('x'), opts);

  async function plain() {
    const client = plainClient(server.address);
    try {
      return await plainCall(client, '/taskgraph.v1.Task/M', Buffer.from('x'), plainMetadata(goodHeaders));
    } finally {
      client.close();
    }
  }

  it('EpochChanged: FAILED_PRECONDITION with the server epoch, rebuilt as EpochChangedError', async () => {
    handler = async () => {
      throw new EpochChangedError('request epoch 3 is not current', { details: { current: 5, requested: 3 } });
    };
    const err = await rejection(call());
    expect(err).toBeInstanceOf(EpochChangedError);
    expect(err.code).toBe(ErrorCodes.EpochChanged);
    expect(err.message).toBe('request epoch 3 is not current');
    expect((err as EpochChangedError).currentEpoch).toBe(5);
    expect(err.details).toEqual({ current: 5, requested: 3 });

    const r = await plain();
    expect(r.error?.code).toBe(Status.FAILED_PRECONDITION);
    expect(r.trailers?.get('tg-error-code')).toEqual(['EPOCH_CHANGED']);
    expect(r.trailers?.get('tg-current-epoch')).toEqual(['5']);
    const wire = JSON.parse((r.trailers?.get('tg-error-bin')[0] as Buffer).toString('utf8')) as Record<string, unknown>;
    expect(wire).toMatchObject({ code: 'EPOCH_CHANGED', message: 'request epoch 3 is not current', details: { current: 5 } });
  });

  it('NotOwner: ABORTED, told apart from other errors, retryable', async () => {
    handler = async () => {
      throw new NotOwnerError('token 7 is stale; the owner is now token 8', { details: { token: '8' } });
    };
    const err = await rejection(call());
    expect(err).toBeInstanceOf(NotOwnerError);
    expect(err.retryable).toBe(true);
    expect(err.details).toEqual({ token: '8' });
    const r = await plain();
    expect(r.error?.code).toBe(Status.ABORTED);
    expect(r.trailers?.get('tg-error-code')).toEqual(['NOT_OWNER']);
  });

  it('DecodeFailed: INVALID_ARGUMENT on the wire, DecodeFailedError intact at the caller', async () => {
    handler = async () => {
      throw new DecodeFailedError('input of M is not a valid protobuf:x.Y', { details: { codec: 'protobuf:x.Y', size: 1 } });
    };
    const err = await rejection(call());
    expect(err).toBeInstanceOf(DecodeFailedError);
    expect(err.message).toBe('input of M is not a valid protobuf:x.Y');
    expect(err.details).toEqual({ codec: 'protobuf:x.Y', size: 1 });
    const r = await plain();
    expect(r.error?.code).toBe(Status.INVALID_ARGUMENT);
    expect(r.trailers?.get('tg-error-code')).toEqual(['DECODE_FAILED']);
  });

  it('maps the other codes to the documented statuses', async () => {
    const cases: Array<[TaskGraphError, Status]> = [
      [new InvalidArgumentError('bad'), Status.INVALID_ARGUMENT],
      [new UnavailableError('busy'), Status.UNAVAILABLE],
      [new JobDoneError('done'), Status.FAILED_PRECONDITION],
      [new AbortedError('stopped'), Status.CANCELLED],
    ];
    for (const [thrown, grpcStatus] of cases) {
      handler = async () => {
        throw thrown;
      };
      const err = await rejection(call());
      expect(err.code).toBe(thrown.code);
      expect(err.retryable).toBe(thrown.retryable);
      expect(err.message).toBe(thrown.message);
      const r = await plain();
      expect(r.error?.code).toBe(grpcStatus);
    }
  });

  it('a plain Error becomes APPLICATION (gRPC UNKNOWN) with its name', async () => {
    handler = async () => {
      throw new RangeError('out of range');
    };
    const err = await rejection(call());
    expect(err.code).toBe(ErrorCodes.Application);
    expect(err.message).toBe('out of range');
    expect(err.details).toEqual({ name: 'RangeError' });
    const r = await plain();
    expect(r.error?.code).toBe(Status.UNKNOWN);
  });

  it('a handler that throws synchronously or returns no bytes is answered, not crashed', async () => {
    handler = (() => {
      throw new InvalidArgumentError('sync throw');
    }) as unknown as RequestHandler;
    expect((await rejection(call())).message).toBe('sync throw');
    handler = (async () => 'not bytes') as unknown as RequestHandler;
    const err = await rejection(call());
    expect(err.code).toBe(ErrorCodes.Internal);
    expect(err.message).toContain('not a Uint8Array');
  });

  it('a huge error message is shrunk to fit the trailers', async () => {
    handler = async () => {
      throw new InvalidArgumentError('x'.repeat(100_000), { details: { big: 'y'.repeat(50_000), small: 1 } });
    };
    const err = await rejection(call());
    expect(err.code).toBe(ErrorCodes.InvalidArgument);
    expect(err.message.length).toBeLessThan(2_000);
    expect(err.details).toMatchObject({ small: 1, truncated: true });
  });

  it('an unserved method is MethodNotFoundError', async () => {
    const err = await rejection(transport.call(server.address, 'Other', meta(), bytes('x'), opts));
    expect(err.code).toBe(ErrorCodes.MethodNotFound);
    expect(err.message).toContain('Other');
  });
});

describe('a non-TaskGraph gRPC peer: plain statuses mapped by code', () => {
  let peer: Server;
  let address: string;
  let transport: GrpcTransport;
  const answers = new Map<string, { code: Status; details: string; metadata?: Metadata }>();

  beforeAll(async () => {
    peer = new Server();
    const methods = ['M'];
    peer.addService(
      {
        M: {
          path: '/taskgraph.v1.Task/M',
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      {
        M: (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
          const answer = answers.get(call.request.toString());
          if (answer === undefined) callback(null, call.request);
          else callback(answer);
        },
      },
    );
    expect(methods).toHaveLength(1);
    const port = await new Promise<number>((resolve, reject) =>
      peer.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
    transport = await createGrpcTransport({ host: '127.0.0.1' });
  });
  afterAll(async () => {
    await transport.close();
    peer.forceShutdown();
  });

  const expectations: Array<[Status, string]> = [
    [Status.UNAVAILABLE, ErrorCodes.Unavailable],
    [Status.CANCELLED, ErrorCodes.Unavailable],
    [Status.UNIMPLEMENTED, ErrorCodes.MethodNotFound],
    [Status.DEADLINE_EXCEEDED, ErrorCodes.DeadlineExceeded],
    [Status.RESOURCE_EXHAUSTED, ErrorCodes.InvalidArgument],
    [Status.INVALID_ARGUMENT, ErrorCodes.InvalidArgument],
    [Status.NOT_FOUND, ErrorCodes.NotFound],
    [Status.ABORTED, ErrorCodes.NotOwner],
    [Status.UNKNOWN, ErrorCodes.Application],
    [Status.FAILED_PRECONDITION, ErrorCodes.Internal],
    [Status.PERMISSION_DENIED, ErrorCodes.Internal],
    [Status.UNAUTHENTICATED, ErrorCodes.Unauthenticated],
    [Status.INTERNAL, ErrorCodes.Internal],
  ];
  for (const [grpcStatus, code] of expectations) {
    it(`${Status[grpcStatus]} -> ${code}`, async () => {
      const key = `status-${grpcStatus}`;
      answers.set(key, { code: grpcStatus, details: `plain ${Status[grpcStatus]}` });
      const err = await rejection(transport.call(address, 'M', meta(), bytes(key), opts));
      expect(err.code).toBe(code);
      expect(err.details).toMatchObject({ grpcCode: Status[grpcStatus], address, method: 'M' });
    });
  }

  it('a peer that only sends the tg-error-code and tg-current-epoch trailers is understood', async () => {
    const md = new Metadata();
    md.set('tg-error-code', 'EPOCH_CHANGED');
    md.set('tg-current-epoch', '12');
    answers.set('epoch', { code: Status.FAILED_PRECONDITION, details: 'epoch moved', metadata: md });
    const err = await rejection(transport.call(address, 'M', meta(), bytes('epoch'), opts));
    expect(err).toBeInstanceOf(EpochChangedError);
    expect(err.message).toBe('epoch moved');
    expect((err as EpochChangedError).currentEpoch).toBe(12);
  });

  it('answers from the peer on success are the raw bytes', async () => {
    expect(text(await transport.call(address, 'M', meta(), bytes('hello'), opts))).toBe('hello');
  });
});

describe('client-side failures', () => {
  let transport: GrpcTransport;
  let server: GrpcTransportServer;
  const started: InboundRequest[] = [];
  const aborted: unknown[] = [];

  beforeAll(async () => {
    transport = await createGrpcTransport({ host: '127.0.0.1' });
    server = await transport.listen({
      methods: ['Hang', 'Echo'],
      handler: async (req) => {
        if (req.method === 'Echo') return req.payload;
        started.push(req);
        // Hangs until the call is given up, like a slow task.
        await new Promise<void>((resolve) => req.signal.addEventListener('abort', () => resolve(), { once: true }));
        aborted.push(req.signal.reason);
        return new Uint8Array(0);
      },
    });
  });
  afterAll(async () => {
    await transport.close();
  });

  it('an address with nothing listening is UnavailableError (retryable)', async () => {
    const port = await freePort();
    const err = await rejection(transport.call(`127.0.0.1:${port}`, 'Echo', meta(), bytes('x'), opts));
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.retryable).toBe(true);
    transport.forget(`127.0.0.1:${port}`);
  });

  it('a deadline that passes is DeadlineExceededError, and the handler is aborted', async () => {
    started.length = 0;
    aborted.length = 0;
    const err = await rejection(transport.call(server.address, 'Hang', meta(), bytes('x'), { timeoutMs: 300 }));
    expect(err.code).toBe(ErrorCodes.DeadlineExceeded);
    await eventually('the handler is aborted', () => aborted.length === 1);
    // The server sees either its own deadline pass or the caller's cancel at its deadline.
    expect(TaskGraphError.is(aborted[0], ErrorCodes.DeadlineExceeded, ErrorCodes.Aborted)).toBe(true);
  });

  it('aborting the signal cancels the call: AbortedError, and the handler hears the cancel', async () => {
    started.length = 0;
    aborted.length = 0;
    const controller = new AbortController();
    const p = transport.call(server.address, 'Hang', meta(), bytes('x'), { timeoutMs: 60_000, signal: controller.signal });
    await eventually('the handler starts', () => started.length === 1);
    controller.abort();
    const err = await rejection(p);
    expect(err).toBeInstanceOf(AbortedError);
    await eventually('the handler is aborted', () => aborted.length === 1);
    expect(TaskGraphError.is(aborted[0], ErrorCodes.Aborted)).toBe(true);
  });

  it("a TaskGraphError reason of the caller's signal is what the call rejects with", async () => {
    started.length = 0;
    const controller = new AbortController();
    const p = transport.call(server.address, 'Hang', meta(), bytes('x'), { timeoutMs: 60_000, signal: controller.signal });
    await eventually('the handler starts', () => started.length === 1);
    const reason = new EpochChangedError('epoch 4 began', { details: { current: 4 } });
    controller.abort(reason);
    expect(await rejection(p)).toBe(reason);
  });

  it('an already aborted signal rejects without sending', async () => {
    started.length = 0;
    const err = await rejection(transport.call(server.address, 'Hang', meta(), bytes('x'), { timeoutMs: 1_000, signal: AbortSignal.abort() }));
    expect(err).toBeInstanceOf(AbortedError);
    expect(started).toHaveLength(0);
  });

  it('rejects bad input with InvalidArgumentError before sending', async () => {
    const bad: Array<() => Promise<unknown>> = [
      () => transport.call('', 'Echo', meta(), bytes('x'), opts),
      () => transport.call('127.0.0.1', 'Echo', meta(), bytes('x'), opts),
      () => transport.call('127.0.0.1:0', 'Echo', meta(), bytes('x'), opts),
      () => transport.call('http://127.0.0.1:80', 'Echo', meta(), bytes('x'), opts),
      () => transport.call(server.address, 'bad/method', meta(), bytes('x'), opts),
      () => transport.call(server.address, 'Echo', meta({ epoch: -1 }), bytes('x'), opts),
      () => transport.call(server.address, 'Echo', meta({ job: '' }), bytes('x'), opts),
      () => transport.call(server.address, 'Echo', meta({ token: 'abc' }), bytes('x'), opts),
      () => transport.call(server.address, 'Echo', meta({ from: 1.5 }), bytes('x'), opts),
      () => transport.call(server.address, 'Echo', meta(), 'x' as unknown as Uint8Array, opts),
      () => transport.call(server.address, 'Echo', meta(), bytes('x'), { timeoutMs: 0 }),
      () => transport.call(server.address, 'Echo', meta(), bytes('x'), { timeoutMs: Number.NaN }),
    ];
    for (const f of bad) expect((await rejection(f())).code).toBe(ErrorCodes.InvalidArgument);
  });

  it('accepts a grpc:// prefix on the address, and odd job names survive the trip', async () => {
    const out = await transport.call(`grpc://${server.address}`, 'Echo', meta({ job: 'a/b c%d é' }), bytes('ok'), opts);
    expect(text(out)).toBe('ok');
  });
});

describe('message size limits', () => {
  let small: GrpcTransport;
  let big: GrpcTransport;
  let smallServer: GrpcTransportServer;
  let bigServer: GrpcTransportServer;
  const KB = 1024;

  beforeAll(async () => {
    small = await createGrpcTransport({ host: '127.0.0.1', maxMessageBytes: 64 * KB });
    big = await createGrpcTransport({ host: '127.0.0.1' });
    // Answers with as many bytes as the request's first 4 bytes say.
    const handler: RequestHandler = async (req) => new Uint8Array(Buffer.from(req.payload).readUInt32BE(0));
    smallServer = await small.listen({ methods: ['Make'], handler });
    bigServer = await big.listen({ methods: ['Make'], handler });
  });
  afterAll(async () => {
    await Promise.all([small.close(), big.close()]);
  });

  function ask(n: number, extra = 0): Uint8Array {
    const b = Buffer.alloc(4 + extra);
    b.writeUInt32BE(n, 0);
    return new Uint8Array(b);
  }

  it('the default limit is 16 MiB and a 12 MiB request and response travel whole', async () => {
    expect(big.maxMessageBytes).toBe(16 * 1024 * 1024);
    const out = await big.call(bigServer.address, 'Make', meta(), ask(12 * 1024 * 1024, 12 * 1024 * 1024), { timeoutMs: 60_000 });
    expect(out.byteLength).toBe(12 * 1024 * 1024);
  });

  it('a request over the caller limit is refused before sending', async () => {
    const err = await rejection(small.call(bigServer.address, 'Make', meta(), ask(1, 64 * KB), opts));
    expect(err.code).toBe(ErrorCodes.InvalidArgument);
    expect(err.details).toMatchObject({ limit: 64 * KB });
  });

  it('a request over the server limit is InvalidArgumentError', async () => {
    const err = await rejection(big.call(smallServer.address, 'Make', meta(), ask(1, 100 * KB), opts));
    expect(err.code).toBe(ErrorCodes.InvalidArgument);
  });

  it('a response over the server limit is InvalidArgumentError', async () => {
    const err = await rejection(big.call(smallServer.address, 'Make', meta(), ask(100 * KB), opts));
    expect(err.code).toBe(ErrorCodes.InvalidArgument);
    expect(err.message).toContain('response of Make');
  });

  it('a response over the caller limit is InvalidArgumentError', async () => {
    const err = await rejection(small.call(bigServer.address, 'Make', meta(), ask(100 * KB), opts));
    expect(err.code).toBe(ErrorCodes.InvalidArgument);
  });

  it('both still serve normal calls afterwards', async () => {
    expect((await small.call(bigServer.address, 'Make', meta(), ask(10), opts)).byteLength).toBe(10);
    expect((await big.call(smallServer.address, 'Make', meta(), ask(10), opts)).byteLength).toBe(10);
  });
});
