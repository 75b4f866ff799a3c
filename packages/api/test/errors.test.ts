import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  ConflictError,
  EpochChangedError,
  ErrorCodes,
  InternalError,
  TaskGraphError,
  UnavailableError,
  abortError,
  deserializeError,
  errorFromCode,
  isErrorCode,
  parseSerializedError,
  serializeError,
} from '../src/index.js';

describe('TaskGraphError', () => {
  it('carries a code, a default retryable flag and a cause', () => {
    const cause = new Error('socket hang up');
    const err = new UnavailableError('etcd unreachable', { cause });
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.retryable).toBe(true);
    expect(err.cause).toBe(cause);
    expect(err.name).toBe('UnavailableError');
    expect(err).toBeInstanceOf(TaskGraphError);
    expect(new ConflictError('lost').retryable).toBe(false);
    expect(new ConflictError('lost', { retryable: true }).retryable).toBe(true);
  });

  it('builds the matching subclass for every code', () => {
    for (const code of Object.values(ErrorCodes)) {
      const err = errorFromCode(code, 'x');
      expect(err.code).toBe(code);
      expect(err.constructor.name).toMatch(/Error$/);
      expect(TaskGraphError.is(err, code)).toBe(true);
    }
  });

  it('is matched by code, so a copy from another installed package still counts', () => {
    const foreign = Object.assign(new Error('from another copy'), { code: 'CONFLICT', retryable: false });
    expect(TaskGraphError.is(foreign)).toBe(true);
    expect(TaskGraphError.is(foreign, 'CONFLICT')).toBe(true);
    expect(TaskGraphError.is(foreign, 'NOT_FOUND')).toBe(false);
    expect(TaskGraphError.is(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(false);
    expect(TaskGraphError.is(undefined)).toBe(false);
  });

  it('round-trips through the wire form into the same subclass and details', () => {
    const original = new EpochChangedError('epoch is 7', { details: { current: 7, big: 12n } });
    const wire = JSON.parse(JSON.stringify(serializeError(original))) as unknown;
    const parsed = parseSerializedError(wire);
    expect(parsed).toBeDefined();
    const rebuilt = deserializeError(parsed!, 'task 3');
    expect(rebuilt).toBeInstanceOf(EpochChangedError);
    expect((rebuilt as EpochChangedError).currentEpoch).toBe(7);
    expect(rebuilt.details['big']).toBe('12');
    expect(rebuilt.message).toBe('task 3: epoch is 7');
  });

  it('turns a plain error into APPLICATION and an unknown code into INTERNAL', () => {
    const wire = serializeError(new RangeError('bad index'));
    expect(wire.code).toBe('APPLICATION');
    expect(wire.details).toEqual({ name: 'RangeError' });
    expect(serializeError('just a string').message).toBe('just a string');
    const unknown = deserializeError({ code: 'SOMETHING_NEW', message: 'future' });
    expect(unknown).toBeInstanceOf(InternalError);
    expect(unknown.details['remoteCode']).toBe('SOMETHING_NEW');
    expect(parseSerializedError({ code: 1 })).toBeUndefined();
    expect(parseSerializedError(null)).toBeUndefined();
    expect(isErrorCode('NOT_OWNER')).toBe(true);
    expect(isErrorCode('nope')).toBe(false);
  });

  it('abortError keeps a typed reason and wraps anything else', () => {
    const c1 = new AbortController();
    const reason = new EpochChangedError('moved on');
    c1.abort(reason);
    expect(abortError(c1.signal)).toBe(reason);
    const c2 = new AbortController();
    c2.abort();
    const e = abortError(c2.signal, 'watch');
    expect(e).toBeInstanceOf(AbortedError);
    expect(e.message).toBe('watch was aborted');
  });
});
