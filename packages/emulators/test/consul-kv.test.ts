import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startConsulEmulator } from '../src/index.js';
import type { ConsulEmulator } from '../src/index.js';

interface Entry {
  LockIndex: number;
  Key: string;
  Flags: number;
  Value: string | null;
  Session?: string;
  CreateIndex: number;
  ModifyIndex: number;
}

let consul: ConsulEmulator;

beforeEach(async () => {
  consul = await startConsulEmulator();
});

afterEach(async () => {
  await consul.close();
});

function url(path: string): string {
  return `${consul.url}${path}`;
}

async function put(path: string, body = ''): Promise<unknown> {
  const res = await fetch(url(path), { method: 'PUT', body });
  expect(res.status).toBe(200);
  return res.json();
}

async function getEntries(path: string): Promise<{ status: number; index: string | null; entries: Entry[] }> {
  const res = await fetch(url(path));
  const index = res.headers.get('x-consul-index');
  if (res.status === 404) return { status: 404, index, entries: [] };
  return { status: res.status, index, entries: (await res.json()) as Entry[] };
}

async function createSession(body: Record<string, unknown> = {}): Promise<string> {
  const created = (await put('/v1/session/create', JSON.stringify(body))) as { ID: string };
  return created.ID;
}

function b64(s: string): string {
  return Buffer.from(s).toString('base64');
}

describe('Consul emulator: /v1/kv reads and writes', () => {
  it('stores a value and returns the entry with Consul’s JSON shape and read headers', async () => {
    expect(await put('/v1/kv/app/config?flags=42', 'hello')).toBe(true);
    const res = await fetch(url('/v1/kv/app/config'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-consul-knownleader')).toBe('true');
    expect(res.headers.get('x-consul-lastcontact')).toBe('0');
    const [entry] = (await res.json()) as Entry[];
    expect(entry).toEqual({
      LockIndex: 0,
      Key: 'app/config',
      Flags: 42,
      Value: b64('hello'),
      CreateIndex: entry?.ModifyIndex,
      ModifyIndex: entry?.ModifyIndex,
    });
    expect(res.headers.get('x-consul-index')).toBe(String(entry?.ModifyIndex));
    const raw = await fetch(url('/v1/kv/app/config?raw'));
    expect(await raw.text()).toBe('hello');
  });

  it('answers 404 with an index header for a missing key, and Value null for an empty value', async () => {
    const missing = await getEntries('/v1/kv/nothing/here');
    expect(missing.status).toBe(404);
    expect(Number(missing.index)).toBeGreaterThan(0);
    await put('/v1/kv/empty');
    const empty = await getEntries('/v1/kv/empty');
    expect(empty.entries[0]?.Value).toBeNull();
  });

  it('never reports index 0, even before the first write', async () => {
    const fresh = await startConsulEmulator({ initialIndex: 0 });
    try {
      const res = await fetch(`${fresh.url}/v1/kv/x`);
      expect(res.status).toBe(404);
      expect(res.headers.get('x-consul-index')).toBe('1');
    } finally {
      await fresh.close();
    }
  });

  it('check-and-set: cas=0 creates only a missing key; cas=N replaces only ModifyIndex N', async () => {
    expect(await put('/v1/kv/k?cas=0', 'one')).toBe(true);
    expect(await put('/v1/kv/k?cas=0', 'two')).toBe(false);
    const [first] = (await getEntries('/v1/kv/k')).entries;
    expect(await put(`/v1/kv/k?cas=${first!.ModifyIndex + 1000}`, 'stale')).toBe(false);
    expect(await put(`/v1/kv/k?cas=${first!.ModifyIndex}`, 'three')).toBe(true);
    const [second] = (await getEntries('/v1/kv/k')).entries;
    expect(second!.Value).toBe(b64('three'));
    expect(second!.ModifyIndex).toBeGreaterThan(first!.ModifyIndex);
    expect(second!.CreateIndex).toBe(first!.CreateIndex);
    expect(await put('/v1/kv/absent?cas=5', 'x')).toBe(false);
  });

  it('a write that changes nothing keeps ModifyIndex (Consul skips unchanged entries)', async () => {
    await put('/v1/kv/same', 'v');
    const [a] = (await getEntries('/v1/kv/same')).entries;
    await put('/v1/kv/same', 'v');
    const [b] = (await getEntries('/v1/kv/same')).entries;
    expect(b!.ModifyIndex).toBe(a!.ModifyIndex);
    await put('/v1/kv/same?flags=1', 'v');
    const [c] = (await getEntries('/v1/kv/same')).entries;
    expect(c!.ModifyIndex).toBeGreaterThan(a!.ModifyIndex);
  });

  it('recurse lists a prefix in key order; keys lists names, folded at a separator', async () => {
    for (const k of ['p/b', 'p/a', 'p/c/d', 'q/z']) await put(`/v1/kv/${k}`, k);
    const list = await getEntries('/v1/kv/p/?recurse');
    expect(list.entries.map((e) => e.Key)).toEqual(['p/a', 'p/b', 'p/c/d']);
    expect(Number(list.index)).toBe(Math.max(...list.entries.map((e) => e.ModifyIndex)));
    expect(await (await fetch(url('/v1/kv/p/?keys'))).json()).toEqual(['p/a', 'p/b', 'p/c/d']);
    expect(await (await fetch(url('/v1/kv/p/?keys&separator=/'))).json()).toEqual(['p/a', 'p/b', 'p/c/']);
    expect((await getEntries('/v1/kv/none/?recurse')).status).toBe(404);
    expect((await fetch(url('/v1/kv/none/?keys'))).status).toBe(404);
  });

  it('DELETE: cas deletes only at the given index (a missing key counts as deleted); recurse deletes a tree', async () => {
    await put('/v1/kv/d/one', '1');
    const [one] = (await getEntries('/v1/kv/d/one')).entries;
    const del = async (path: string): Promise<unknown> => (await fetch(url(path), { method: 'DELETE' })).json();
    expect(await del(`/v1/kv/d/one?cas=${one!.ModifyIndex + 1}`)).toBe(false);
    expect(await del(`/v1/kv/d/one?cas=${one!.ModifyIndex}`)).toBe(true);
    expect(await del('/v1/kv/d/one?cas=3')).toBe(true);
    await put('/v1/kv/t/a', 'a');
    await put('/v1/kv/t/b/c', 'c');
    await put('/v1/kv/u', 'u');
    expect(await del('/v1/kv/t/?recurse')).toBe(true);
    expect((await getEntries('/v1/kv/t/?recurse')).status).toBe(404);
    expect((await getEntries('/v1/kv/u')).status).toBe(200);
  });

  it('after a delete the prefix index is the tombstone’s, so a blocking reader sees the delete', async () => {
    await put('/v1/kv/g/a', 'a');
    await put('/v1/kv/g/b', 'b');
    const before = Number((await getEntries('/v1/kv/g/?recurse')).index);
    await fetch(url('/v1/kv/g/b'), { method: 'DELETE' });
    const after = Number((await getEntries('/v1/kv/g/?recurse')).index);
    expect(after).toBeGreaterThan(before);
    consul.store.reapTombstones();
    const reaped = Number((await getEntries('/v1/kv/g/?recurse')).index);
    expect(reaped).toBeLessThan(after);
  });

  it('refuses values over 512 KiB with 413 and Consul’s message', async () => {
    const body = 'x'.repeat(512 * 1024 + 1);
    const res = await fetch(url('/v1/kv/big'), { method: 'PUT', body });
    expect(res.status).toBe(413);
    expect(await res.text()).toContain('Request body(524289 bytes) too large, max size: 524288 bytes');
    expect(await put('/v1/kv/big', 'x'.repeat(512 * 1024))).toBe(true);
  });

  it('applies the key rules of current Consul releases on /v1/kv, and not in permissive mode', async () => {
    const bad = await fetch(url(`/v1/kv/${encodeURIComponent('has space')}`), { method: 'PUT', body: 'x' });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain("invalid character ' '");
    const ext = await fetch(url('/v1/kv/config.json'), { method: 'PUT', body: 'x' });
    expect(ext.status).toBe(400);
    const ctl = await fetch(url('/v1/kv/a%01b'));
    expect(ctl.status).toBe(400);
    const old = await startConsulEmulator({ keyRules: 'permissive' });
    try {
      const ok = await fetch(`${old.url}/v1/kv/${encodeURIComponent('has space')}`, { method: 'PUT', body: 'x' });
      expect(await ok.json()).toBe(true);
    } finally {
      await old.close();
    }
  });

  it('rejects conflicting flags and unknown datacenters, and answers 405 to other methods', async () => {
    const conflicting = await fetch(url('/v1/kv/k?cas=0&acquire=abc'), { method: 'PUT', body: 'x' });
    expect(conflicting.status).toBe(400);
    expect(await conflicting.text()).toContain('Conflicting flags');
    const dc = await fetch(url('/v1/kv/k?dc=elsewhere'));
    expect(dc.status).toBe(500);
    expect(await dc.text()).toBe('No path to datacenter');
    const post = await fetch(url('/v1/kv/k'), { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
  });

  it('enforces an ACL token when configured (header, bearer or query)', async () => {
    const secured = await startConsulEmulator({ aclToken: 's3cret' });
    try {
      expect((await fetch(`${secured.url}/v1/kv/k`)).status).toBe(403);
      expect((await fetch(`${secured.url}/v1/kv/k`, { headers: { 'X-Consul-Token': 'wrong' } })).status).toBe(403);
      expect((await fetch(`${secured.url}/v1/kv/k`, { headers: { 'X-Consul-Token': 's3cret' } })).status).toBe(404);
      expect((await fetch(`${secured.url}/v1/kv/k`, { headers: { Authorization: 'Bearer s3cret' } })).status).toBe(404);
      expect((await fetch(`${secured.url}/v1/kv/k?token=s3cret`)).status).toBe(404);
    } finally {
      await secured.close();
    }
  });
});

describe('Consul emulator: acquire and release', () => {
  it('acquire takes a free key, counts LockIndex, and refuses a key another session holds', async () => {
    const s1 = await createSession();
    const s2 = await createSession();
    expect(await put(`/v1/kv/lock?acquire=${s1}`, 'owner-1')).toBe(true);
    let [e] = (await getEntries('/v1/kv/lock')).entries;
    expect(e).toMatchObject({ LockIndex: 1, Session: s1, Value: b64('owner-1') });
    expect(await put(`/v1/kv/lock?acquire=${s2}`, 'owner-2')).toBe(false);
    // Re-acquiring by the holder keeps LockIndex.
    expect(await put(`/v1/kv/lock?acquire=${s1}`, 'owner-1')).toBe(true);
    [e] = (await getEntries('/v1/kv/lock')).entries;
    expect(e!.LockIndex).toBe(1);
    expect(await put(`/v1/kv/lock?release=${s2}`)).toBe(false);
    expect(await put(`/v1/kv/lock?release=${s1}`, 'released')).toBe(true);
    [e] = (await getEntries('/v1/kv/lock')).entries;
    expect(e!.Session).toBeUndefined();
    expect(e!.LockIndex).toBe(1);
    expect(e!.Value).toBe(b64('released'));
    expect(await put(`/v1/kv/lock?acquire=${s2}`, 'owner-2')).toBe(true);
    [e] = (await getEntries('/v1/kv/lock')).entries;
    expect(e).toMatchObject({ LockIndex: 2, Session: s2 });
  });

  it('a plain write to a held key keeps its Session but resets LockIndex, as Consul does', async () => {
    const s = await createSession();
    await put(`/v1/kv/held?acquire=${s}`, 'a');
    await put('/v1/kv/held', 'b');
    const [e] = (await getEntries('/v1/kv/held')).entries;
    expect(e).toMatchObject({ Session: s, LockIndex: 0, Value: b64('b') });
  });

  it('acquire with an unknown session is a 500 error', async () => {
    const res = await fetch(url('/v1/kv/x?acquire=00000000-0000-0000-0000-000000000000'), { method: 'PUT', body: 'x' });
    expect(res.status).toBe(500);
    expect(await res.text()).toContain('invalid session');
  });
});
