import { TaskGraphError } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { frame, frameUpdate, isSnapshotHeader, unframe, unframeUpdate } from '../src/replication-wire.js';
import { bytes, text } from './parts.js';

function decodeError(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    if (TaskGraphError.is(err, 'DECODE_FAILED')) return err.message;
    throw err;
  }
  throw new Error('expected DecodeFailedError');
}

describe('update frames', () => {
  it('carry the token, epoch and seq and the change, which is a copy of the caller’s bytes', () => {
    const data = bytes('change');
    const out = frameUpdate({ primaryToken: '18446744073709551615', epoch: 7, seq: 2 ** 40 }, data);
    data.fill(0);
    expect(text(out.data)).toBe('change');
    const { header, body } = unframeUpdate(out.frame);
    expect(header).toEqual({ primaryToken: '18446744073709551615', epoch: 7, seq: 2 ** 40 });
    expect(text(body)).toBe('change');
  });

  it('an empty change is a frame of its fixed part', () => {
    const { frame: f } = frameUpdate({ primaryToken: '1', epoch: 0, seq: 1 }, new Uint8Array(0));
    expect(f.length).toBe(18);
    expect(unframeUpdate(f).body.length).toBe(0);
  });

  it('refuses what is not an update frame with DecodeFailedError', () => {
    const good = frameUpdate({ primaryToken: '42', epoch: 3, seq: 9 }, bytes('x')).frame;
    expect(decodeError(() => unframeUpdate(new Uint8Array(0)))).toMatch(/a frame of 0 bytes/);
    expect(decodeError(() => unframeUpdate(good.subarray(0, 10)))).toMatch(/a frame of 10 bytes/);
    const letters = good.slice();
    letters[1] = 0x41;
    expect(decodeError(() => unframeUpdate(letters))).toMatch(/not decimal digits/);
    const zeroSeq = frameUpdate({ primaryToken: '42', epoch: 3, seq: 9 }, bytes('x')).frame;
    new DataView(zeroSeq.buffer).setFloat64(1 + 2 + 8, 0);
    expect(decodeError(() => unframeUpdate(zeroSeq))).toMatch(/seq 0/);
    const fraction = good.slice();
    new DataView(fraction.buffer).setFloat64(1 + 2, 1.5);
    expect(decodeError(() => unframeUpdate(fraction))).toMatch(/epoch 1.5/);
    const nan = good.slice();
    new DataView(nan.buffer).setFloat64(1 + 2 + 8, Number.NaN);
    expect(decodeError(() => unframeUpdate(nan))).toMatch(/seq NaN/);
  });

  it('are not built for a token that is not decimal digits', () => {
    expect(decodeError(() => frameUpdate({ primaryToken: '1a', epoch: 0, seq: 1 }, new Uint8Array(0)))).toMatch(/not a decimal fencing token/);
  });
});

describe('JSON-headed frames', () => {
  it('round-trip a header and a body, and refuse a header of the wrong shape', () => {
    const f = frame({ primaryToken: '3', incarnation: 2, seq: 5, total: 1, id: 'a' }, bytes('S'));
    const { header, body } = unframe(f, 'snapshot', isSnapshotHeader);
    expect(header).toEqual({ primaryToken: '3', incarnation: 2, seq: 5, total: 1, id: 'a' });
    expect(text(body)).toBe('S');
    expect(decodeError(() => unframe(frame({ seq: -1 }), 'snapshot', isSnapshotHeader))).toMatch(/wrong shape/);
    expect(decodeError(() => unframe(bytes('\u0000\u0000\u0000\u0009{'), 'snapshot', isSnapshotHeader))).toMatch(/runs past/);
  });
});
