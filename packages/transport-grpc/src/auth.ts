/**
 * The job credential: a secret shared by the job's nodes (from a file or the
 * environment, never from the store). A caller signs each request's identity (the
 * method's path, the envelope, a timestamp and a fresh nonce) with an HMAC under
 * the secret; the server checks that before anything else and signs its answer
 * (the caller's nonce and the outcome) back, so a caller also refuses a node that
 * does not hold the secret, e.g. one an address record forged in the store points
 * at. Without TLS the payloads are signed too (nothing else protects them on the
 * wire); over TLS they are not, which keeps large payloads at TLS's cost alone.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { InvalidArgumentError } from '@taskgraph/api';
import { ENVELOPE_KEY, MetadataKeys } from './metadata.js';

/** The request header carrying the caller's authenticator: `v1.<ms>.<nonce>.<mac>`. */
export const AUTH_KEY = 'tg-auth';
/** The answer header (success) or trailer (error) carrying the server's proof. */
export const PROOF_KEY = 'tg-proof';
/** How far a request's timestamp may be from the server's clock. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
/** A shorter secret is too easy to guess offline from one recorded request. */
export const MIN_SECRET_BYTES = 16;

const HEADER = /^v1\.(\d{1,15})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/;
const PROOF = /^[A-Za-z0-9_-]{43}$/;
const SEPARATE_KEYS = [MetadataKeys.job, MetadataKeys.from, MetadataKeys.to, MetadataKeys.epoch, MetadataKeys.token, MetadataKeys.requestId];

/** What a signed request proved: its nonce, which the answer's proof covers. */
export interface Verified {
  readonly nonce: string;
}

export class JobCredential {
  readonly #requestKey: Buffer;
  readonly #answerKey: Buffer;

  /** `signPayloads`: sign request and answer bytes too (no TLS under the calls). */
  constructor(
    secret: Uint8Array,
    readonly signPayloads: boolean,
  ) {
    if (!(secret instanceof Uint8Array) || secret.byteLength < MIN_SECRET_BYTES) {
      throw new InvalidArgumentError(`the job secret must be at least ${MIN_SECRET_BYTES} bytes`);
    }
    // Separate keys per direction: no answer's proof can pass for a request's authenticator.
    this.#requestKey = createHmac('sha256', secret).update('taskgraph request v1').digest();
    this.#answerKey = createHmac('sha256', secret).update('taskgraph answer v1').digest();
  }

  /** The authenticator header for a request, and the nonce its answer must prove. */
  sign(path: string, identity: string, payload: Uint8Array, now: number): { header: string; nonce: string } {
    const nonce = randomBytes(12).toString('base64url');
    const ts = String(now);
    return { header: `v1.${ts}.${nonce}.${this.#requestMac(path, identity, ts, nonce, payload)}`, nonce };
  }

  /** Checks a request's authenticator; undefined for anything but a valid, fresh one. */
  verify(md: Metadata, path: string, payload: Uint8Array, now: number): Verified | undefined {
    const values = md.get(AUTH_KEY);
    if (values.length !== 1 || typeof values[0] !== 'string') return undefined;
    const identity = identityOf(md);
    if (identity === undefined) return undefined;
    return this.verifyHeader(values[0], path, identity, payload, now);
  }

  /** Checks an authenticator given as text (a stream frame's) for the request `identity` (its envelope). */
  verifyHeader(header: string, path: string, identity: string, payload: Uint8Array, now: number): Verified | undefined {
    const m = HEADER.exec(header);
    if (m === null) return undefined;
    const [, ts, nonce, mac] = m as unknown as [string, string, string, string];
    if (Math.abs(now - Number(ts)) > MAX_CLOCK_SKEW_MS) return undefined;
    return equal(mac, this.#requestMac(path, identity, ts, nonce, payload)) ? { nonce } : undefined;
  }

  /** The server's proof for an answer: `outcome` is "OK" or the error's gRPC code. */
  prove(nonce: string, outcome: string, body: Uint8Array | undefined): string {
    const h = createHmac('sha256', this.#answerKey).update(`${nonce}\n${outcome}\n`);
    if (this.signPayloads && body !== undefined) h.update(body);
    return h.digest('base64url');
  }

  /** True when `md` carries the proof of this answer. */
  proven(md: Metadata | undefined, nonce: string, outcome: string, body: Uint8Array | undefined): boolean {
    const values = md?.get(PROOF_KEY) ?? [];
    if (values.length !== 1 || typeof values[0] !== 'string') return false;
    return this.provenBy(values[0], nonce, outcome, body);
  }

  /** True when `proof` (a stream frame's) is the proof of this answer. */
  provenBy(proof: string, nonce: string, outcome: string, body: Uint8Array | undefined): boolean {
    return PROOF.test(proof) && equal(proof, this.prove(nonce, outcome, body));
  }

  #requestMac(path: string, identity: string, ts: string, nonce: string, payload: Uint8Array): string {
    const h = createHmac('sha256', this.#requestKey).update(`${path}\n${identity}\n${ts}\n${nonce}\n`);
    if (this.signPayloads) h.update(payload);
    return h.digest('base64url');
  }
}

/**
 * The request's identity as its caller wrote it: the envelope header, or the six
 * separate headers joined the same way. Read raw, before any parsing: nothing of an
 * unauthenticated request is interpreted.
 */
export function identityOf(md: Metadata): string | undefined {
  const envelope = md.get(ENVELOPE_KEY);
  if (envelope.length === 1) return typeof envelope[0] === 'string' ? envelope[0] : undefined;
  if (envelope.length > 1) return undefined;
  const parts: string[] = [];
  for (const key of SEPARATE_KEYS) {
    const v = md.get(key);
    if (v.length !== 1 || typeof v[0] !== 'string') return undefined;
    parts.push(v[0]);
  }
  return parts.join(';');
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
