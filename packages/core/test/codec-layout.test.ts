import { DecodeFailedError, InvalidArgumentError } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { assertValidJobName, bytesCodec, defineMethod, jsonCodec, serve } from '../src/index.js';
import { decodeAddr, decodeBackup, decodeEpoch, decodeMeta, decodeSpec, keys, parseMetaKey, parseTaskKey } from '../src/layout.js';

const enc = (s: string) => new TextEncoder().encode(s);

describe('codecs', () => {
  it('json round-trips, validates, and fails as DecodeFailed', () => {
    const c = jsonCodec<{ a: number }>((v): v is { a: number } => typeof v === 'object' && v !== null && typeof (v as { a?: unknown }).a === 'number');
    expect(c.decode(c.encode({ a: 1 }))).toEqual({ a: 1 });
    expect(() => c.decode(enc('{"a":"x"}'))).toThrow(DecodeFailedError);
    expect(() => c.decode(enc('{'))).toThrow('json codec cannot decode 1 bytes');
    expect(() => c.decode(new Uint8Array([0xff]))).toThrow(DecodeFailedError);
    expect(jsonCodec().decode(jsonCodec().encode(undefined))).toBeNull();
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    expect(() => jsonCodec().encode(cyclic)).toThrow(InvalidArgumentError);
    expect(bytesCodec.decode(bytesCodec.encode(new Uint8Array([1, 2])))).toEqual(new Uint8Array([1, 2]));
  });

  it('defineMethod checks the name and defaults to JSON; serve pairs it with a handler', async () => {
    const m = defineMethod<number, number>('double');
    expect(m.input.name).toBe('json');
    expect(() => defineMethod('not/valid')).toThrow(InvalidArgumentError);
    const h = serve(m, (_ctx, n) => n * 2);
    expect(await h.handle({ epoch: 0, signal: new AbortController().signal }, 21, 0)).toBe(42);
  });
});

describe('the job layout', () => {
  it('accepts DNS-label job names only', () => {
    expect(() => assertValidJobName('regression-1')).not.toThrow();
    for (const bad of ['', 'A', 'a_b', 'a.b', 'a/b', '-a', 'a-', 'é']) expect(() => assertValidJobName(bad)).toThrow(InvalidArgumentError);
  });

  it('parses its own keys and nothing else', () => {
    expect(parseTaskKey('j', 'j/tasks/12/addr')).toEqual({ kind: 'addr', task: 12 });
    expect(parseTaskKey('j', 'j/tasks/12/incarnation')).toEqual({ kind: 'incarnation', task: 12 });
    expect(parseTaskKey('j', 'j/tasks/x/addr')).toBeUndefined();
    expect(parseTaskKey('j', 'k/tasks/1/addr')).toBeUndefined();
    expect(parseMetaKey('j', 'j/meta/3/0/7/1/Parents')).toEqual({ to: 3, epoch: 7, from: 1, linkType: 'Parents' });
    expect(parseMetaKey('j', keys.meta('j', 3, 40, 1, 'Parents'))).toEqual({ to: 3, epoch: 40, from: 1, linkType: 'Parents' });
    expect(keys.meta('j', 3, 40, 1, 'Parents')).toBe('j/meta/3/2/40/1/Parents');
    // Filed under another generation than its epoch's: it would escape that generation's delete.
    expect(parseMetaKey('j', 'j/meta/3/1/7/1/Parents')).toBeUndefined();
    expect(parseMetaKey('j', 'j/meta/3/0/7/1')).toBeUndefined();
  });

  it('reports corrupt values with the key, as DecodeFailed', () => {
    expect(() => decodeEpoch('j/state/epoch', enc('12x'))).toThrow('corrupt value at j/state/epoch');
    expect(() => decodeEpoch('j/state/epoch', enc('-1'))).toThrow(DecodeFailedError);
    expect(decodeEpoch('j/state/epoch', enc('42'))).toBe(42);
    expect(() => decodeSpec('j/spec', enc('{"formatVersion":1,"numTasks":1,"linkTypes":[]}'))).toThrow('unsupported formatVersion 1 (this runtime reads 2)');
    expect(() => decodeSpec('j/spec', enc('[]'))).toThrow('not an object');
    expect(() => decodeAddr('j/tasks/1/addr', enc('{"nodeId":"n","address":"a","token":"x"}'))).toThrow('bad task address');
    expect(() => decodeMeta('k', enc('{"token":"1","metas":[1]}'))).toThrow('bad meta record');
    expect(() => decodeMeta('k', new Uint8Array([0xc3]))).toThrow('not UTF-8 JSON');
  });

  it('decodes an address or backup record once per text: the same bytes give the same frozen value, a corrupt one is reported each time with its key', () => {
    const text = '{"nodeId":"n","address":"local://n","token":"7","incarnation":2}';
    const a = decodeAddr('j/tasks/1/addr', enc(text));
    expect(a).toEqual({ nodeId: 'n', address: 'local://n', token: '7', incarnation: 2 });
    expect(Object.isFrozen(a)).toBe(true);
    expect(decodeAddr('j/tasks/2/addr', enc(text))).toBe(a);
    expect(decodeAddr('j/tasks/1/addr', enc(text.replace('"7"', '"8"')))).toMatchObject({ token: '8' });
    const bad = enc('{"nodeId":"n","address":"a","token":"x"}');
    expect(() => decodeAddr('j/tasks/3/addr', bad)).toThrow('corrupt value at j/tasks/3/addr');
    expect(() => decodeAddr('j/tasks/4/addr', bad)).toThrow('corrupt value at j/tasks/4/addr');
    expect(() => decodeAddr('j/tasks/5/addr', new Uint8Array([0xc3]))).toThrow('not UTF-8 JSON');
    const backup = '{"nodeId":"b","address":"local://b","token":"9","slot":0,"state":"ready","primaryToken":"7"}';
    const b = decodeBackup('j/tasks/1/backups/0', enc(backup));
    expect(b).toEqual({ nodeId: 'b', address: 'local://b', token: '9', slot: 0, state: 'ready', primaryToken: '7' });
    expect(decodeBackup('j/tasks/2/backups/0', enc(backup))).toBe(b);
    expect(() => decodeBackup('j/tasks/1/backups/0', enc('{"nodeId":"b"}'))).toThrow('bad backup record');
  });
});
