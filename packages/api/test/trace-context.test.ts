import { describe, expect, it } from 'vitest';
import { MAX_TRACEPARENT_LENGTH, MAX_TRACESTATE_LENGTH, traceContextOf, validTraceparent, validTracestate } from '../src/index.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const GOOD = `00-${TRACE}-${SPAN}-01`;

describe('W3C trace context checks', () => {
  it('accepts a well-formed traceparent, sampled or not, and a later version with more fields', () => {
    expect(validTraceparent(GOOD)).toBe(GOOD);
    expect(validTraceparent(`00-${TRACE}-${SPAN}-00`)).toBe(`00-${TRACE}-${SPAN}-00`);
    expect(validTraceparent(`01-${TRACE}-${SPAN}-01-what.ever_comes~next`)).toBe(`01-${TRACE}-${SPAN}-01-what.ever_comes~next`);
  });

  it.each([
    ['not a string', 42],
    ['empty', ''],
    ['garbage', 'not-a-traceparent'],
    ['upper-case hex', GOOD.toUpperCase()],
    ['version ff', `ff-${TRACE}-${SPAN}-01`],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${SPAN}-01`],
    ['all-zero parent id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['a short trace id', `00-${TRACE.slice(1)}-${SPAN}-01`],
    ['fields after version 00', `${GOOD}-extra`],
    ['a separator inside a later version', `01-${TRACE}-${SPAN}-01-a;b`],
    ['spaces around it', ` ${GOOD} `],
    ['too long', `01-${TRACE}-${SPAN}-01-${'x'.repeat(MAX_TRACEPARENT_LENGTH)}`],
  ])('rejects a traceparent: %s', (_what, value) => {
    expect(validTraceparent(value)).toBeUndefined();
  });

  it('bounds the tracestate and keeps it to printable ASCII', () => {
    expect(validTracestate('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7')).toBe('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
    expect(validTracestate('a'.repeat(MAX_TRACESTATE_LENGTH))).toBeDefined();
    expect(validTracestate('a'.repeat(MAX_TRACESTATE_LENGTH + 1))).toBeUndefined();
    expect(validTracestate('')).toBeUndefined();
    expect(validTracestate('k=v\n')).toBeUndefined();
    expect(validTracestate('k=é')).toBeUndefined();
    expect(validTracestate(7)).toBeUndefined();
  });

  it('copies only a context that may travel: a tracestate goes only with a valid traceparent', () => {
    expect(traceContextOf({ traceparent: GOOD, tracestate: 'k=v' })).toEqual({ traceparent: GOOD, tracestate: 'k=v' });
    expect(traceContextOf({ traceparent: GOOD, tracestate: 'k=\u0001' })).toEqual({ traceparent: GOOD });
    expect(traceContextOf({ traceparent: 'junk', tracestate: 'k=v' })).toEqual({});
    expect(traceContextOf({})).toEqual({});
  });
});
