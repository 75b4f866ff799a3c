/**
 * For the tracing tests: an OpenTelemetry SDK (spans kept in memory, the
 * AsyncLocalStorage context manager, the W3C trace-context propagator), and a small
 * application whose task 0 makes one of each traced call.
 */
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { Framework, Task } from '@taskgraph/api';
import { defineMethod, serve } from '../src/index.js';

export interface TestTracing {
  readonly exporter: InMemorySpanExporter;
  /** The finished spans named `name`. */
  spans(name: string): ReadableSpan[];
  uninstall(): Promise<void>;
}

/** Installs the SDK: once per test file (the API's proxy tracer keeps the first provider it finds). */
export function installTracing(): TestTracing {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return {
    exporter,
    spans: (name) => exporter.getFinishedSpans().filter((s) => s.name === name),
    async uninstall() {
      await provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}

export const ping = defineMethod<string, string>('Ping');

export interface Seen {
  answers: string[];
  metas: string[];
}

/** Task 0 asks task 1 once, flags a meta to it and moves the epoch on; every task answers Ping. */
export function pinger(seen: Seen) {
  return (id: number): Task => {
    let fw: Framework | undefined;
    return {
      init: (_id, framework) => {
        fw = framework;
      },
      methods: [serve(ping, (_ctx, x: string) => `pong ${x}`)],
      enterEpoch: async (ctx, epoch) => {
        if (id !== 0 || epoch !== 0) return;
        seen.answers.push(await fw!.dataRequest(ctx, 1, ping, 'a'));
        await fw!.flagMeta(ctx, 'Children', 'hello');
        await fw!.incEpoch(ctx);
      },
      metaReady: (_ctx, from, _lt, meta) => void seen.metas.push(`${from}:${meta}`),
      exit: () => {},
    };
  };
}
