import { TaskGraphError } from '@taskgraph/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { brownCorpus, countsCodec, plainWordCount } from '../src/index.js';

function decodeError(bytes: Uint8Array): unknown {
  try {
    countsCodec.decode(bytes);
  } catch (err) {
    return err;
  }
  return undefined;
}

function expectDecodeFailed(bytes: Uint8Array): void {
  expect(TaskGraphError.is(decodeError(bytes), 'DECODE_FAILED')).toBe(true);
}

function expectInvalid(counts: Map<string, number>): void {
  let thrown: unknown;
  try {
    countsCodec.encode(counts);
  } catch (err) {
    thrown = err;
  }
  expect(TaskGraphError.is(thrown, 'INVALID_ARGUMENT')).toBe(true);
}

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);

describe('countsCodec', () => {
  it('round-trips any map of words to non-negative safe integers (fast-check)', () => {
    const word = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 30 }));
    const count = fc.oneof(fc.nat({ max: 300 }), fc.maxSafeNat());
    fc.assert(
      fc.property(fc.array(fc.tuple(word, count), { maxLength: 60 }), (entries) => {
        const counts = new Map(entries);
        const back = countsCodec.decode(countsCodec.encode(counts));
        expect([...back]).toEqual([...counts]);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips the count of the whole corpus, smaller than its JSON', () => {
    const corpus = brownCorpus();
    const counts = plainWordCount(
      corpus.dir,
      corpus.files.map((f) => f.name),
    );
    const encoded = countsCodec.encode(counts);
    expect(countsCodec.decode(encoded)).toEqual(counts);
    expect(encoded.length).toBeLessThan(Buffer.byteLength(JSON.stringify(Object.fromEntries(counts))));
  });

  it('writes the documented layout', () => {
    const encoded = countsCodec.encode(
      new Map([
        ['ab', 300],
        ['\u00e9', 0],
      ]),
    );
    expect([...encoded]).toEqual([0x57, 0x43, 0x01, 2, 2, 0x61, 0x62, 0xac, 0x02, 2, 0xc3, 0xa9, 0]);
    expect(countsCodec.decode(bytes(0x57, 0x43, 0x01, 0))).toEqual(new Map());
  });

  it('refuses bad bytes with DecodeFailedError', () => {
    const good = countsCodec.encode(new Map([['the', 3], ['cat', 1]]));
    for (let n = 0; n < good.length; n++) expectDecodeFailed(good.subarray(0, n)); // every truncation
    expectDecodeFailed(Uint8Array.from([...good, 0])); // trailing byte
    expectDecodeFailed(bytes(0x7b, 0x7d)); // JSON "{}"
    expectDecodeFailed(bytes(0x57, 0x44, 0x01, 0)); // bad magic
    expectDecodeFailed(bytes(0x57, 0x43, 0x02, 0)); // unknown version
    expectDecodeFailed(bytes(0x57, 0x43, 0x01, 2, 1, 0x61, 1, 1, 0x61, 2)); // a word twice
    expectDecodeFailed(bytes(0x57, 0x43, 0x01, 1, 2, 0xc3, 0x28, 1)); // invalid UTF-8
    expectDecodeFailed(bytes(0x57, 0x43, 0x01, 1, 1, 0x61, 0x81, 0x00)); // non-canonical varint
    expectDecodeFailed(bytes(0x57, 0x43, 0x01, 1, 1, 0x61, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)); // too long
    expectDecodeFailed(bytes(0x57, 0x43, 0x01, 1, 1, 0x61, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10)); // 2^53
    expectDecodeFailed(bytes(0x57, 0x43, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f)); // 2^32 words claimed in 8 bytes
  });

  it('decodes random bytes only to a map that encodes back to the same bytes (fast-check)', () => {
    const prefixed = fc.uint8Array({ maxLength: 40 }).map((b) => Uint8Array.from([0x57, 0x43, 0x01, ...b]));
    fc.assert(
      fc.property(fc.oneof(prefixed, fc.uint8Array({ maxLength: 40 })), (b) => {
        const err = decodeError(b);
        if (err === undefined) expect([...countsCodec.encode(countsCodec.decode(b))]).toEqual([...b]);
        else expect(TaskGraphError.is(err, 'DECODE_FAILED')).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses to encode what it could not decode back: negative, fractional or unsafe counts, lone surrogates', () => {
    expectInvalid(new Map([['a', -1]]));
    expectInvalid(new Map([['a', 1.5]]));
    expectInvalid(new Map([['a', 2 ** 53]]));
    expectInvalid(new Map([['a', Number.NaN]]));
    expectInvalid(new Map([['\ud800', 1]]));
    expectInvalid(new Map([['x\udc00y', 1]]));
    expect(countsCodec.decode(countsCodec.encode(new Map([['\ud83d\ude00', 1]])))).toEqual(new Map([['\ud83d\ude00', 1]]));
  });
});
