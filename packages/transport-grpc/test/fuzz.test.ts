/**
 * Property-based tests over what the gRPC transport reads from outside: request
 * metadata (the envelope and the separate headers), error trailers and status
 * details from a peer, and transport URLs. Whatever the input: a value, or a typed
 * TaskGraphError; never a crash of another kind. What the transport writes reads
 * back as itself.
 */
import { Metadata, status } from '@grpc/grpc-js';
import { TaskGraphError } from '@taskgraph/api';
import type { RequestMeta } from '@taskgraph/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { identityOf } from '../src/auth.js';
import { ENVELOPE_KEY, MetadataKeys, TrailerKeys, metaFromMetadata, metadataFromMeta, separateMetadataFromMeta } from '../src/metadata.js';
import { optionsFromUrl } from '../src/options.js';
import { errorFromStatus } from '../src/status.js';

const RUNS = { numRuns: 400 };
/** What a header value may hold (grpc-js refuses anything else before it reaches us). */
const headerText = fc.stringMatching(/^[ -~]{0,40}$/);
const numberish = fc.oneof(fc.integer({ min: -3, max: 1e6 }).map(String), headerText, fc.constantFrom('1e3', '0x10', '-0', '9007199254740993', ' 1'));

/** Runs `read`: a value, or a TaskGraphError; anything else fails the property. */
function valueOrTyped(read: () => unknown): void {
  try {
    read();
  } catch (err) {
    if (!TaskGraphError.is(err)) throw err;
  }
}

/** Reads a request's metadata as the server does: its identity (never throws), then its meta (a value or InvalidArgumentError). */
function readRequest(md: Metadata): void {
  identityOf(md);
  try {
    metaFromMetadata(md);
  } catch (err) {
    if (!TaskGraphError.is(err, 'INVALID_ARGUMENT')) throw err;
  }
}

describe('fuzz: request metadata', () => {
  it('an envelope of any text gives a RequestMeta or InvalidArgumentError, and its identity is read without throwing', () => {
    const parts = fc.tuple(headerText, numberish, numberish, numberish, fc.oneof(fc.stringMatching(/^\d{1,20}$/), headerText), headerText);
    fc.assert(
      fc.property(fc.oneof(headerText, parts.map((p) => p.join(';'))), (envelope) => {
        const md = new Metadata();
        md.set(ENVELOPE_KEY, envelope);
        readRequest(md);
      }),
      RUNS,
    );
  });

  it('separate headers, each present, missing or repeated, give a RequestMeta or InvalidArgumentError', () => {
    const keys = [MetadataKeys.job, MetadataKeys.from, MetadataKeys.to, MetadataKeys.epoch, MetadataKeys.token, MetadataKeys.requestId];
    fc.assert(
      fc.property(fc.array(fc.array(numberish, { maxLength: 2 }), { minLength: keys.length, maxLength: keys.length }), (values) => {
        const md = new Metadata();
        keys.forEach((k, i) => {
          for (const v of values[i] ?? []) md.add(k, v);
        });
        readRequest(md);
      }),
      RUNS,
    );
  });

  it('what the transport writes, envelope or separate headers, reads back as itself', () => {
    const meta = fc.record({
      job: fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,30}$/),
      from: fc.integer({ min: -1, max: 1e6 }),
      to: fc.integer({ min: 0, max: 1e6 }),
      epoch: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      token: fc.stringMatching(/^\d{1,20}$/),
      requestId: fc.string({ minLength: 1, maxLength: 30 }),
    });
    fc.assert(
      fc.property(meta, (m: RequestMeta) => {
        expect(metaFromMetadata(metadataFromMeta(m))).toEqual(m);
        expect(metaFromMetadata(separateMetadataFromMeta(m))).toEqual(m);
      }),
      RUNS,
    );
  });
});

describe('fuzz: answers from a peer', () => {
  it('any status, details and trailers become a TaskGraphError', () => {
    const codes = fc.constantFrom(...Object.values(status).filter((v): v is number => typeof v === 'number'));
    fc.assert(
      fc.property(
        codes,
        fc.string({ maxLength: 60 }),
        fc.option(fc.oneof(fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), fc.string({ maxLength: 60 }))),
        fc.option(headerText),
        fc.option(numberish),
        (code, details, errorJson, errorCode, current) => {
          const md = new Metadata();
          if (errorJson !== null) md.set(TrailerKeys.error, Buffer.from(errorJson, 'utf8'));
          if (errorCode !== null) md.set(TrailerKeys.errorCode, errorCode);
          if (current !== null) md.set(TrailerKeys.currentEpoch, current);
          const err = errorFromStatus({ code, details, metadata: md }, { method: 'm', address: '127.0.0.1:1' });
          expect(TaskGraphError.is(err)).toBe(true);
        },
      ),
      RUNS,
    );
  });
});

describe('fuzz: transport URLs', () => {
  it('any URL text gives options or a typed error', () => {
    const url = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.webUrl().map((u) => u.replace(/^https?/, 'grpc')),
      fc
        .tuple(
          fc.constantFrom('grpc', 'grpcs', 'http'),
          fc.oneof(fc.constant('127.0.0.1'), fc.constant('[::1]'), fc.domain(), headerText),
          fc.oneof(fc.integer({ min: -1, max: 70000 }).map(String), headerText),
          fc.array(fc.tuple(fc.constantFrom('advertise', 'maxMessageBytes', 'keepaliveMs', 'ca', 'nonsense', 'host'), headerText), { maxLength: 3 }),
        )
        .map(([scheme, host, port, params]) => `${scheme}://${host}:${port}?${params.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')}`),
    );
    fc.assert(
      fc.property(url, (text) => valueOrTyped(() => optionsFromUrl(text, {}))),
      RUNS,
    );
  });
});
