// Tracing with an OpenTelemetry SDK installed (in memory): the spans of the data
// plane, the framework's calls, claims and failovers, on the memory store and the
// in-process transport (local://). The gRPC side is in transport-grpc's tests.
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { NotOwnerError } from '@taskgraph/api';
import type { InboundRequest, RequestMeta } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SpanNames, TraceAttributes as A, TraceEvents, createController, silentLogger } from '../src/index.js';
import { traceServe } from '../src/tracing.js';
import { createLocalTransport } from '@taskgraph/transport-local';
import { world } from './helpers.js';
import { Ledger, ledgers } from './ledger.js';
import { installTracing, pinger } from './tracing-helpers.js';
import type { Seen, TestTracing } from './tracing-helpers.js';

const LINKS = ['Parents', 'Children'];
let tracing: TestTracing;
let current: ReturnType<typeof world> | undefined;

function newWorld(): ReturnType<typeof world> {
  current = world();
  return current;
}

beforeAll(() => {
  tracing = installTracing();
});
afterAll(async () => {
  await tracing.uninstall();
});
beforeEach(() => {
  tracing.exporter.reset();
});
afterEach(async () => {
  await current?.close();
  current = undefined;
});

function only(name: string, where: (s: ReadableSpan) => boolean = () => true): ReadableSpan {
  const found = tracing.spans(name).filter(where);
  expect(found, `one ${name} span`).toHaveLength(1);
  return found[0]!;
}

function childOf(child: ReadableSpan, parent: ReadableSpan): void {
  expect(child.spanContext().traceId).toBe(parent.spanContext().traceId);
  expect(child.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
}

describe('tracing over local://', () => {
  it('a dataRequest and the request served are one trace; flagMeta, incEpoch and the claims have their spans', async () => {
    const w = newWorld();
    await w.controller().createJob({ numTasks: 2, linkTypes: LINKS });
    const seen: Seen = { answers: [], metas: [] };
    const a = await w.node(pinger(seen), { preferredTask: 0 }, 2);
    const b = await w.node(pinger(seen), { preferredTask: 1 }, 2);
    const runs = [a.node.start(), b.node.start()];
    await eventually('the answer, the meta and the next epoch', () => seen.answers.length === 1 && seen.metas.length === 1 && a.node.getEpoch() === 1);
    expect(seen).toEqual({ answers: ['pong a'], metas: ['0:hello'] });

    const client = only(SpanNames.dataRequest);
    expect(client.kind).toBe(SpanKind.CLIENT);
    expect(client.attributes).toMatchObject({ [A.job]: w.job, [A.fromTask]: 0, [A.toTask]: 1, [A.method]: 'Ping', [A.epoch]: 0, [A.outcome]: 'ok' });
    const attempts = client.attributes[A.attempts] as number;
    expect(attempts).toBeGreaterThanOrEqual(1);
    expect(client.events.filter((e) => e.name === TraceEvents.attempt)).toHaveLength(attempts);
    expect(client.status.code).toBe(SpanStatusCode.UNSET);

    // Every attempt's request carried the caller's span: the one answered is its child.
    const served = only(SpanNames.serve, (s) => s.attributes[A.method] === 'Ping' && s.attributes[A.outcome] === 'ok');
    expect(served.kind).toBe(SpanKind.SERVER);
    childOf(served, client);
    expect(served.attributes).toMatchObject({ [A.job]: w.job, [A.fromTask]: 0, [A.toTask]: 1, [A.epoch]: 0, [A.requestId]: client.attributes[A.requestId], [A.authenticated]: true });
    for (const s of tracing.spans(SpanNames.serve).filter((x) => x.attributes[A.method] === 'Ping')) childOf(s, client);

    const flag = only(SpanNames.flagMeta);
    expect(flag.attributes).toMatchObject({ [A.job]: w.job, [A.task]: 0, [A.epoch]: 0, [A.linkType]: 'Children', [A.receivers]: 1, [A.outcome]: 'ok' });
    // The meta's push to task 1's node carried the flagMeta's context.
    const push = await eventually('the push served', () => tracing.spans(SpanNames.serve).find((s) => s.attributes[A.method] === 'taskgraph_meta'));
    childOf(push, flag);

    const inc = only(SpanNames.incEpoch);
    expect(inc.attributes).toMatchObject({ [A.job]: w.job, [A.task]: 0, [A.epoch]: 0, [A.nextEpoch]: 1, [A.outcome]: 'ok' });

    const claims = tracing.spans(SpanNames.claim);
    expect(claims.map((c) => c.attributes[A.task]).sort()).toEqual([0, 1]);
    for (const c of claims) {
      const node = c.attributes[A.task] === 0 ? a.node : b.node;
      expect(c.attributes).toMatchObject({ [A.job]: w.job, [A.node]: node.nodeId, [A.role]: 'primary', [A.waited]: false });
      expect(c.attributes[A.token]).toMatch(/^\d+$/);
    }
    expect(tracing.spans(SpanNames.failover)).toEqual([]);

    await a.node.shutdownJob();
    await Promise.all(runs);
  });

  it('a standby taking over a killed node’s task makes a failover span (and a claim span after its wait)', async () => {
    const w = newWorld();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 2, linkTypes: LINKS });
    const seen: Seen = { answers: [], metas: [] };
    const a = await w.node(pinger(seen), { preferredTask: 0 }, 2);
    const b = await w.node(pinger(seen), { preferredTask: 1 }, 2);
    const runs = [a.node.start(), b.node.start()];
    await eventually('both tasks running', () => a.node.currentTask === 0 && b.node.currentTask === 1);
    const c = await w.node(pinger(seen), {}, 2);
    const runC = c.node.start();
    await eventually('a cold standby', () => c.node.state === 'standby');
    expect(tracing.spans(SpanNames.failover)).toEqual([]);

    await b.node.kill();
    await eventually('the standby runs task 1', () => c.node.currentTask === 1);
    const failover = await eventually('the failover span', () => tracing.spans(SpanNames.failover)[0]);
    const token = (await ctl.status())?.tasks[1]?.token;
    expect(failover.attributes).toMatchObject({
      [A.job]: w.job,
      [A.node]: c.node.nodeId,
      [A.task]: 1,
      [A.incarnation]: 2,
      [A.failoverKind]: 'standby',
      [A.stateKept]: false,
      [A.token]: token,
    });
    const claim = only(SpanNames.claim, (s) => s.attributes[A.node] === c.node.nodeId);
    expect(claim.attributes).toMatchObject({ [A.task]: 1, [A.role]: 'primary', [A.waited]: true, [A.token]: token });

    await a.node.shutdownJob();
    await Promise.all([...runs, runC]);
  });

  it('a backup promoted to primary makes a failover span that says the state was kept', async () => {
    const w = newWorld();
    const ctl = w.controller();
    await ctl.createJob({ numTasks: 1, linkTypes: LINKS, backups: 1 });
    const tasks = ledgers();
    const a = await w.node(() => tasks.get(), {}, 1);
    const runA = a.node.start();
    await eventually('the primary in its first epoch', () => tasks.made[0]?.ctx !== undefined);
    const b = await w.node(() => tasks.get(), {}, 1);
    const runB = b.node.start();
    await eventually('the backup in sync', async () => (await ctl.status())?.tasks[0]?.backups[0]?.state === 'ready');
    const backupClaim = only(SpanNames.claim, (s) => s.attributes[A.node] === b.node.nodeId);
    expect(backupClaim.attributes).toMatchObject({ [A.task]: 0, [A.role]: 'backup', [A.backupSlot]: 0 });
    const primary = tasks.made[0]!;
    await primary.add(1);
    await primary.add(2);

    await a.node.kill();
    await runA;
    await eventually('the backup promoted', () => b.node.currentTask === 0);
    const failover = await eventually('the failover span', () => tracing.spans(SpanNames.failover)[0]);
    expect(failover.attributes).toMatchObject({
      [A.job]: w.job,
      [A.node]: b.node.nodeId,
      [A.task]: 0,
      [A.incarnation]: 2,
      [A.failoverKind]: 'backup',
      [A.stateKept]: true,
      [A.seq]: 2,
    });
    const backup = tasks.made[1] as Ledger;
    expect(backup.items).toEqual([1, 2]);
    await eventually('the new primary serving', () => backup.events.includes('epoch 0'));
    await backup.fw!.shutdownJob();
    await runB;
  });

  it('a foreign caller’s malformed traceparent is ignored: the request is served under a root span', async () => {
    const w = newWorld();
    const ctl = createController({ coordinator: w.coordinator(), job: w.job, logger: silentLogger });
    await ctl.createJob({ numTasks: 2, linkTypes: LINKS });
    const seen: Seen = { answers: [], metas: [] };
    const a = await w.node(pinger(seen), { preferredTask: 0 }, 2);
    const b = await w.node(pinger(seen), { preferredTask: 1 }, 2);
    const runs = [a.node.start(), b.node.start()];
    await eventually('the job in epoch 1', () => a.node.getEpoch() === 1 && b.node.getEpoch() === 1);
    const status = (await ctl.status())!;
    const target = status.tasks[1]!;
    const meta = (requestId: string, extra: Partial<RequestMeta>): RequestMeta => ({ job: w.job, from: -1, to: 1, epoch: status.epoch, token: target.token!, requestId, ...extra });
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as unknown;

    // A caller that is no node of the job: a bare transport on the same network.
    const outsider = await createLocalTransport({ network: w.network });
    try {
      const call = (m: RequestMeta) => outsider.call(target.address!, 'Ping', m, enc('x'), { timeoutMs: 10_000 });
      expect(dec(await call(meta('bad-1', { traceparent: '00-not-a-trace-context-01', tracestate: 'k=v' })))).toBe('pong x');
      expect(dec(await call(meta('bad-2', { traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` })))).toBe('pong x');
      expect(dec(await call(meta('good-1', { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' })))).toBe('pong x');
    } finally {
      await outsider.close();
    }

    for (const id of ['bad-1', 'bad-2']) {
      const s = only(SpanNames.serve, (x) => x.attributes[A.requestId] === id);
      expect(s.parentSpanContext).toBeUndefined();
      expect(s.attributes).toMatchObject({ [A.method]: 'Ping', [A.fromTask]: -1, [A.outcome]: 'ok' });
    }
    const joined = only(SpanNames.serve, (x) => x.attributes[A.requestId] === 'good-1');
    expect(joined.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(joined.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');

    await a.node.shutdownJob();
    await Promise.all(runs);
  });
});

describe('the server span on its own', () => {
  const request = (extra: Partial<RequestMeta>, method = 'Ping'): InboundRequest => ({
    method,
    meta: { job: 'j', from: 2, to: 1, epoch: 3, token: '7', requestId: 'r', ...extra },
    payload: new Uint8Array(0),
    signal: new AbortController().signal,
  });

  it('a traceparent that reached the runtime unchecked (a transport that does not validate) is still only a hint', async () => {
    for (const traceparent of ['junk', `ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`, 'x'.repeat(100_000)]) {
      const t = traceServe('j', request({ traceparent, tracestate: '\u0000' }), false);
      expect(t).toBeDefined();
      await expect(t!.run(async () => new Uint8Array([1]))).resolves.toEqual(new Uint8Array([1]));
    }
    const spans = tracing.spans(SpanNames.serve);
    expect(spans).toHaveLength(3);
    for (const s of spans) expect(s.parentSpanContext).toBeUndefined();
  });

  it('framework requests get a span only when they come with a trace context; fencing refusals are not errors', async () => {
    expect(traceServe('j', request({}, 'taskgraph_update'), true)).toBeUndefined();
    const parent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const t = traceServe('j', request({ traceparent: parent }, 'taskgraph_meta'), true)!;
    await expect(t.run(async () => Promise.reject(new NotOwnerError('stale token')))).rejects.toThrow('stale token');
    const u = traceServe('j', request({}), false)!;
    await expect(u.run(async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    const [fenced, failed] = [only(SpanNames.serve, (s) => s.attributes[A.method] === 'taskgraph_meta'), only(SpanNames.serve, (s) => s.attributes[A.method] === 'Ping')];
    expect(fenced.attributes).toMatchObject({ [A.outcome]: 'NOT_OWNER', [A.errorType]: 'NOT_OWNER' });
    expect(fenced.status.code).toBe(SpanStatusCode.UNSET);
    expect(failed.attributes).toMatchObject({ [A.outcome]: 'APPLICATION' });
    expect(failed.status).toMatchObject({ code: SpanStatusCode.ERROR, message: 'boom' });
  });
});
