import { describe, expect, it } from 'vitest';
import {
  InvalidArgumentError,
  assertValidKey,
  assertValidMethodName,
  assertValidPrefix,
  assertValidTtl,
  assertValidValue,
  utf8Length,
} from '../src/index.js';

describe('input checks', () => {
  it('accepts ordinary keys and prefixes', () => {
    expect(() => assertValidKey('job-1/tasks/3/addr', 100)).not.toThrow();
    expect(() => assertValidPrefix('job-1/tasks/', 100)).not.toThrow();
    expect(() => assertValidPrefix('job-1/tasks', 100)).not.toThrow();
  });

  it.each([
    ['', 'must not be empty'],
    ['/abs', 'empty segment'],
    ['a//b', 'empty segment'],
    ['a/', 'empty segment'],
    ['a/../b', '".." segment'],
    ['./a', '"." segment'],
    ['a\u0000b', 'control character'],
    ['a\nb', 'control character'],
  ])('rejects the key %j (%s)', (key, message) => {
    expect(() => assertValidKey(key, 100)).toThrow(InvalidArgumentError);
    expect(() => assertValidKey(key, 100)).toThrow(message);
  });

  it('counts the limit in UTF-8 bytes', () => {
    expect(utf8Length('é')).toBe(2);
    expect(() => assertValidKey('é'.repeat(6), 11)).toThrow('12 bytes; the limit is 11');
    expect(() => assertValidKey(42, 10)).toThrow('must be a string');
    expect(() => assertValidPrefix('/', 10)).toThrow(InvalidArgumentError);
  });

  it('checks values, TTLs and method names', () => {
    expect(() => assertValidValue(new Uint8Array(10), 10, 'k')).not.toThrow();
    expect(() => assertValidValue(new Uint8Array(11), 10, 'k')).toThrow('11 bytes; the limit is 10');
    expect(() => assertValidValue('text', 10, 'k')).toThrow('must be a Uint8Array');
    expect(() => assertValidTtl(5000, [1000, 60000], 'etcd')).not.toThrow();
    expect(() => assertValidTtl(500, [1000, 60000], 'etcd')).toThrow("outside etcd's range");
    expect(() => assertValidTtl(Number.NaN, [1000, 60000], 'etcd')).toThrow('positive number');
    expect(() => assertValidMethodName('getGradient_2')).not.toThrow();
    for (const bad of ['', '2x', 'a/b', 'a.b', 'x'.repeat(129)]) {
      expect(() => assertValidMethodName(bad)).toThrow(InvalidArgumentError);
    }
  });
});
