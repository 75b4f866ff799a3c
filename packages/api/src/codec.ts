/**
 * Codecs and method declarations: what a task serves, and how its input and output
 * travel as bytes. The same `MethodSpec` object is used by the serving task (to
 * declare the method) and by callers (to encode the input and decode the output),
 * so the types flow from declaration to `dataRequest`.
 */
import type { EpochContext } from './task.js';

export interface Codec<T> {
  /** A short name for logs and errors, e.g. "json" or "protobuf:regression.Gradient". */
  readonly name: string;
  encode(value: T): Uint8Array;
  /** Throws (preferably a DecodeFailedError) when the bytes are not a valid T. */
  decode(bytes: Uint8Array): T;
}

/** A method a task can serve: its name and the codecs of its input and output. */
export interface MethodSpec<I, O> {
  /** The method's name: letters, digits and `_`, starting with a letter (a gRPC method name). */
  readonly name: string;
  readonly input: Codec<I>;
  readonly output: Codec<O>;
}

/** The input type of a MethodSpec. */
export type InputOf<M> = M extends MethodSpec<infer I, unknown> ? I : never;
/** The output type of a MethodSpec. */
export type OutputOf<M> = M extends MethodSpec<unknown, infer O> ? O : never;

/**
 * A served method: the declaration and the code that answers it. The framework has
 * already checked the request's job, epoch and target token before `handle` runs.
 */
export interface MethodHandler<I, O> {
  readonly spec: MethodSpec<I, O>;
  handle(ctx: EpochContext, input: I, fromTask: number): O | Promise<O>;
}

/** Any served method, whatever its types (method syntax keeps this assignable). */
export type AnyMethodHandler = MethodHandler<unknown, unknown>;
