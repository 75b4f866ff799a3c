// Without an OpenTelemetry SDK (the default): every tracing helper stops at the API's
// no-op span, nothing is added to a request, and the job runs as before.
import { trace } from '@opentelemetry/api';
import type { InboundRequest, RequestMeta, Transport } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { TRACER_NAME } from '../src/index.js';
import { flagMetaSpan, inSpan, incEpochSpan, traceDataRequest, traceServe, withActiveTrace } from '../src/tracing.js';
import { world } from './helpers.js';
import { pinger } from './tracing-helpers.js';
import type { Seen } from './tracing-helpers.js';

let w: ReturnType<typeof world> | undefined;
afterEach(async () => {
  await w?.close();
  w = undefined;
});

/** A transport that records the meta of every call it makes. */
function recording(inner: Transport, metas: RequestMeta[]): Transport {
  return {
    kind: inner.kind,
    maxMessageBytes: inner.maxMessageBytes,
    listen: (options) => inner.listen(options),
    call: (address, method, meta, payload, options) => {
      metas.push(meta);
      return inner.call(address, method, meta, payload, options);
    },
    forget: (address) => inner.forget(address),
    close: () => inner.close(),
  };
}

describe('tracing without an SDK', () => {
  it('the tracer is the API’s no-op, and every helper returns at its first check', async () => {
    expect(trace.getTracer(TRACER_NAME).startSpan('probe').isRecording()).toBe(false);
    expect(traceDataRequest('j', 0, 1, { name: 'Ping' }, 0)).toBeUndefined();
    expect(flagMetaSpan('j', 0, 0, 'Children', 2)).toBeUndefined();
    expect(incEpochSpan('j', 0, 0)).toBeUndefined();
    const meta: RequestMeta = { job: 'j', from: 0, to: 1, epoch: 0, token: '1', requestId: 'r' };
    expect(withActiveTrace(meta)).toBe(meta);
    // Even a request that carries a trace context: without a propagator nothing is extracted.
    const req: InboundRequest = {
      method: 'Ping',
      meta: { ...meta, traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      payload: new Uint8Array(0),
      signal: new AbortController().signal,
    };
    expect(traceServe('j', req, false)).toBeUndefined();
    const work = Promise.resolve(7);
    expect(inSpan(undefined, () => work)).toBe(work);
  });

  it('a job’s requests carry no trace context', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 2, linkTypes: ['Parents', 'Children'] });
    const seen: Seen = { answers: [], metas: [] };
    const metas: RequestMeta[] = [];
    const transports = [await createLocalTransport({ network: w.network }), await createLocalTransport({ network: w.network })];
    try {
      const a = await w.node(pinger(seen), { preferredTask: 0, transport: recording(transports[0]!, metas) }, 2);
      const b = await w.node(pinger(seen), { preferredTask: 1, transport: recording(transports[1]!, metas) }, 2);
      const runs = [a.node.start(), b.node.start()];
      await eventually('the answer, the meta and the next epoch', () => seen.answers.length === 1 && seen.metas.length === 1 && a.node.getEpoch() === 1);
      await a.node.shutdownJob();
      await Promise.all(runs);
    } finally {
      await Promise.all(transports.map((t) => t.close()));
    }
    expect(metas.length).toBeGreaterThanOrEqual(1);
    for (const m of metas) expect(Object.keys(m).sort()).toEqual(['epoch', 'from', 'job', 'requestId', 'to', 'token']);
  });
});
