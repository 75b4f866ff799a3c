/**
 * Consul's JSON shapes, as this backend reads and writes them.
 */
import { DecodeFailedError } from '@taskgraph/api';

/** A KV entry as `/v1/kv` and `/v1/txn` return it. */
export interface KvPair {
  readonly LockIndex: number;
  readonly Key: string;
  readonly Flags: number;
  readonly Value: string | null;
  readonly Session?: string;
  readonly CreateIndex: number;
  readonly ModifyIndex: number;
}

/** One `/v1/txn` KV operation. */
export interface TxnOp {
  readonly Verb: 'set' | 'cas' | 'lock' | 'unlock' | 'get' | 'get-tree' | 'check-index' | 'check-session' | 'check-not-exists' | 'delete' | 'delete-cas' | 'delete-tree';
  readonly Key: string;
  readonly Value?: string;
  readonly Flags?: number;
  readonly Index?: number;
  readonly Session?: string;
}

export interface TxnError {
  readonly OpIndex: number;
  readonly What: string;
}

export type TxnOutcome = { readonly ok: true; readonly results: readonly KvPair[] } | { readonly ok: false; readonly errors: readonly TxnError[] };

function isPair(v: unknown): v is KvPair {
  if (typeof v !== 'object' || v === null) return false;
  const p = v as Record<string, unknown>;
  return (
    typeof p['Key'] === 'string' &&
    typeof p['ModifyIndex'] === 'number' &&
    typeof p['CreateIndex'] === 'number' &&
    typeof p['LockIndex'] === 'number' &&
    (p['Value'] === null || p['Value'] === undefined || typeof p['Value'] === 'string')
  );
}

function parseJson(body: Buffer, what: string): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new DecodeFailedError(`${what}: Consul's answer is not JSON`, { cause: err });
  }
}

export function parsePairs(body: Buffer, what: string): KvPair[] {
  const v = parseJson(body, what);
  if (!Array.isArray(v) || !v.every(isPair)) throw new DecodeFailedError(`${what}: Consul's answer is not a list of KV entries`);
  return v;
}

export function parseTxn(body: Buffer, status: number, what: string): TxnOutcome {
  const v = parseJson(body, what);
  if (typeof v !== 'object' || v === null) throw new DecodeFailedError(`${what}: Consul's transaction answer is not an object`);
  const o = v as Record<string, unknown>;
  if (status === 409) {
    const errors = o['Errors'];
    if (!Array.isArray(errors)) throw new DecodeFailedError(`${what}: Consul's 409 answer has no Errors`);
    return {
      ok: false,
      errors: errors.map((e: unknown) => {
        const r = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
        return { OpIndex: typeof r['OpIndex'] === 'number' ? r['OpIndex'] : -1, What: String(r['What'] ?? '') };
      }),
    };
  }
  const results = o['Results'] ?? [];
  if (!Array.isArray(results)) throw new DecodeFailedError(`${what}: Consul's transaction answer has no Results list`);
  const pairs: KvPair[] = [];
  for (const r of results) {
    const kv = typeof r === 'object' && r !== null ? (r as Record<string, unknown>)['KV'] : undefined;
    if (kv !== undefined) {
      if (!isPair(kv)) throw new DecodeFailedError(`${what}: Consul's transaction result is not a KV entry`);
      pairs.push(kv);
    }
  }
  return { ok: true, results: pairs };
}

export function toBase64(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
}

export function fromBase64(value: string | null | undefined): Uint8Array {
  if (value === null || value === undefined || value === '') return new Uint8Array(0);
  return new Uint8Array(Buffer.from(value, 'base64'));
}

/** The lock's fencing token: CreateIndex grows whenever the lock key is recreated, LockIndex with each holder of one key. */
export function lockToken(pair: Pick<KvPair, 'CreateIndex' | 'LockIndex'>): bigint {
  return (BigInt(pair.CreateIndex) << 32n) | BigInt(pair.LockIndex);
}
