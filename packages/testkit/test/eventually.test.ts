import { describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';

async function failure(run: () => Promise<unknown>): Promise<Error> {
  try {
    await run();
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`expected an Error, got ${String(err)}`);
  }
  throw new Error('expected a rejection, but it resolved');
}

describe('eventually', () => {
  it('resolves with the first truthy value, from a sync or an async condition', async () => {
    let tries = 0;
    await expect(eventually('the third try', () => (++tries >= 3 ? { tries } : undefined))).resolves.toEqual({ tries: 3 });
    let asyncTries = 0;
    await expect(eventually('an async condition', async () => ++asyncTries === 2 && 'done')).resolves.toBe('done');
    expect(asyncTries).toBe(2);
  });

  it('tries once even with a zero timeout', async () => {
    await expect(eventually('at once', () => 42, { timeoutMs: 0 })).resolves.toBe(42);
  });

  it('a condition that throws is "not yet"', async () => {
    let tries = 0;
    const value = await eventually('the condition stops throwing', () => {
      if (++tries < 3) throw new Error('not yet');
      return tries;
    });
    expect(value).toBe(3);
  });

  it('on timeout names what it waited for and the last value seen', async () => {
    let n = 0;
    const err = await failure(() => eventually('the counter reaches -1', () => (n++, 0), { timeoutMs: 30 }));
    expect(err.message).toMatch(/^timed out after 30 ms waiting until the counter reaches -1 \(last value: 0\)$/);
    expect(err.cause).toBeUndefined();
    expect(n).toBeGreaterThan(1);
  });

  it('on timeout names the last error seen, and keeps it as the cause', async () => {
    const cause = new TypeError('no server');
    const err = await failure(() =>
      eventually(
        'the server answers',
        async () => {
          throw cause;
        },
        { timeoutMs: 20, intervalMs: 5 },
      ),
    );
    expect(err.message).toBe('timed out after 20 ms waiting until the server answers (last error: TypeError: no server)');
    expect(err.cause).toBe(cause);
  });

  it('tells a last value of an empty string from undefined', async () => {
    const err = await failure(() => eventually('the name is set', () => '', { timeoutMs: 0 }));
    expect(err.message).toContain("(last value: '')");
  });

  it('rejects a negative timeout or a non-positive interval', async () => {
    await expect(eventually('x', () => true, { timeoutMs: -1 })).rejects.toThrow(RangeError);
    await expect(eventually('x', () => true, { intervalMs: 0 })).rejects.toThrow(RangeError);
  });
});
