/**
 * The default codec (JSON over UTF-8) and helpers to declare and serve methods.
 */
import { DecodeFailedError, InvalidArgumentError, assertValidMethodName } from '@taskgraph/api';
import type { Codec, EpochContext, MethodHandler, MethodSpec } from '@taskgraph/api';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * JSON over UTF-8. `undefined` travels as JSON `null`. Optionally validates what it
 * decodes (a type guard), so a malformed payload fails as DecodeFailedError at the
 * edge instead of somewhere inside the application.
 */
export function jsonCodec<T>(validate?: (value: unknown) => value is T): Codec<T> {
  return {
    name: 'json',
    encode(value: T): Uint8Array {
      let text: string | undefined;
      try {
        text = JSON.stringify(value);
      } catch (err) {
        throw new InvalidArgumentError(`json codec cannot encode the value: ${(err as Error).message}`, { cause: err });
      }
      return encoder.encode(text ?? 'null');
    },
    decode(bytes: Uint8Array): T {
      let value: unknown;
      try {
        value = JSON.parse(decoder.decode(bytes));
      } catch (err) {
        throw new DecodeFailedError(`json codec cannot decode ${bytes.length} bytes: ${(err as Error).message}`, { cause: err });
      }
      if (validate && !validate(value)) {
        throw new DecodeFailedError('json codec: the decoded value does not have the expected shape');
      }
      return value as T;
    },
  };
}

/** Raw bytes, unchanged. */
export const bytesCodec: Codec<Uint8Array> = {
  name: 'bytes',
  encode: (value) => value,
  decode: (bytes) => bytes,
};

/** Declares a method; both codecs default to JSON. */
export function defineMethod<I, O>(name: string, codecs: { input?: Codec<I>; output?: Codec<O> } = {}): MethodSpec<I, O> {
  assertValidMethodName(name);
  return { name, input: codecs.input ?? jsonCodec<I>(), output: codecs.output ?? jsonCodec<O>() };
}

/** Pairs a method declaration with the code that serves it. */
export function serve<I, O>(
  spec: MethodSpec<I, O>,
  handle: (ctx: EpochContext, input: I, fromTask: number) => O | Promise<O>,
): MethodHandler<I, O> {
  return { spec, handle };
}
