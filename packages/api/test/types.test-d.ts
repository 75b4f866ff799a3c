import { describe, expectTypeOf, it } from 'vitest';
import type {
  AnyMethodHandler,
  Codec,
  Coordinator,
  EpochContext,
  Framework,
  InputOf,
  Lock,
  MethodHandler,
  MethodSpec,
  NodeOutcome,
  OutputOf,
  Task,
  Transport,
  WatchBatch,
} from '../src/index.js';
import type { ErrorCode } from '../src/index.js';

declare const json: <T>() => Codec<T>;

describe('public types', () => {
  it('types flow from a method declaration to dataRequest', () => {
    const spec: MethodSpec<{ x: number }, string> = { name: 'm', input: json(), output: json() };
    expectTypeOf<InputOf<typeof spec>>().toEqualTypeOf<{ x: number }>();
    expectTypeOf<OutputOf<typeof spec>>().toEqualTypeOf<string>();
    const fw = {} as Framework;
    const ctx = {} as EpochContext;
    expectTypeOf(fw.dataRequest(ctx, 1, spec, { x: 1 })).toEqualTypeOf<Promise<string>>();
    // @ts-expect-error the input must match the declaration
    void fw.dataRequest(ctx, 1, spec, { y: 1 });
  });

  it('a typed handler is a served method of a Task', () => {
    const spec: MethodSpec<number, number> = { name: 'double', input: json(), output: json() };
    const handler: MethodHandler<number, number> = { spec, handle: (_ctx, n) => n * 2 };
    expectTypeOf(handler).toMatchTypeOf<AnyMethodHandler>();
    const task: Task = {
      init() {},
      enterEpoch() {},
      metaReady() {},
      exit() {},
      methods: [handler],
    };
    expectTypeOf(task.methods).toEqualTypeOf<readonly AnyMethodHandler[] | undefined>();
  });

  it('the SPIs have the documented shapes', () => {
    expectTypeOf<Coordinator['watch']>().returns.toEqualTypeOf<AsyncIterable<WatchBatch>>();
    expectTypeOf<Lock['token']>().toEqualTypeOf<bigint>();
    expectTypeOf<Transport['call']>().returns.toEqualTypeOf<Promise<Uint8Array>>();
    expectTypeOf<NodeOutcome['reason']>().toEqualTypeOf<'job-done' | 'killed' | 'stopped' | 'lease-lost'>();
    expectTypeOf<'NOT_OWNER'>().toMatchTypeOf<ErrorCode>();
    expectTypeOf<'nope'>().not.toMatchTypeOf<ErrorCode>();
  });
});
