import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { create, toBinary } from '@bufbuild/protobuf';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { DecodeFailedError, ErrorCodes, TaskGraphError } from '@taskgraph/api';
import type { MethodSpec } from '@taskgraph/api';
import { createGrpcTransport, protobufCodec } from '../src/index.js';
import type { GrpcTransport, GrpcTransportServer } from '../src/index.js';
import { goodHeaders, meta, plainCall, plainClient, plainMetadata } from './helpers.js';
import { GradientSchema, InnerSchema } from './proto-fixture.js';
import type { Gradient } from './proto-fixture.js';

const codec = protobufCodec(GradientSchema);

describe('protobufCodec', () => {
  it('is named after the message type', () => {
    expect(codec.name).toBe('protobuf:test.v1.Gradient');
  });

  it('writes standard protobuf bytes', () => {
    const g = create(GradientSchema, { name: 'a', step: 2n });
    // field 1 (string, wire type 2) "a", field 3 (varint) 2
    expect([...codec.encode(g)]).toEqual([0x0a, 0x01, 0x61, 0x18, 0x02]);
    expect(codec.encode(g)).toEqual(toBinary(GradientSchema, g));
  });

  it('round-trips every field', () => {
    const g = create(GradientSchema, { name: 'g-1', values: [0.5, -1, 1e300], step: 9_007_199_254_740_993n, inner: { ok: true } });
    const back: Gradient = codec.decode(codec.encode(g));
    expect(back.name).toBe('g-1');
    expect(back.values).toEqual([0.5, -1, 1e300]);
    expect(back.step).toBe(9_007_199_254_740_993n);
    expect(back.inner?.ok).toBe(true);
  });

  it('decodes bytes that are not the message as DecodeFailedError', () => {
    for (const bad of [new Uint8Array([0xff, 0xff, 0xff]), new Uint8Array([0x0a, 0x05, 0x61]), new Uint8Array([0x12, 0x03, 0, 0])]) {
      let caught: unknown;
      try {
        codec.decode(bad);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(DecodeFailedError);
      expect((caught as DecodeFailedError).message).toContain('protobuf:test.v1.Gradient');
      expect((caught as DecodeFailedError).details).toMatchObject({ codec: 'protobuf:test.v1.Gradient', size: bad.length });
    }
    expect(() => codec.decode('text' as unknown as Uint8Array)).toThrow(DecodeFailedError);
  });

  it('keeps unknown fields by default and can drop them', () => {
    // A newer sender's field 15 (varint 1) is kept and written back out.
    const w = new BinaryWriter();
    w.tag(1, 2).string('n');
    w.tag(15, 0).int32(1);
    const newer = w.finish();
    expect(codec.encode(codec.decode(newer))).toEqual(newer);
    const strict = protobufCodec(GradientSchema, { unknownFields: false });
    expect(strict.encode(strict.decode(newer))).toEqual(new Uint8Array([0x0a, 0x01, 0x6e]));
  });

  it('refuses to encode another type or a plain object', () => {
    const other = create(InnerSchema, { ok: true });
    expect(() => codec.encode(other as unknown as Gradient)).toThrow(expect.objectContaining({ code: ErrorCodes.InvalidArgument }));
    expect(() => codec.encode({ name: 'x' } as unknown as Gradient)).toThrow(/create\(GradientSchema/);
  });

  it('refuses a schema that is not a message', () => {
    expect(() => protobufCodec({} as never)).toThrow(expect.objectContaining({ code: ErrorCodes.InvalidArgument }));
  });
});

describe('protobuf payloads over the gRPC transport', () => {
  const Scale: MethodSpec<Gradient, Gradient> = { name: 'Scale', input: codec, output: codec };
  let transport: GrpcTransport;
  let server: GrpcTransportServer;

  beforeAll(async () => {
    transport = await createGrpcTransport({ host: '127.0.0.1' });
    server = await transport.listen({
      methods: [Scale.name],
      handler: async (req) => {
        // What the framework does with a MethodSpec: decode, run, encode.
        const input = Scale.input.decode(req.payload);
        return Scale.output.encode(create(GradientSchema, { name: input.name, values: input.values.map((v) => v * 2), step: input.step + 1n }));
      },
    });
  });
  afterAll(async () => {
    await transport.close();
  });

  it('a TaskGraph caller gets the typed message back', async () => {
    const input = create(GradientSchema, { name: 'w', values: [1, 2], step: 1n });
    const out = Scale.output.decode(await transport.call(server.address, 'Scale', meta(), Scale.input.encode(input), { timeoutMs: 10_000 }));
    expect(out.values).toEqual([2, 4]);
    expect(out.step).toBe(2n);
  });

  it('a plain gRPC client speaking only protobuf wire format can call it', async () => {
    // Encoded by hand, as another language's generated code would.
    const w = new BinaryWriter();
    w.tag(1, 2).string('from-python');
    w.tag(2, 2).fork().double(1.5).double(3).join();
    w.tag(3, 0).int64(41n);
    const client = plainClient(server.address);
    try {
      const r = await plainCall(client, '/taskgraph.v1.Task/Scale', Buffer.from(w.finish()), plainMetadata(goodHeaders));
      expect(r.error).toBeNull();
      const out = codec.decode(new Uint8Array(r.value!));
      expect(out).toMatchObject({ name: 'from-python', values: [3, 6], step: 42n });
    } finally {
      client.close();
    }
  });

  it("a payload the handler cannot decode reaches the caller as the handler's DecodeFailedError", async () => {
    let caught: unknown;
    try {
      await transport.call(server.address, 'Scale', meta(), new Uint8Array([0xff, 0xff, 0xff]), { timeoutMs: 10_000 });
    } catch (err) {
      caught = err;
    }
    expect(TaskGraphError.is(caught, ErrorCodes.DecodeFailed)).toBe(true);
    expect((caught as TaskGraphError).message).toContain('protobuf:test.v1.Gradient cannot decode 3 bytes');
    expect((caught as TaskGraphError).details).toEqual({ codec: 'protobuf:test.v1.Gradient', size: 3 });
  });
});
