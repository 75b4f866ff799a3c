/**
 * The W3C trace context a request may carry (https://www.w3.org/TR/trace-context/):
 * `traceparent` and `tracestate`, as optional fields of `RequestMeta`. They are
 * advisory: a transport carries them when they are well formed and drops them
 * otherwise, so a malformed or oversized value from outside is ignored, never an
 * error. The checks are syntactic and bounded; the tracing layer parses the values
 * again with its propagator.
 */

/** The longest `traceparent` accepted: version 00 is exactly 55 characters; later versions may append fields. */
export const MAX_TRACEPARENT_LENGTH = 128;
/** The longest `tracestate` accepted (the size every tracer must propagate, per W3C). */
export const MAX_TRACESTATE_LENGTH = 512;

// version-traceid-parentid-flags, lower-case hex; a later version may append "-..." (URL-safe characters only,
// so the value never holds a separator of any envelope that carries it: no ';', ',', '=' or spaces).
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-[0-9A-Za-z._~-]*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/**
 * `value` when it is a well-formed W3C `traceparent`, else undefined: version `ff`,
 * an all-zero trace or parent id, extra fields after a version-00 value, or a value
 * longer than MAX_TRACEPARENT_LENGTH are malformed.
 */
export function validTraceparent(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length < 55 || value.length > MAX_TRACEPARENT_LENGTH) return undefined;
  const m = TRACEPARENT.exec(value);
  if (m === null) return undefined;
  const [, version, traceId, spanId, extra] = m;
  if (version === 'ff' || traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  if (version === '00' && extra !== undefined) return undefined;
  return value;
}

/**
 * `value` when it can be a W3C `tracestate` (printable ASCII, at most
 * MAX_TRACESTATE_LENGTH characters, not empty), else undefined. Its list members are
 * the tracer's to parse.
 */
export function validTracestate(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_TRACESTATE_LENGTH) return undefined;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return undefined;
  }
  return value;
}

/**
 * The trace context of `source` that may travel: `{ traceparent, tracestate? }` when
 * its traceparent is well formed (the tracestate only if it is too), else `{}`. Never throws.
 */
export function traceContextOf(source: { readonly traceparent?: unknown; readonly tracestate?: unknown }): { traceparent?: string; tracestate?: string } {
  const traceparent = validTraceparent(source.traceparent);
  if (traceparent === undefined) return {};
  const tracestate = validTracestate(source.tracestate);
  return tracestate === undefined ? { traceparent } : { traceparent, tracestate };
}
