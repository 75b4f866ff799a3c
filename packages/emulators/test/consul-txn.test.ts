import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startConsulEmulator } from '../src/index.js';
import type { ConsulEmulator } from '../src/index.js';

interface TxnEntry {
  LockIndex: number;
  Key: string;
  Flags: number;
  Value: string | null;
  Session?: string;
  CreateIndex: number;
  ModifyIndex: number;
}

interface TxnAnswer {
  status: number;
  body: { Results: { KV: TxnEntry }[] | null; Errors: { OpIndex: number; What: string }[] | null };
  headers: Headers;
}

let consul: ConsulEmulator;

beforeEach(async () => {
  consul = await startConsulEmulator();
});

afterEach(async () => {
  await consul.close();
});

type Op = { Verb: string; Key: string; Value?: string; Index?: number; Session?: string; Flags?: number };

async function txn(ops: Op[]): Promise<TxnAnswer> {
  const res = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: JSON.stringify(ops.map((KV) => ({ KV }))) });
  return { status: res.status, body: (await res.json()) as TxnAnswer['body'], headers: res.headers };
}

function b64(s: string): string {
  return Buffer.from(s).toString('base64');
}

async function value(key: string): Promise<string | undefined> {
  const res = await fetch(`${consul.url}/v1/kv/${key}?raw`);
  return res.status === 404 ? undefined : res.text();
}

async function session(body: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${consul.url}/v1/session/create`, { method: 'PUT', body: JSON.stringify(body) });
  return ((await res.json()) as { ID: string }).ID;
}

describe('Consul emulator: /v1/txn', () => {
  it('applies all operations at one index and returns write results without values', async () => {
    const answer = await txn([
      { Verb: 'set', Key: 'a', Value: b64('1') },
      { Verb: 'cas', Key: 'b', Value: b64('2'), Index: 0 },
      { Verb: 'get', Key: 'a' },
    ]);
    expect(answer.status).toBe(200);
    expect(answer.body.Errors).toBeNull();
    const results = answer.body.Results ?? [];
    expect(results).toHaveLength(3);
    expect(results[0]?.KV).toMatchObject({ Key: 'a', Value: null, LockIndex: 0 });
    expect(results[1]?.KV.ModifyIndex).toBe(results[0]?.KV.ModifyIndex);
    expect(results[2]?.KV.Value).toBe(b64('1'));
  });

  it('is all-or-nothing: one failed check rolls back every write and reports OpIndex and What', async () => {
    await txn([{ Verb: 'set', Key: 'x', Value: b64('old') }]);
    const answer = await txn([
      { Verb: 'set', Key: 'x', Value: b64('new') },
      { Verb: 'set', Key: 'y', Value: b64('new') },
      { Verb: 'cas', Key: 'x', Value: b64('cas'), Index: 1 },
    ]);
    expect(answer.status).toBe(409);
    expect(answer.body.Results).toBeNull();
    expect(answer.body.Errors).toEqual([{ OpIndex: 2, What: 'failed to set key "x", index is stale' }]);
    expect(await value('x')).toBe('old');
    expect(await value('y')).toBeUndefined();
  });

  it('implements the check verbs and the delete verbs with Consul’s quirks', async () => {
    const s = await session();
    const set = await txn([{ Verb: 'lock', Key: 'k', Value: b64('v'), Session: s }]);
    const modify = set.body.Results?.[0]?.KV.ModifyIndex ?? 0;
    expect(
      (
        await txn([
          { Verb: 'check-index', Key: 'k', Index: modify },
          { Verb: 'check-session', Key: 'k', Session: s },
          { Verb: 'check-not-exists', Key: 'other' },
        ])
      ).status,
    ).toBe(200);
    const failed = await txn([
      { Verb: 'check-index', Key: 'k', Index: modify + 1 },
      { Verb: 'check-index', Key: 'missing', Index: 1 },
      { Verb: 'check-session', Key: 'k', Session: 'someone-else' },
      { Verb: 'check-not-exists', Key: 'k' },
      { Verb: 'get', Key: 'missing' },
    ]);
    expect(failed.status).toBe(409);
    expect(failed.body.Errors?.map((e) => e.OpIndex)).toEqual([0, 1, 2, 3, 4]);
    expect(failed.body.Errors?.[0]?.What).toContain('failed index check for key "k"');
    expect(failed.body.Errors?.[1]?.What).toBe('failed to check index, key "missing" doesn\'t exist');
    // delete-cas of a missing key succeeds in Consul.
    expect((await txn([{ Verb: 'delete-cas', Key: 'missing', Index: 7 }])).status).toBe(200);
    expect((await txn([{ Verb: 'delete-cas', Key: 'k', Index: modify + 1 }])).status).toBe(409);
    expect((await txn([{ Verb: 'delete-cas', Key: 'k', Index: modify }])).status).toBe(200);
    expect(await value('k')).toBeUndefined();
  });

  it('lock and unlock verbs follow session ownership; an unknown session fails the transaction', async () => {
    const s1 = await session();
    const s2 = await session();
    expect((await txn([{ Verb: 'lock', Key: 'l', Session: s1 }])).status).toBe(200);
    const held = await txn([{ Verb: 'lock', Key: 'l', Session: s2 }]);
    expect(held.body.Errors?.[0]?.What).toBe('failed to lock key "l", lock is already held');
    const bad = await txn([{ Verb: 'lock', Key: 'l2', Session: 'nope' }]);
    expect(bad.body.Errors?.[0]?.What).toBe('invalid session "nope"');
    const notMine = await txn([{ Verb: 'unlock', Key: 'l', Session: s2 }]);
    expect(notMine.status).toBe(409);
    expect((await txn([{ Verb: 'unlock', Key: 'l', Session: s1 }])).status).toBe(200);
  });

  it('a transaction sees its own writes (create then lock in one go)', async () => {
    const s = await session();
    const answer = await txn([
      { Verb: 'cas', Key: 'eph', Value: b64('v'), Index: 0 },
      { Verb: 'lock', Key: 'eph', Value: b64('v'), Session: s },
    ]);
    expect(answer.status).toBe(200);
    expect(answer.body.Results?.[1]?.KV).toMatchObject({ Session: s, LockIndex: 1 });
  });

  it('limits a transaction to 64 operations, its body to 512 KiB, and each value to 512 KiB', async () => {
    const ops = Array.from({ length: 65 }, (_, i) => ({ Verb: 'get', Key: `k${i}` }));
    const tooMany = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: JSON.stringify(ops.map((KV) => ({ KV }))) });
    expect(tooMany.status).toBe(413);
    expect(await tooMany.text()).toBe('Transaction contains too many operations (65 > 64)');
    const ok = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: JSON.stringify(ops.slice(0, 64).map((KV) => ({ KV }))) });
    expect(ok.status).toBe(409);
    const big = Buffer.alloc(400 * 1024).toString('base64');
    const tooLarge = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: JSON.stringify([{ KV: { Verb: 'set', Key: 'big', Value: big } }]) });
    expect(tooLarge.status).toBe(413);
    expect(await tooLarge.text()).toBe('Request body too large, max size: 524288 bytes');
    const roomy = await startConsulEmulator({ txnMaxReqLen: 4 * 1024 * 1024 });
    try {
      const huge = Buffer.alloc(600 * 1024).toString('base64');
      const res = await fetch(`${roomy.url}/v1/txn`, { method: 'PUT', body: JSON.stringify([{ KV: { Verb: 'set', Key: 'huge', Value: huge } }]) });
      expect(res.status).toBe(413);
      expect(await res.text()).toBe('Value for key "huge" is too large (614400 > 524288 bytes)');
    } finally {
      await roomy.close();
    }
  });

  it('a read-only transaction carries the leader headers; a bad body is a 400', async () => {
    const read = await txn([{ Verb: 'get-tree', Key: 'nothing/' }]);
    expect(read.status).toBe(200);
    expect(read.body.Results).toEqual([]);
    expect(read.headers.get('x-consul-knownleader')).toBe('true');
    const bad = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: '{not json' });
    expect(bad.status).toBe(400);
    const wrongValue = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: JSON.stringify([{ KV: { Verb: 'set', Key: 'k', Value: '***' } }]) });
    expect(wrongValue.status).toBe(400);
  });

  it('matches field names case-insensitively, as Go’s JSON decoder does', async () => {
    const res = await fetch(`${consul.url}/v1/txn`, { method: 'PUT', body: JSON.stringify([{ kv: { verb: 'set', key: 'lower', value: b64('v') } }]) });
    expect(res.status).toBe(200);
    expect(await value('lower')).toBe('v');
  });
});
