/**
 * Property-based tests over every decoder of what comes from outside a node: store
 * values, key names, replication frames, method payloads and error answers. Whatever
 * the input, a decoder returns a value or throws a typed DecodeFailedError; it never
 * crashes with anything else, and what core encodes decodes back to itself.
 */
import { TaskGraphError, deserializeError, parseSerializedError } from '@taskgraph/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonCodec } from '../src/codec.js';
import {
  decodeAddr,
  decodeBackup,
  decodeCount,
  FORMAT_VERSION,
  decodeEpoch,
  decodeMeta,
  decodeNode,
  decodeSpec,
  decodeStatus,
  encodeEpoch,
  encodeJson,
  keys,
  parseMetaKey,
  parseTaskKey,
} from '../src/layout.js';
import {
  frame,
  frameUpdate,
  isChunkRequest,
  isSnapshotHeader,
  isSnapshotRequest,
  unframe,
  unframeUpdate,
} from '../src/replication-wire.js';

const RUNS = { numRuns: 400 };
const enc = new TextEncoder();

/** Runs `decode`: a value, or DecodeFailedError; anything else fails the property. */
function decodedOrTyped(decode: () => unknown): boolean {
  try {
    decode();
    return true;
  } catch (err) {
    if (TaskGraphError.is(err, 'DECODE_FAILED')) return true;
    throw err;
  }
}

/** Bytes that are often JSON (objects with the fields decoders look at), sometimes anything. */
const storeBytes = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => enc.encode(JSON.stringify(v))),
  fc
    .record(
      {
        formatVersion: fc.oneof(fc.constant(1), fc.jsonValue({ maxDepth: 1 })),
        numTasks: fc.oneof(fc.integer({ min: -2, max: 5 }), fc.double(), fc.string()),
        linkTypes: fc.oneof(fc.array(fc.string(), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 })),
        backups: fc.oneof(fc.integer({ min: -1, max: 20 }), fc.string()),
        state: fc.constantFrom('running', 'done', 'failed', 'zzz', 1),
        nodeId: fc.oneof(fc.string(), fc.integer()),
        address: fc.oneof(fc.string(), fc.constant(null)),
        token: fc.oneof(fc.stringMatching(/^\d{1,20}$/), fc.string(), fc.integer()),
        incarnation: fc.oneof(fc.integer({ min: -1, max: 9 }), fc.string()),
        slot: fc.oneof(fc.integer({ min: -1, max: 9 }), fc.double()),
        primaryToken: fc.oneof(fc.stringMatching(/^\d{1,5}$/), fc.integer()),
        meta: fc.oneof(fc.string(), fc.integer()),
      },
      { requiredKeys: [] },
    )
    .map((v) => enc.encode(JSON.stringify(v))),
  fc.oneof(fc.stringMatching(/^-?\d{0,20}$/), fc.string()).map((s) => enc.encode(s)),
);

describe('fuzz: store values', () => {
  const decoders = { decodeSpec, decodeEpoch, decodeStatus, decodeAddr, decodeBackup, decodeNode, decodeMeta, decodeCount };
  for (const [name, decode] of Object.entries(decoders)) {
    it(`${name}: any bytes give a value or DecodeFailedError naming the key`, () => {
      fc.assert(
        fc.property(storeBytes, (bytes) => {
          try {
            decode('job/some/key', bytes);
          } catch (err) {
            if (!TaskGraphError.is(err, 'DECODE_FAILED')) throw err;
            expect(err.message).toContain('job/some/key');
          }
        }),
        RUNS,
      );
    });
  }

  it('what core writes reads back as itself', () => {
    fc.assert(
      fc.property(
        // Epochs are decimal integers of at most 15 digits in the store.
        fc.integer({ min: 0, max: 1e15 - 1 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.array(fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,15}$/), { maxLength: 4 }),
        fc.integer({ min: 0, max: 16 }),
        fc.stringMatching(/^\d{1,20}$/),
        (epoch, numTasks, linkTypes, backups, token) => {
          expect(decodeEpoch('k', encodeEpoch(epoch))).toBe(epoch);
          expect(decodeSpec('k', encodeJson({ formatVersion: FORMAT_VERSION, numTasks, linkTypes, backups }))).toMatchObject({ numTasks, linkTypes, backups });
          const addr = { nodeId: 'n', address: 'a:1', token, incarnation: 3 };
          expect(decodeAddr('k', encodeJson(addr))).toEqual(addr);
          const backup = { nodeId: 'n', address: 'a:1', token, slot: 1, state: 'ready' as const, primaryToken: token };
          expect(decodeBackup('k', encodeJson(backup))).toEqual(backup);
        },
      ),
      RUNS,
    );
  });

  it('key parsers take any string without throwing', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string().map((s) => `job/tasks/${s}`), fc.string().map((s) => `${keys.metaGeneration('job', 1, 2)}${s}`)), (key) => {
        parseTaskKey('job', key);
        parseMetaKey('job', key);
      }),
      RUNS,
    );
  });
});

describe('fuzz: replication frames', () => {
  it('any bytes: an update frame, a JSON-headed frame of each kind, or DecodeFailedError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }), fc.jsonValue({ maxDepth: 2 }).map((v) => frame(v, enc.encode('x')))), (bytes) => {
        expect(decodedOrTyped(() => unframeUpdate(bytes))).toBe(true);
        for (const check of [isSnapshotHeader, isSnapshotRequest, isChunkRequest]) {
          expect(decodedOrTyped(() => unframe(bytes, 'frame', check))).toBe(true);
        }
      }),
      RUNS,
    );
  });

  it('an update frame reads back as itself', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^\d{1,32}$/),
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ maxLength: 64 }),
        (primaryToken, epoch, seq, data) => {
          const { header, body } = unframeUpdate(frameUpdate({ primaryToken, epoch, seq }, data).frame);
          expect(header).toEqual({ primaryToken, epoch, seq });
          expect([...body]).toEqual([...data]);
        },
      ),
      RUNS,
    );
  });
});

describe('fuzz: payloads and error answers', () => {
  it('the JSON codec decodes any bytes to a value or DecodeFailedError, with and without a shape check', () => {
    const codec = jsonCodec<number>((v): v is number => typeof v === 'number');
    const plain = jsonCodec<unknown>();
    fc.assert(
      fc.property(storeBytes, (bytes) => {
        expect(decodedOrTyped(() => codec.decode(bytes))).toBe(true);
        expect(decodedOrTyped(() => plain.decode(bytes))).toBe(true);
      }),
      RUNS,
    );
  });

  it('an error answer of any shape becomes a typed error or is refused as not one', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue({ maxDepth: 3 }),
          fc.record({ code: fc.oneof(fc.constantFrom('NOT_OWNER', 'EPOCH_CHANGED', 'INTERNAL'), fc.string()), message: fc.string(), details: fc.jsonValue({ maxDepth: 2 }), retryable: fc.jsonValue({ maxDepth: 0 }) }, { requiredKeys: [] }),
        ),
        (value) => {
          const wire = parseSerializedError(value);
          if (wire === undefined) return;
          const err = deserializeError(wire, 'call');
          expect(TaskGraphError.is(err)).toBe(true);
          expect(typeof err.retryable).toBe('boolean');
        },
      ),
      RUNS,
    );
  });
});
