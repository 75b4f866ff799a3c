/**
 * The request's envelope as gRPC metadata. Each field is one ASCII header, so any
 * gRPC client can set them by hand; values that may hold arbitrary text (job,
 * request id) are percent-encoded (encodeURIComponent), which leaves ordinary
 * names unchanged.
 */
import { InvalidArgumentError, validTraceparent, validTracestate } from '@taskgraph/api';
import type { RequestMeta } from '@taskgraph/api';
import { Metadata } from '@grpc/grpc-js';

/**
 * The compact envelope this transport sends: one header holding every field,
 * `job;from;to;epoch;token;requestId` (job and request id percent-encoded, so `;`
 * never appears inside them). One header instead of six is measurably cheaper per
 * call in grpc-js and Node's HTTP/2. Servers also accept the six separate headers
 * below, which are easier to set by hand from another language.
 *
 * A caller that traces appends the W3C trace context as optional trailing fields,
 * `...;requestId;traceparent[;tracestate]` (the tracestate percent-encoded; a valid
 * traceparent holds no `;`). They are advisory: a malformed one is dropped, never an error.
 */
export const ENVELOPE_KEY = 'tg-env';

/**
 * The W3C trace context headers, read when the envelope carries no trace context (a
 * hand-written or OpenTelemetry-instrumented client sets them, as for any gRPC call).
 */
export const TraceKeys = {
  traceparent: 'traceparent',
  tracestate: 'tracestate',
} as const;

/** The metadata keys a request may carry instead of the envelope. */
export const MetadataKeys = {
  job: 'tg-job',
  from: 'tg-from',
  to: 'tg-to',
  epoch: 'tg-epoch',
  token: 'tg-token',
  requestId: 'tg-request-id',
} as const;

/** The trailer keys an error answer carries. */
export const TrailerKeys = {
  /** The TaskGraph error code, e.g. "EPOCH_CHANGED" (ASCII). */
  errorCode: 'tg-error-code',
  /** The serialised error `{code, message, retryable, details}` as UTF-8 JSON (binary header). */
  error: 'tg-error-bin',
  /** With EPOCH_CHANGED: the epoch the server is in (decimal). */
  currentEpoch: 'tg-current-epoch',
} as const;

const MAX_TEXT_LENGTH = 1024;
const DECIMAL = /^\d{1,40}$/;
const INTEGER = /^-?\d{1,16}$/;

function checkText(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new InvalidArgumentError(`request meta ${field} must be a non-empty string`);
  if (value.length > MAX_TEXT_LENGTH) {
    throw new InvalidArgumentError(`request meta ${field} is ${value.length} characters; the limit is ${MAX_TEXT_LENGTH}`);
  }
  return value;
}

function checkInteger(value: unknown, field: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(`request meta ${field} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

function checkToken(value: unknown): string {
  if (typeof value !== 'string' || !DECIMAL.test(value)) {
    throw new InvalidArgumentError(`request meta token must be a decimal fencing token, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A node sends every request of its life for one job: its encoding is kept. */
let lastJob = '';
let lastJobEncoded = '';

function encodedJob(job: unknown): string {
  if (job === lastJob && job !== '') return lastJobEncoded;
  const encoded = encodeURIComponent(checkText(job, 'job'));
  lastJob = job as string;
  lastJobEncoded = encoded;
  return encoded;
}

/** Checks a request's meta (the same rules the server applies) and writes it as the one-header envelope. */
export function metadataFromMeta(meta: RequestMeta): Metadata {
  const md = new Metadata();
  md.set(ENVELOPE_KEY, envelopeFromMeta(meta));
  return md;
}

/** Writes a request's meta as six separate headers (what a hand-written client sends). */
export function separateMetadataFromMeta(meta: RequestMeta): Metadata {
  const md = new Metadata();
  md.set(MetadataKeys.job, encodeURIComponent(checkText(meta.job, 'job')));
  md.set(MetadataKeys.from, String(checkInteger(meta.from, 'from', -1)));
  md.set(MetadataKeys.to, String(checkInteger(meta.to, 'to', 0)));
  md.set(MetadataKeys.epoch, String(checkInteger(meta.epoch, 'epoch', 0)));
  md.set(MetadataKeys.token, checkToken(meta.token));
  md.set(MetadataKeys.requestId, encodeURIComponent(checkText(meta.requestId, 'requestId')));
  const traceparent = validTraceparent(meta.traceparent);
  if (traceparent !== undefined) {
    md.set(TraceKeys.traceparent, traceparent);
    const tracestate = validTracestate(meta.tracestate);
    if (tracestate !== undefined) md.set(TraceKeys.tracestate, tracestate);
  }
  return md;
}

function decodeText(raw: string, key: string, field: string): string {
  // Ordinary names carry no escapes: nothing to decode.
  if (raw.indexOf('%') === -1) return checkText(raw, field);
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new InvalidArgumentError(`request metadata ${key} is not valid percent-encoded text: ${JSON.stringify(raw)}`);
  }
  return checkText(value, field);
}

function parseInteger(raw: string, key: string, min: number): number {
  const n = INTEGER.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new InvalidArgumentError(`request metadata ${key} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** Writes a request's meta as the envelope's text (what the `tg-env` header and a stream frame carry). */
export function envelopeFromMeta(meta: RequestMeta): string {
  if (typeof meta !== 'object' || meta === null) throw new InvalidArgumentError('request meta must be an object');
  const envelope =
    `${encodedJob(meta.job)};${checkInteger(meta.from, 'from', -1)};${checkInteger(meta.to, 'to', 0)};` +
    `${checkInteger(meta.epoch, 'epoch', 0)};${checkToken(meta.token)};${encodeURIComponent(checkText(meta.requestId, 'requestId'))}`;
  // Without a trace context (no tracing SDK) the envelope is exactly the six fields.
  if (meta.traceparent === undefined) return envelope;
  const traceparent = validTraceparent(meta.traceparent);
  if (traceparent === undefined) return envelope;
  const tracestate = validTracestate(meta.tracestate);
  return tracestate === undefined ? `${envelope};${traceparent}` : `${envelope};${traceparent};${encodeURIComponent(tracestate)}`;
}

/** The trace context of an envelope's optional trailing fields: `{}` for anything malformed. */
function traceFromEnvelope(traceparent: string | undefined, tracestate: string | undefined): { traceparent?: string; tracestate?: string } {
  const parent = validTraceparent(traceparent);
  if (parent === undefined) return {};
  if (tracestate === undefined) return { traceparent: parent };
  let state: string | undefined;
  try {
    state = validTracestate(decodeURIComponent(tracestate));
  } catch {
    state = undefined;
  }
  return state === undefined ? { traceparent: parent } : { traceparent: parent, tracestate: state };
}

/** The W3C trace context headers of a request: `{}` when absent, repeated or malformed. */
function traceFromHeaders(md: Metadata): { traceparent?: string; tracestate?: string } {
  const parents = md.get(TraceKeys.traceparent);
  if (parents.length !== 1) return {};
  const parent = validTraceparent(parents[0]);
  if (parent === undefined) return {};
  const states = md.get(TraceKeys.tracestate);
  const state = states.length === 1 ? validTracestate(states[0]) : undefined;
  return state === undefined ? { traceparent: parent } : { traceparent: parent, tracestate: state };
}

/**
 * Reads the envelope's text, with the same checks as the separate headers; its
 * optional trace context fields are kept when well formed and dropped otherwise.
 */
export function metaFromEnvelope(raw: string): RequestMeta {
  const parts = raw.split(';');
  if (parts.length < 6 || parts.length > 8) {
    throw new InvalidArgumentError(
      `request metadata ${ENVELOPE_KEY} must be job;from;to;epoch;token;requestId[;traceparent[;tracestate]], got ${JSON.stringify(raw.slice(0, 200))}`,
    );
  }
  const [job, from, to, epoch, token, requestId, traceparent, tracestate] = parts as [string, string, string, string, string, string, string?, string?];
  if (!DECIMAL.test(token)) {
    throw new InvalidArgumentError(`request metadata ${ENVELOPE_KEY} token must be a decimal fencing token, got ${JSON.stringify(token)}`);
  }
  return {
    job: decodeText(job, `${ENVELOPE_KEY} job`, 'job'),
    from: parseInteger(from, `${ENVELOPE_KEY} from`, -1),
    to: parseInteger(to, `${ENVELOPE_KEY} to`, 0),
    epoch: parseInteger(epoch, `${ENVELOPE_KEY} epoch`, 0),
    token,
    requestId: decodeText(requestId, `${ENVELOPE_KEY} requestId`, 'requestId'),
    ...(traceparent === undefined ? undefined : traceFromEnvelope(traceparent, tracestate)),
  };
}

function single(md: Metadata, key: string): string {
  const values = md.get(key);
  if (values.length === 0) throw new InvalidArgumentError(`request metadata ${key} is missing`);
  if (values.length > 1) throw new InvalidArgumentError(`request metadata ${key} is given ${values.length} times`);
  const value = values[0];
  if (typeof value !== 'string') throw new InvalidArgumentError(`request metadata ${key} must be text`);
  return value;
}

function decoded(md: Metadata, key: string, field: string): string {
  return decodeText(single(md, key), key, field);
}

function integer(md: Metadata, key: string, min: number): number {
  return parseInteger(single(md, key), key, min);
}

/**
 * Reads a request's meta from its metadata: the envelope header when present, else
 * the six separate headers. Throws InvalidArgumentError naming the bad key. The trace
 * context comes from the envelope, else from the `traceparent` and `tracestate`
 * headers; a malformed one is ignored.
 */
export function metaFromMetadata(md: Metadata): RequestMeta {
  const meta = metaFromFields(md);
  // A caller without the envelope's trace fields may still send the standard headers.
  return meta.traceparent === undefined && md.get(TraceKeys.traceparent).length > 0 ? { ...meta, ...traceFromHeaders(md) } : meta;
}

function metaFromFields(md: Metadata): RequestMeta {
  if (md.get(ENVELOPE_KEY).length > 0) return metaFromEnvelope(single(md, ENVELOPE_KEY));
  const token = single(md, MetadataKeys.token);
  if (!DECIMAL.test(token)) {
    throw new InvalidArgumentError(`request metadata ${MetadataKeys.token} must be a decimal fencing token, got ${JSON.stringify(token)}`);
  }
  return {
    job: decoded(md, MetadataKeys.job, 'job'),
    from: integer(md, MetadataKeys.from, -1),
    to: integer(md, MetadataKeys.to, 0),
    epoch: integer(md, MetadataKeys.epoch, 0),
    token,
    requestId: decoded(md, MetadataKeys.requestId, 'requestId'),
  };
}
