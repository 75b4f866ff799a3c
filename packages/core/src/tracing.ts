/**
 * Tracing, with the OpenTelemetry API only: spans for a data request (the caller's
 * `taskgraph.dataRequest`, the server's `taskgraph.serve`, one trace through the W3C
 * trace context the request carries), `flagMeta`, `incEpoch`, a claimed slot and a
 * failover. Nothing is recorded unless the application registers an OpenTelemetry SDK
 * (a tracer provider, and a propagator that speaks W3C trace context for the
 * cross-node link). Without one every helper here returns at its first check: one
 * no-op span from the API per call, no attributes, no context switch, nothing added
 * to the request.
 *
 * The parts call these helpers at the points they own (the data client's retry loop,
 * the request server's handler, the framework's calls, the claimer, the task holder);
 * what a span holds is decided here, in one place.
 */
import { INVALID_SPAN_CONTEXT, ROOT_CONTEXT, SpanKind, SpanStatusCode, context, isSpanContextValid, propagation, trace } from '@opentelemetry/api';
import type { Attributes, Context, Span, SpanOptions, TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import { TaskGraphError, traceContextOf } from '@taskgraph/api';
import type { InboundRequest, RequestMeta } from '@taskgraph/api';

/** The name of the tracer every span of the runtime comes from. */
export const TRACER_NAME = '@taskgraph/core';

/** The spans the runtime makes. */
export const SpanNames = {
  /** One `dataRequest` on the caller, from the first attempt to the answer (or the end of the epoch); CLIENT. */
  dataRequest: 'taskgraph.dataRequest',
  /** One request served by a node (an application method, or a framework one that came with a trace context); SERVER. */
  serve: 'taskgraph.serve',
  /** One `flagMeta`: the pushes and the store copies. */
  flagMeta: 'taskgraph.flagMeta',
  /** One `incEpoch`: the compare-and-set of the job's epoch. */
  incEpoch: 'taskgraph.incEpoch',
  /** A slot taken: the claim pass that took it (a primary or a backup slot). */
  claim: 'taskgraph.claim',
  /** A task taken over from a previous incarnation (a standby's claim, a backup's promotion), until it serves again. */
  failover: 'taskgraph.failover',
} as const;

/** The attributes of those spans (and of the data request's events). */
export const TraceAttributes = {
  job: 'taskgraph.job',
  node: 'taskgraph.node.id',
  /** The task the span acts for. */
  task: 'taskgraph.task.id',
  /** The epoch the call was made in. */
  epoch: 'taskgraph.epoch',
  /** incEpoch: the epoch it moves the job to. */
  nextEpoch: 'taskgraph.epoch.next',
  fromTask: 'taskgraph.request.from_task',
  toTask: 'taskgraph.request.to_task',
  method: 'taskgraph.request.method',
  requestId: 'taskgraph.request.id',
  /** dataRequest: the transport calls made (1 when the first one answered). */
  attempts: 'taskgraph.request.attempts',
  /** On an attempt's events: its number, from 1. */
  attempt: 'taskgraph.request.attempt',
  /** On an attempt's event: the node called. */
  address: 'server.address',
  /** serve: whether the transport proved the caller a member of the job. */
  authenticated: 'taskgraph.request.authenticated',
  /** "ok", or the TaskGraph error code the span ended with (e.g. EPOCH_CHANGED). */
  outcome: 'taskgraph.outcome',
  /** The error code, on spans and events that ended in an error (OpenTelemetry's `error.type`). */
  errorType: 'error.type',
  linkType: 'taskgraph.meta.link_type',
  /** flagMeta: how many neighbours the meta goes to. */
  receivers: 'taskgraph.meta.receivers',
  /** claim: "primary" or "backup". */
  role: 'taskgraph.claim.role',
  /** claim: the backup slot taken. */
  backupSlot: 'taskgraph.claim.backup_slot',
  /** claim: the node waited as a standby before it found this slot. */
  waited: 'taskgraph.claim.waited',
  /** The fencing token of the slot taken (decimal). */
  token: 'taskgraph.token',
  incarnation: 'taskgraph.incarnation',
  /** failover: "standby" (a cold claim of a task that ran before) or "backup" (a backup took the primary slot). */
  failoverKind: 'taskgraph.failover.kind',
  /** failover: the new primary has the task's state (a backup in sync was promoted). */
  stateKept: 'taskgraph.failover.state_kept',
  /** failover: the last change the promoted state holds. */
  seq: 'taskgraph.failover.seq',
} as const;

const A = TraceAttributes;

/** The data request's events. */
export const TraceEvents = {
  attempt: 'taskgraph.attempt',
  attemptFailed: 'taskgraph.attempt.failed',
} as const;

/** A proxy: it finds the SDK once one is registered, and is a no-op until then. */
const tracer = trace.getTracer(TRACER_NAME);

// Options made once: the per-call path allocates nothing for them.
const CLIENT: SpanOptions = { kind: SpanKind.CLIENT };
const SERVER: SpanOptions = { kind: SpanKind.SERVER };
const INTERNAL: SpanOptions = { kind: SpanKind.INTERNAL };

/** Writes only the two W3C fields a request carries (a composite propagator's others are not ours to carry). */
const setter: TextMapSetter<{ traceparent?: string; tracestate?: string }> = {
  set(carrier, key, value) {
    if (key === 'traceparent') carrier.traceparent = value;
    else if (key === 'tracestate') carrier.tracestate = value;
  },
};

const getter: TextMapGetter<RequestMeta> = {
  get(carrier, key) {
    return key === 'traceparent' ? carrier.traceparent : key === 'tracestate' ? carrier.tracestate : undefined;
  },
  keys(carrier) {
    return carrier.tracestate !== undefined ? ['traceparent', 'tracestate'] : carrier.traceparent !== undefined ? ['traceparent'] : [];
  },
};

/**
 * True when the span records or carries a trace (an SDK made it, sampled or not).
 * The API's no-op span has the shared invalid context: one comparison.
 */
function live(span: Span): boolean {
  if (span.isRecording()) return true;
  const sc = span.spanContext();
  return sc !== INVALID_SPAN_CONTEXT && isSpanContextValid(sc);
}

function startSpan(name: string, options: SpanOptions, parent?: Context): Span | undefined {
  const span = parent === undefined ? tracer.startSpan(name, options) : tracer.startSpan(name, options, parent);
  return live(span) ? span : undefined;
}

/** The code an error is known by: a TaskGraph code, else APPLICATION (as the transports serialise it). */
function codeOf(err: unknown): string {
  return TaskGraphError.is(err) ? err.code : 'APPLICATION';
}

/** Ends `span` with its outcome: ok, or (`failed`) the code of `failure`; `quiet` codes are not marked as an error status. */
function finish(span: Span, failed: boolean, failure: unknown, quiet?: (code: string) => boolean): void {
  if (span.isRecording()) {
    if (!failed) {
      span.setAttribute(A.outcome, 'ok');
    } else {
      const code = codeOf(failure);
      span.setAttribute(A.outcome, code);
      span.setAttribute(A.errorType, code);
      if (quiet === undefined || !quiet(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: failure instanceof Error ? failure.message : String(failure) });
    }
  }
  span.end();
}

/** The trace context of `ctx` as a request carries it: `{}` when there is none (or the propagator speaks no W3C). */
function carried(ctx: Context): { traceparent?: string; tracestate?: string } {
  const carrier: { traceparent?: string; tracestate?: string } = {};
  try {
    propagation.inject(ctx, carrier, setter);
  } catch {
    return {}; // A propagator that throws costs the link between the spans, never the request.
  }
  // What leaves the node is held to the same rules as what arrives.
  return carrier.traceparent === undefined ? carrier : traceContextOf(carrier);
}

/**
 * Runs `fn` with `span` active (so what it sends carries the span, and spans made
 * inside are its children) and ends the span with the outcome. Without a span, just `fn()`.
 */
export function inSpan<T>(span: Span | undefined, fn: () => Promise<T>): Promise<T> {
  if (span === undefined) return fn();
  let running: Promise<T>;
  try {
    running = context.with(trace.setSpan(context.active(), span), fn);
  } catch (err) {
    finish(span, true, err);
    throw err;
  }
  return running.then(
    (value) => {
      finish(span, false, undefined);
      return value;
    },
    (err: unknown) => {
      finish(span, true, err);
      throw err;
    },
  );
}

/**
 * `meta` with the trace context of the active span (the caller's `flagMeta`, say),
 * when there is one; else `meta` itself.
 */
export function withActiveTrace(meta: RequestMeta): RequestMeta {
  const active = context.active();
  if (trace.getSpan(active) === undefined) return meta;
  const t = carried(active);
  return t.traceparent === undefined ? meta : { ...meta, ...t };
}

// ------------------------------------------------------------------ the data plane

/**
 * One data request on the caller: a CLIENT span from the first attempt to the end,
 * an event per attempt (and per failed attempt, with its error code), and the trace
 * context that every attempt's request carries. Not made active: the request's
 * attempts run in the caller's own context.
 */
export class DataRequestTrace {
  private attempts = 0;
  private readonly context: { traceparent?: string; tracestate?: string };

  constructor(private readonly span: Span) {
    this.context = carried(trace.setSpan(ROOT_CONTEXT, span));
  }

  /** One more attempt at `address`: the meta to send it with, carrying the trace context. */
  attempt(meta: RequestMeta, address: string): RequestMeta {
    this.attempts++;
    const { span } = this;
    if (span.isRecording()) {
      if (this.attempts === 1) span.setAttribute(A.requestId, meta.requestId);
      span.addEvent(TraceEvents.attempt, { [A.attempt]: this.attempts, [A.address]: address });
    }
    return this.context.traceparent === undefined ? meta : { ...meta, ...this.context };
  }

  /** The last attempt failed with `err` (retried or not: the span's outcome tells). */
  failed(err: unknown): void {
    if (this.span.isRecording()) this.span.addEvent(TraceEvents.attemptFailed, { [A.attempt]: this.attempts, [A.errorType]: codeOf(err) });
  }

  /** Ends the span when `request` settles, with its outcome and the number of attempts. */
  settle<T>(request: Promise<T>): Promise<T> {
    return request.then(
      (value) => {
        this.end(false, undefined);
        return value;
      },
      (err: unknown) => {
        this.end(true, err);
        throw err;
      },
    );
  }

  private end(failed: boolean, err: unknown): void {
    if (this.span.isRecording()) this.span.setAttribute(A.attempts, this.attempts);
    finish(this.span, failed, err);
  }
}

/** The caller's span of one `dataRequest`, or undefined when nothing traces. */
export function traceDataRequest(job: string, from: number, to: number, method: unknown, epoch: number): DataRequestTrace | undefined {
  const span = startSpan(SpanNames.dataRequest, CLIENT);
  if (span === undefined) return undefined;
  if (span.isRecording()) {
    const name = (method as { name?: unknown } | null | undefined)?.name;
    const attributes: Attributes = { [A.job]: job, [A.fromTask]: from, [A.toTask]: to, [A.epoch]: epoch };
    if (typeof name === 'string') attributes[A.method] = name;
    span.setAttributes(attributes);
  }
  return new DataRequestTrace(span);
}

/** Refusals a caller retries (a stale token, an epoch not current): part of the protocol, not a server's error. */
const fencing = (code: string): boolean => code === 'NOT_OWNER' || code === 'EPOCH_CHANGED';

/** One request a node serves: a SERVER span, the child of the caller's span when the request carried its context. */
export class ServeTrace {
  constructor(
    private readonly span: Span,
    private readonly ctx: Context,
  ) {}

  /** Runs the serving with the span active (spans the handler makes are its children) and ends it with the outcome. */
  run(serve: () => Promise<Uint8Array>): Promise<Uint8Array> {
    return context.with(this.ctx, serve).then(
      (out) => {
        finish(this.span, false, undefined);
        return out;
      },
      (err: unknown) => {
        finish(this.span, true, err, fencing);
        throw err;
      },
    );
  }
}

/**
 * The server's span of one request, or undefined when nothing traces. The parent is
 * the trace context the request carried and nothing else (not whatever context the
 * transport happens to run the handler in). Framework requests (`internal`: meta
 * pushes, replication) get a span only when they came with a trace context.
 */
export function traceServe(job: string, req: InboundRequest, internal: boolean): ServeTrace | undefined {
  const m = req.meta;
  if (internal && m.traceparent === undefined) return undefined;
  let parent = ROOT_CONTEXT;
  if (m.traceparent !== undefined) {
    try {
      parent = propagation.extract(ROOT_CONTEXT, m, getter);
    } catch {
      parent = ROOT_CONTEXT; // A propagator that throws on what a caller sent: the span is a root, the request is served.
    }
  }
  const span = startSpan(SpanNames.serve, SERVER, parent);
  if (span === undefined) return undefined;
  if (span.isRecording()) {
    span.setAttributes({
      [A.job]: job,
      [A.fromTask]: m.from,
      [A.toTask]: m.to,
      [A.method]: req.method,
      [A.epoch]: m.epoch,
      [A.requestId]: m.requestId,
      [A.authenticated]: req.authenticated === true,
    });
  }
  return new ServeTrace(span, trace.setSpan(parent, span));
}

// ------------------------------------------------------------------ the framework's calls

/** The span of one `flagMeta` (run it with `inSpan`: the pushes carry it), or undefined when nothing traces. */
export function flagMetaSpan(job: string, task: number, epoch: number, linkType: string, receivers: number): Span | undefined {
  const span = startSpan(SpanNames.flagMeta, INTERNAL);
  if (span?.isRecording()) span.setAttributes({ [A.job]: job, [A.task]: task, [A.epoch]: epoch, [A.linkType]: linkType, [A.receivers]: receivers });
  return span;
}

/** The span of one `incEpoch` (run it with `inSpan`), or undefined when nothing traces. */
export function incEpochSpan(job: string, task: number, epoch: number): Span | undefined {
  const span = startSpan(SpanNames.incEpoch, INTERNAL);
  if (span?.isRecording()) span.setAttributes({ [A.job]: job, [A.task]: task, [A.epoch]: epoch, [A.nextEpoch]: epoch + 1 });
  return span;
}

// ------------------------------------------------------------------ slots

/** What a claim took (the claimer's `Claim`, without its lock's other parts). */
export interface ClaimedSlot {
  readonly role: 'primary' | 'backup';
  readonly id: number;
  readonly slot?: number;
  readonly lock: { readonly token: bigint };
}

/**
 * A slot taken: a `taskgraph.claim` span over the claim pass that took it (`since`,
 * in ms since the epoch). Passes that find nothing free make no span: a standby
 * looks again and again.
 */
export function traceClaim(job: string, nodeId: string, claim: ClaimedSlot, since: number, waited: boolean): void {
  const span = tracer.startSpan(SpanNames.claim, { kind: SpanKind.INTERNAL, startTime: since });
  if (span.isRecording()) {
    const attributes: Attributes = {
      [A.job]: job,
      [A.node]: nodeId,
      [A.task]: claim.id,
      [A.role]: claim.role,
      [A.token]: claim.lock.token.toString(),
      [A.waited]: waited,
    };
    if (claim.slot !== undefined) attributes[A.backupSlot] = claim.slot;
    span.setAttributes(attributes);
  }
  span.end();
}

export interface Takeover {
  readonly job: string;
  readonly nodeId: string;
  readonly task: number;
  readonly incarnation: number;
  readonly token: string;
  /** A claimed slot (true) or a backup that took the primary slot (false). */
  readonly fresh: boolean;
  /** The backup was in sync: the task keeps its state. */
  readonly promoted: boolean;
  readonly seq: number;
  /** When the takeover began (the slot taken), in ms since the epoch. */
  readonly since: number;
}

/**
 * A primary slot now serves (its address is published). When the task ran before
 * (a later incarnation, or a backup's promotion), a `taskgraph.failover` span from
 * the moment the slot was taken to now; a task's first start makes none.
 */
export function traceTakeover(t: Takeover): void {
  if (t.fresh && t.incarnation <= 1) return;
  const span = tracer.startSpan(SpanNames.failover, { kind: SpanKind.INTERNAL, startTime: t.since });
  if (span.isRecording()) {
    const attributes: Attributes = {
      [A.job]: t.job,
      [A.node]: t.nodeId,
      [A.task]: t.task,
      [A.incarnation]: t.incarnation,
      [A.token]: t.token,
      [A.failoverKind]: t.fresh ? 'standby' : 'backup',
      [A.stateKept]: t.promoted,
    };
    if (t.promoted) attributes[A.seq] = t.seq;
    span.setAttributes(attributes);
  }
  span.end();
}
