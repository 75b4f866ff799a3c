import { describe, expect, it } from 'vitest';
import { NotOwnerError, TaskGraphError } from '@taskgraph/api';
import { rejection } from '@taskgraph/testkit';

describe('rejection', () => {
  it('resolves with the TaskGraphError the promise rejects with', async () => {
    const thrown = new NotOwnerError('node-2 runs task 3 now', { details: { task: 3 } });
    const err = await rejection(Promise.reject(thrown));
    expect(err).toBe(thrown);
    expect(err.code).toBe('NOT_OWNER');
    expect(err.retryable).toBe(true);
  });

  it('recognises a TaskGraphError by its code and name, as a second installed copy would make it', async () => {
    const foreign = Object.assign(new Error('from another copy of @taskgraph/api'), { name: 'ConflictError', code: 'CONFLICT', retryable: false });
    expect(TaskGraphError.is(foreign)).toBe(true);
    expect((await rejection(Promise.reject(foreign))).code).toBe('CONFLICT');
  });

  it('fails when the promise resolves', async () => {
    await expect(rejection(Promise.resolve(42))).rejects.toThrow('expected a rejection with a TaskGraphError, but the promise resolved with number');
  });

  it('rethrows a rejection that is not a TaskGraphError as it is', async () => {
    const plain = new TypeError('not typed');
    await expect(rejection(Promise.reject(plain))).rejects.toBe(plain);
  });
});
