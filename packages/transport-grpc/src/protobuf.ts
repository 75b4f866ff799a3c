/**
 * A Codec for Protocol Buffers messages (@bufbuild/protobuf v2), so a method's
 * payload on the wire is a plain protobuf message that any language's generated
 * code reads. Pass the message schema, e.g. the `GradientSchema` that
 * protoc-gen-es writes into `gradient_pb.ts`.
 */
import { DecodeFailedError, InvalidArgumentError } from '@taskgraph/api';
import type { Codec } from '@taskgraph/api';
import { fromBinary, isMessage, toBinary } from '@bufbuild/protobuf';
import type { BinaryReadOptions, BinaryWriteOptions, DescMessage, MessageShape } from '@bufbuild/protobuf';

export interface ProtobufCodecOptions {
  /** Keep fields this schema does not know, and write them back out (default true, as in protobuf). */
  readonly unknownFields?: boolean;
  /** The deepest nesting of messages a decode accepts (default 100). */
  readonly recursionLimit?: number;
}

/** The codec of one message type: `protobuf:<typeName>`. */
export function protobufCodec<Desc extends DescMessage>(schema: Desc, options: ProtobufCodecOptions = {}): Codec<MessageShape<Desc>> {
  if (typeof schema !== 'object' || schema === null || (schema as { kind?: unknown }).kind !== 'message') {
    throw new InvalidArgumentError('protobufCodec needs a message schema (a DescMessage, e.g. the generated FooSchema)');
  }
  const typeName = schema.typeName;
  const name = `protobuf:${typeName}`;
  const write: Partial<BinaryWriteOptions> = { writeUnknownFields: options.unknownFields ?? true };
  const read: Partial<BinaryReadOptions> = { readUnknownFields: options.unknownFields ?? true };
  if (options.recursionLimit !== undefined) read.recursionLimit = options.recursionLimit;
  return {
    name,
    encode(value: MessageShape<Desc>): Uint8Array {
      if (!isMessage(value, schema)) {
        const got = isMessage(value) ? `a ${value.$typeName} message` : typeof value;
        throw new InvalidArgumentError(`${name} cannot encode ${got}: build the value with create(${schemaName(typeName)}, {...})`);
      }
      try {
        return toBinary(schema, value, write);
      } catch (err) {
        throw new InvalidArgumentError(`${name} cannot encode the value: ${(err as Error).message}`, { cause: err });
      }
    },
    decode(bytes: Uint8Array): MessageShape<Desc> {
      if (!(bytes instanceof Uint8Array)) throw new DecodeFailedError(`${name} can only decode a Uint8Array, got ${typeof bytes}`);
      try {
        return fromBinary(schema, bytes, read);
      } catch (err) {
        throw new DecodeFailedError(`${name} cannot decode ${bytes.byteLength} bytes: ${(err as Error).message}`, {
          cause: err,
          details: { codec: name, size: bytes.byteLength },
        });
      }
    },
  };
}

function schemaName(typeName: string): string {
  return `${typeName.slice(typeName.lastIndexOf('.') + 1)}Schema`;
}
