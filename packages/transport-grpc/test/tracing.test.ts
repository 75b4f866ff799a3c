// Tracing across real gRPC nodes: two nodes of one job on the memory store, each with
// its own gRPC server on loopback, and an OpenTelemetry SDK in memory. The caller's
// `taskgraph.dataRequest` span and the other node's `taskgraph.serve` span are one
// trace, because the W3C trace context rides in the request's envelope (the stream
// frame's, or the unary `tg-env` header); a foreign gRPC client's `traceparent` header
// is read too, and a malformed one is ignored.
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { Framework, Task } from '@taskgraph/api';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { SpanNames, TaskGraphNode, TraceAttributes as A, createController, defineMethod, serve, silentLogger } from '@taskgraph/core';
import { eventually } from '@taskgraph/testkit';
import { tree } from '@taskgraph/topologies';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport } from '../src/index.js';
import { plainCall, plainClient, plainMetadata } from './helpers.js';

const LINKS = ['Parents', 'Children'];
const ping = defineMethod<string, string>('Ping');

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

beforeAll(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});
afterAll(async () => {
  await provider.shutdown();
  trace.disable();
  propagation.disable();
  context.disable();
});
beforeEach(() => {
  exporter.reset();
});

const spans = (name: string, where: (s: ReadableSpan) => boolean = () => true): ReadableSpan[] => exporter.getFinishedSpans().filter((s) => s.name === name && where(s));

function only(name: string, where?: (s: ReadableSpan) => boolean): ReadableSpan {
  const found = spans(name, where);
  expect(found, `one ${name} span`).toHaveLength(1);
  return found[0]!;
}

function childOf(child: ReadableSpan, parent: ReadableSpan): void {
  expect(child.spanContext().traceId).toBe(parent.spanContext().traceId);
  expect(child.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
}

interface Seen {
  answers: string[];
  metas: string[];
}

/** Task 0 asks task 1 once, flags a meta to it and moves the epoch on; every task answers Ping. */
function pinger(seen: Seen) {
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

let job = 0;
let closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  closers = [];
});

/** A job of two tasks on one memory store, each on its own node with its own gRPC transport; task 0 runs `pinger`. */
async function twoNodes(transportUrl: string) {
  const store = new MemoryStore();
  const name = `traced-${++job}`;
  const coordinator = () => {
    const c = new MemoryCoordinator({ store, namespace: 'tg' });
    closers.push(() => c.close());
    return c;
  };
  const controller = createController({ coordinator: coordinator(), job: name, logger: silentLogger });
  await controller.createJob({ numTasks: 2, linkTypes: LINKS });
  const seen: Seen = { answers: [], metas: [] };
  const nodes: TaskGraphNode[] = [];
  const transports: GrpcTransport[] = [];
  for (const preferredTask of [0, 1]) {
    const transport = await createGrpcTransport(transportUrl);
    closers.push(() => transport.close());
    const node = new TaskGraphNode({ job: name, coordinator: coordinator(), transport, preferredTask, sessionTtlMs: 1000, logger: silentLogger });
    node.setTaskBuilder({ getTask: pinger(seen) });
    const t = tree({ numTasks: 2, fanout: 2 });
    node.addLinkage('Parents', t.Parents);
    node.addLinkage('Children', t.Children);
    nodes.push(node);
    transports.push(transport);
  }
  const runs = nodes.map((n) => n.start());
  closers.push(async () => {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await Promise.allSettled(runs);
  });
  await eventually('the answer, the meta and the next epoch', () => seen.answers.length === 1 && seen.metas.length === 1 && nodes.every((n) => n.getEpoch() === 1));
  expect(seen).toEqual({ answers: ['pong a'], metas: ['0:hello'] });
  return { job: name, nodes, controller };
}

describe.each(['stream', 'unary'])('tracing over gRPC, %s data plane', (dataPlane) => {
  it('the caller’s dataRequest span is the parent of the server span on the other node', async () => {
    const { job: name, nodes } = await twoNodes(`grpc://127.0.0.1:0?dataPlane=${dataPlane}`);
    const client = only(SpanNames.dataRequest);
    expect(client.attributes).toMatchObject({ [A.job]: name, [A.fromTask]: 0, [A.toTask]: 1, [A.method]: 'Ping', [A.epoch]: 0, [A.outcome]: 'ok' });
    expect(client.attributes[A.attempts]).toBeGreaterThanOrEqual(1);
    const served = only(SpanNames.serve, (s) => s.attributes[A.method] === 'Ping' && s.attributes[A.outcome] === 'ok');
    childOf(served, client);
    expect(served.attributes).toMatchObject({ [A.job]: name, [A.fromTask]: 0, [A.toTask]: 1, [A.requestId]: client.attributes[A.requestId], [A.authenticated]: false });
    // The two spans were made by two nodes: the caller is task 0's node, the server task 1's.
    expect(nodes.map((n) => n.currentTask)).toEqual([0, 1]);

    // flagMeta's push to the other node joins the flagMeta's trace the same way.
    const flag = only(SpanNames.flagMeta);
    const push = await eventually('the push served', () => spans(SpanNames.serve, (s) => s.attributes[A.method] === 'taskgraph_meta')[0]);
    childOf(push, flag);
    expect(only(SpanNames.incEpoch).attributes).toMatchObject({ [A.epoch]: 0, [A.nextEpoch]: 1, [A.outcome]: 'ok' });
  });
});

describe('a foreign gRPC caller', () => {
  it('has a malformed traceparent header ignored (served, under a root span) and a well-formed one joined', async () => {
    const { controller } = await twoNodes('grpc://127.0.0.1:0');
    const status = (await controller.status())!;
    const target = status.tasks[1]!;
    const client = plainClient(target.address!);
    closers.push(async () => client.close());
    const headers = (requestId: string, trace: Record<string, string>) =>
      plainMetadata({
        'tg-job': status.job,
        'tg-from': '-1',
        'tg-to': '1',
        'tg-epoch': String(status.epoch),
        'tg-token': target.token!,
        'tg-request-id': requestId,
        ...trace,
      });
    const call = (requestId: string, trace: Record<string, string>) => plainCall(client, '/taskgraph.v1.Task/Ping', Buffer.from(JSON.stringify('x')), headers(requestId, trace));
    const malformed: Record<string, Record<string, string>> = {
      'bad-garbage': { traceparent: 'garbage', tracestate: 'k=v' },
      'bad-zero': { traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` },
      'bad-huge': { traceparent: `01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-${'y'.repeat(2000)}` },
      'bad-version': { traceparent: 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
    };
    for (const [id, trace] of Object.entries(malformed)) {
      const r = await call(id, trace);
      expect(r.error, id).toBeNull();
      expect(JSON.parse(r.value!.toString())).toBe('pong x');
      const s = only(SpanNames.serve, (x) => x.attributes[A.requestId] === id);
      expect(s.parentSpanContext, id).toBeUndefined();
      expect(s.attributes).toMatchObject({ [A.method]: 'Ping', [A.fromTask]: -1, [A.outcome]: 'ok' });
    }
    const good = await call('good', { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'vendor=abc' });
    expect(good.error).toBeNull();
    const joined = only(SpanNames.serve, (x) => x.attributes[A.requestId] === 'good');
    expect(joined.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(joined.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(joined.spanContext().traceState?.get('vendor')).toBe('abc');
  });
});
