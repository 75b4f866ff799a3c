import { describe, expect, it } from 'vitest';
import { ManualClock, eventually } from '@taskgraph/testkit';
import type { ConsulEmulator } from '../src/index.js';
import { emulatorPerTest } from './consul-helpers.js';

const start = emulatorPerTest();

async function put(c: ConsulEmulator, key: string, body: string): Promise<void> {
  const res = await fetch(`${c.url}/v1/kv/${key}`, { method: 'PUT', body });
  expect(await res.json()).toBe(true);
}

async function index(c: ConsulEmulator, path: string): Promise<number> {
  return Number((await fetch(`${c.url}${path}`)).headers.get('x-consul-index'));
}

/** Starts a request and tells whether it has answered yet. */
function pending(path: string, c: ConsulEmulator): { done: () => boolean; response: Promise<Response> } {
  let finished = false;
  const response = fetch(`${c.url}${path}`).finally(() => {
    finished = true;
  });
  return { done: () => finished, response };
}

describe('Consul emulator: blocking queries', () => {
  it('holds a key query until the key changes, then answers with the new index', async () => {
    const c = await start();
    await put(c, 'watched', 'v1');
    const idx = await index(c, '/v1/kv/watched');
    const q = pending(`/v1/kv/watched?index=${idx}&wait=60s`, c);
    await eventually('the query blocks', () => c.blockingQueries === 1);
    await put(c, 'other', 'x');
    // A deliberate negative check: a change elsewhere must not answer the query.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(q.done()).toBe(false);
    await put(c, 'watched', 'v2');
    const res = await q.response;
    expect(Number(res.headers.get('x-consul-index'))).toBeGreaterThan(idx);
    const [entry] = (await res.json()) as { Value: string }[];
    expect(Buffer.from(entry!.Value, 'base64').toString()).toBe('v2');
  });

  it('answers at once when the index is already past the one given', async () => {
    const c = await start();
    await put(c, 'k', 'v');
    const res = await fetch(`${c.url}/v1/kv/k?index=1&wait=60s`);
    expect(res.status).toBe(200);
    expect(c.blockingQueries).toBe(0);
  });

  it('a prefix query wakes for a delete under the prefix (tombstone index)', async () => {
    const c = await start();
    await put(c, 'dir/a', 'a');
    await put(c, 'dir/b', 'b');
    const idx = await index(c, '/v1/kv/dir/?recurse');
    const q = pending(`/v1/kv/dir/?recurse&index=${idx}&wait=60s`, c);
    await eventually('the query blocks', () => c.blockingQueries === 1);
    await fetch(`${c.url}/v1/kv/dir/b`, { method: 'DELETE' });
    const res = await q.response;
    expect(Number(res.headers.get('x-consul-index'))).toBeGreaterThan(idx);
    expect(((await res.json()) as { Key: string }[]).map((e) => e.Key)).toEqual(['dir/a']);
  });

  it('returns the unchanged index when the wait runs out, after the wait plus up to wait/16 of jitter', async () => {
    const clock = new ManualClock();
    const c = await start({ clock, random: () => 1 });
    await put(c, 'k', 'v');
    const idx = await index(c, '/v1/kv/k');
    const q = pending(`/v1/kv/k?index=${idx}&wait=16s`, c);
    await eventually('the query blocks', () => c.blockingQueries === 1);
    await clock.advance(16_000);
    // A deliberate negative check: the jitter keeps the query open past the wait.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(q.done()).toBe(false);
    await clock.advance(1_000);
    const res = await q.response;
    expect(res.status).toBe(200);
    expect(Number(res.headers.get('x-consul-index'))).toBe(idx);
  });

  it('caps the wait at max_query_time and uses default_query_time when none is given', async () => {
    const clock = new ManualClock();
    const c = await start({ clock, random: () => 0, maxQueryTimeMs: 2_000, defaultQueryTimeMs: 1_000 });
    await put(c, 'k', 'v');
    const idx = await index(c, '/v1/kv/k');
    const long = pending(`/v1/kv/k?index=${idx}&wait=10m`, c);
    const unset = pending(`/v1/kv/k?index=${idx}`, c);
    await eventually('both queries block', () => c.blockingQueries === 2);
    await clock.advance(1_000);
    await unset.response;
    expect(long.done()).toBe(false);
    await clock.advance(1_000);
    expect((await long.response).status).toBe(200);
  });

  it('a snapshot restore wakes every blocking query with the older, lower index', async () => {
    const c = await start();
    await put(c, 's/a', '1');
    const saved = c.snapshot();
    await put(c, 's/b', '2');
    await put(c, 's/a', '3');
    const high = await index(c, '/v1/kv/s/?recurse');
    const q = pending(`/v1/kv/s/?recurse&index=${high}&wait=60s`, c);
    await eventually('the query blocks', () => c.blockingQueries === 1);
    c.restore(saved, { rewindIndex: true });
    const res = await q.response;
    const low = Number(res.headers.get('x-consul-index'));
    expect(low).toBeLessThan(high);
    expect(((await res.json()) as { Key: string }[]).map((e) => e.Key)).toEqual(['s/a']);
    // Later writes reuse indexes below what the client saw: a client that keeps
    // blocking on its old index does not see them until its wait runs out.
    await put(c, 's/c', '4');
    expect(await index(c, '/v1/kv/s/?recurse')).toBeLessThanOrEqual(high);
  });

  it('session queries block on the sessions table', async () => {
    const c = await start();
    const list = await fetch(`${c.url}/v1/session/list`);
    const idx = Number(list.headers.get('x-consul-index'));
    const q = pending(`/v1/session/list?index=${idx}&wait=60s`, c);
    await eventually('the query blocks', () => c.blockingQueries === 1);
    await fetch(`${c.url}/v1/session/create`, { method: 'PUT', body: '{"TTL":"10s"}' });
    const res = await q.response;
    expect(((await res.json()) as unknown[]).length).toBe(1);
  });

  it('rejects malformed index and wait parameters', async () => {
    const c = await start();
    expect((await fetch(`${c.url}/v1/kv/k?index=abc`)).status).toBe(400);
    const badWait = await fetch(`${c.url}/v1/kv/k?index=5&wait=soon`);
    expect(badWait.status).toBe(400);
    expect(await badWait.text()).toBe('Invalid wait time');
    expect((await fetch(`${c.url}/v1/kv/k?stale&consistent`)).status).toBe(400);
  });

  it('a client that gives up frees its blocking query', async () => {
    const c = await start();
    await put(c, 'k', 'v');
    const idx = await index(c, '/v1/kv/k');
    const controller = new AbortController();
    const q = fetch(`${c.url}/v1/kv/k?index=${idx}&wait=60s`, { signal: controller.signal });
    await eventually('the query blocks', () => c.blockingQueries === 1);
    controller.abort();
    await expect(q).rejects.toThrow();
    await eventually('the query is dropped', () => c.blockingQueries === 0);
  });
});
