import { describe, expect, it } from 'vitest';
import { ManualClock, eventually } from '@taskgraph/testkit';
import { startConsulEmulator } from '../src/index.js';
import type { ConsulEmulator } from '../src/index.js';
import { emulatorPerTest } from './consul-helpers.js';

interface SessionInfo {
  ID: string;
  Name: string;
  Node: string;
  LockDelay: number;
  Behavior: string;
  TTL: string;
  NodeChecks: string[] | null;
  ServiceChecks: unknown;
  CreateIndex: number;
  ModifyIndex: number;
}

const start = emulatorPerTest();

async function create(c: ConsulEmulator, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${c.url}/v1/session/create`, { method: 'PUT', body: JSON.stringify(body) });
}

async function createId(c: ConsulEmulator, body: Record<string, unknown>): Promise<string> {
  const res = await create(c, body);
  expect(res.status).toBe(200);
  return ((await res.json()) as { ID: string }).ID;
}

async function info(c: ConsulEmulator, id: string): Promise<SessionInfo[]> {
  return (await (await fetch(`${c.url}/v1/session/info/${id}`)).json()) as SessionInfo[];
}

async function put(c: ConsulEmulator, path: string, body = ''): Promise<unknown> {
  return (await fetch(`${c.url}${path}`, { method: 'PUT', body })).json();
}

async function entry(c: ConsulEmulator, key: string): Promise<{ Session?: string; LockIndex: number; ModifyIndex: number; Value: string | null } | undefined> {
  const res = await fetch(`${c.url}/v1/kv/${key}`);
  if (res.status === 404) return undefined;
  return ((await res.json()) as { Session?: string; LockIndex: number; ModifyIndex: number; Value: string | null }[])[0];
}

describe('Consul emulator: sessions', () => {
  it('creates a session with Consul’s defaults and reports it in info, list and node', async () => {
    const c = await start();
    const id = await createId(c, { Name: 'worker' });
    const [s] = await info(c, id);
    expect(s).toMatchObject({
      ID: id,
      Name: 'worker',
      Node: 'consul-emulator',
      LockDelay: 15_000_000_000,
      Behavior: 'release',
      TTL: '',
      NodeChecks: ['serfHealth'],
      ServiceChecks: null,
    });
    expect(s!.CreateIndex).toBe(s!.ModifyIndex);
    const list = (await (await fetch(`${c.url}/v1/session/list`)).json()) as SessionInfo[];
    expect(list.map((x) => x.ID)).toEqual([id]);
    const node = (await (await fetch(`${c.url}/v1/session/node/consul-emulator`)).json()) as SessionInfo[];
    expect(node).toHaveLength(1);
    expect(await info(c, 'no-such-session')).toEqual([]);
  });

  it('accepts TTLs from 10s to 86400s and refuses others with Consul’s message', async () => {
    const c = await start();
    for (const ttl of ['10s', '86400s', '24h', '1m30s', '0s']) {
      expect((await create(c, { TTL: ttl })).status).toBe(200);
    }
    const short = await create(c, { TTL: '9s' });
    expect(short.status).toBe(500);
    expect(await short.text()).toBe("Invalid Session TTL '9000000000', must be between [10s=24h0m0s]");
    const long = await create(c, { TTL: '86401s' });
    expect(await long.text()).toBe("Invalid Session TTL '86401000000000', must be between [10s=24h0m0s]");
    const garbage = await create(c, { TTL: 'soon' });
    expect(garbage.status).toBe(500);
    expect(await garbage.text()).toContain("Session TTL 'soon' invalid");
    const behavior = await create(c, { Behavior: 'explode' });
    expect(await behavior.text()).toBe("Invalid Behavior setting 'explode'");
  });

  it('reads LockDelay as a duration, or as seconds when a small number, and takes an empty check list', async () => {
    const c = await start();
    const a = await createId(c, { LockDelay: 5, NodeChecks: [] });
    const b = await createId(c, { LockDelay: '0s', Checks: [] });
    const d = await createId(c, { LockDelay: '250ms', Behavior: 'delete', TTL: '30s' });
    expect((await info(c, a))[0]).toMatchObject({ LockDelay: 5_000_000_000, NodeChecks: null });
    expect((await info(c, b))[0]).toMatchObject({ LockDelay: 0 });
    expect((await info(c, d))[0]).toMatchObject({ LockDelay: 250_000_000, Behavior: 'delete', TTL: '30s' });
    const missing = await create(c, { NodeChecks: ['no-such-check'] });
    expect(missing.status).toBe(500);
  });

  it('renew answers the session; after destroy it is a 404; destroying twice is fine', async () => {
    const c = await start();
    const id = await createId(c, { TTL: '10s' });
    const renewed = await fetch(`${c.url}/v1/session/renew/${id}`, { method: 'PUT' });
    expect(renewed.status).toBe(200);
    expect(((await renewed.json()) as SessionInfo[])[0]?.ID).toBe(id);
    expect(await put(c, `/v1/session/destroy/${id}`)).toBe(true);
    expect(await put(c, `/v1/session/destroy/${id}`)).toBe(true);
    const gone = await fetch(`${c.url}/v1/session/renew/${id}`, { method: 'PUT' });
    expect(gone.status).toBe(404);
    expect(await gone.text()).toBe(`Session id '${id}' not found`);
    expect((await fetch(`${c.url}/v1/session/renew/${id}`)).status).toBe(405);
  });

  it('expires a session between TTL and 2 x TTL after its last renewal', async () => {
    const clock = new ManualClock();
    const c = await start({ clock });
    const id = await createId(c, { TTL: '10s' });
    await clock.advance(15_000);
    expect(await info(c, id)).toHaveLength(1);
    await fetch(`${c.url}/v1/session/renew/${id}`, { method: 'PUT' });
    await clock.advance(19_999);
    expect(await info(c, id)).toHaveLength(1);
    await clock.advance(1);
    expect(await info(c, id)).toEqual([]);
  });

  it('on invalidation, behavior "release" unlocks held keys and "delete" deletes them', async () => {
    const clock = new ManualClock();
    const c = await start({ clock });
    const releasing = await createId(c, { TTL: '10s', Behavior: 'release', LockDelay: '0s' });
    const deleting = await createId(c, { TTL: '10s', Behavior: 'delete', LockDelay: '0s' });
    expect(await put(c, `/v1/kv/r?acquire=${releasing}`, 'kept')).toBe(true);
    expect(await put(c, `/v1/kv/d?acquire=${deleting}`, 'gone')).toBe(true);
    const before = await entry(c, 'r');
    await clock.advance(20_000);
    const after = await entry(c, 'r');
    expect(after?.Session).toBeUndefined();
    expect(after?.LockIndex).toBe(before?.LockIndex);
    expect(after?.ModifyIndex).toBeGreaterThan(before!.ModifyIndex);
    expect(after?.Value).toBe(Buffer.from('kept').toString('base64'));
    expect(await entry(c, 'd')).toBeUndefined();
  });

  it('lock-delay refuses to re-lock a key for that long after an invalidation, not after a release', async () => {
    const clock = new ManualClock();
    const c = await start({ clock });
    const first = await createId(c, { LockDelay: '5s' });
    const second = await createId(c, {});
    expect(await put(c, `/v1/kv/lk?acquire=${first}`)).toBe(true);
    expect(await put(c, `/v1/session/destroy/${first}`)).toBe(true);
    expect(await put(c, `/v1/kv/lk?acquire=${second}`)).toBe(false);
    const txn = await fetch(`${c.url}/v1/txn`, { method: 'PUT', body: JSON.stringify([{ KV: { Verb: 'lock', Key: 'lk', Session: second } }]) });
    expect(txn.status).toBe(409);
    expect(((await txn.json()) as { Errors: { What: string }[] }).Errors[0]?.What).toBe('failed to lock key "lk" due to lock delay');
    await clock.advance(5_000);
    expect(await put(c, `/v1/kv/lk?acquire=${second}`)).toBe(true);
    expect(await put(c, `/v1/kv/lk?release=${second}`)).toBe(true);
    const third = await createId(c, {});
    expect(await put(c, `/v1/kv/lk?acquire=${third}`)).toBe(true);
  });

  it('caps lock-delay at 60 s', async () => {
    const clock = new ManualClock();
    const c = await start({ clock });
    const first = await createId(c, { LockDelay: '5m' });
    const second = await createId(c, {});
    await put(c, `/v1/kv/cap?acquire=${first}`);
    await put(c, `/v1/session/destroy/${first}`);
    await clock.advance(59_999);
    expect(await put(c, `/v1/kv/cap?acquire=${second}`)).toBe(false);
    await clock.advance(1);
    expect(await put(c, `/v1/kv/cap?acquire=${second}`)).toBe(true);
  });

  it(
    'expires a 10 s session on the real clock, deleting its key',
    async () => {
      const c = await start();
      const id = await createId(c, { TTL: '10s', Behavior: 'delete', LockDelay: '0s' });
      expect(await put(c, `/v1/kv/real?acquire=${id}`, 'v')).toBe(true);
      expect(await entry(c, 'real')).toBeDefined();
      await eventually('the session expires', async () => (await entry(c, 'real')) === undefined, { timeoutMs: 40_000 });
      expect(await info(c, id)).toEqual([]);
    },
    60_000,
  );
});

describe('Consul emulator: fault switches', () => {
  it('answers 500 "No cluster leader" or 503 while unavailable', async () => {
    const c = await start();
    c.faults.unavailable = 'no-leader';
    const noLeader = await fetch(`${c.url}/v1/kv/k`);
    expect(noLeader.status).toBe(500);
    expect(await noLeader.text()).toBe('No cluster leader');
    c.faults.unavailable = 'service-unavailable';
    expect((await fetch(`${c.url}/v1/kv/k`)).status).toBe(503);
    c.faults.unavailable = false;
    expect((await fetch(`${c.url}/v1/kv/k`)).status).toBe(404);
  });

  it('drops an answer after applying the write', async () => {
    const c = await start();
    c.faults.dropAnswers = 1;
    await expect(fetch(`${c.url}/v1/kv/dropped`, { method: 'PUT', body: 'applied' })).rejects.toThrow();
    expect((await entry(c, 'dropped'))?.Value).toBe(Buffer.from('applied').toString('base64'));
  });

  it('delays answers', async () => {
    const c = await start();
    c.faults.delayAnswerMs = 200;
    const controller = new AbortController();
    const slow = fetch(`${c.url}/v1/kv/slow`, { method: 'PUT', body: 'x', signal: controller.signal });
    await eventually('the write is applied while its answer is held back', () => c.store.getKey('slow') !== undefined);
    controller.abort();
    await expect(slow).rejects.toThrow();
    c.faults.delayAnswerMs = 0;
    expect(await entry(c, 'slow')).toBeDefined();
  });

  it('stop refuses connections and keeps the state; start resumes on the same port with fresh session timers', async () => {
    const clock = new ManualClock();
    const c = await start({ clock });
    const port = c.port;
    const id = await createId(c, { TTL: '10s', Behavior: 'delete' });
    await put(c, `/v1/kv/kept?acquire=${id}`, 'v');
    await c.stop();
    await expect(fetch(`${c.url}/v1/kv/kept`)).rejects.toThrow();
    // No server, no invalidation.
    await clock.advance(60_000);
    await c.start();
    expect(c.port).toBe(port);
    expect(await entry(c, 'kept')).toBeDefined();
    await clock.advance(19_999);
    expect(await info(c, id)).toHaveLength(1);
    await clock.advance(1);
    expect(await entry(c, 'kept')).toBeUndefined();
  });

  it('close leaves no handles behind', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length;
    const c = await startConsulEmulator();
    const id = await createId(c, { TTL: '10s' });
    const idx = (await fetch(`${c.url}/v1/session/list`)).headers.get('x-consul-index');
    const blocked = fetch(`${c.url}/v1/kv/x?index=${idx}&wait=60s`).catch(() => undefined);
    await put(c, `/v1/session/renew/${id}`);
    await c.close();
    await blocked;
    await eventually('handles are released', () => process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length <= before);
  });
});
