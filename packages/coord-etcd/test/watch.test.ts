import { describe, it, expect } from 'vitest';
import type { WatchBatch } from '@taskgraph/api';
import { eventually, rejection } from '@taskgraph/testkit';
import type { EtcdCoordinator } from '../src/index.js';
import { bytes, etcdFixture, patience, text } from './helpers.js';

const etcd = etcdFixture();

/** Collects a watch's batches in the background until `stop()`. */
function collect(c: EtcdCoordinator, prefix: string, after?: string) {
  const controller = new AbortController();
  const batches: WatchBatch[] = [];
  let error: unknown;
  const done = (async () => {
    try {
      for await (const b of c.watch(prefix, after === undefined ? { signal: controller.signal } : { after, signal: controller.signal })) batches.push(b);
    } catch (err) {
      error = err;
    }
  })();
  return {
    batches,
    error: () => error,
    puts: () => batches.flatMap((b) => b.events.flatMap((e) => (e.type === 'put' ? [`${e.key}=${text(e.value) ?? ''}`] : []))),
    async stop() {
      controller.abort();
      await done;
    },
    done,
  };
}

function assertIncreasing(batches: readonly WatchBatch[]): void {
  const revs = batches.map((b) => BigInt(b.revision));
  for (let i = 1; i < revs.length; i++) expect(revs[i] as bigint).toBeGreaterThan(revs[i - 1] as bigint);
}

describe('etcd watch: batches are revisions', () => {
  it('groups the events of one transaction into one batch, in revision order', async () => {
    const c = await etcd.coordinator();
    const start = await c.list('g/');
    const w = collect(c, 'g/', start.revision);
    await c.create('g/a', bytes('1'));
    await c.deletePrefix('g/');
    await c.create('g/b', bytes('2'));
    await c.create('g/c', bytes('3'));
    // One deletePrefix of two keys is one revision with two events.
    await c.deletePrefix('g/');
    await eventually('five batches', () => w.batches.length >= 5, patience);
    await w.stop();
    expect(w.batches.map((b) => b.events.map((e) => `${e.type}:${e.key}`))).toEqual([
      ['put:g/a'],
      ['delete:g/a'],
      ['put:g/b'],
      ['put:g/c'],
      ['delete:g/b', 'delete:g/c'],
    ]);
    assertIncreasing(w.batches);
  });

  it('a put event carries the version that update expects', async () => {
    const c = await etcd.coordinator();
    const start = await c.list('v/');
    const w = collect(c, 'v/', start.revision);
    const v = await c.create('v/k', bytes('1'));
    await eventually('the put', () => w.batches.length === 1, patience);
    const event = w.batches[0]?.events[0];
    expect(event?.type === 'put' ? event.version : undefined).toBe(v);
    expect(w.batches[0]?.revision).toBe(v);
    await w.stop();
  });

  it('rejects a revision that is not one of etcd', async () => {
    const c = await etcd.coordinator();
    expect(() => c.watch('x/', { after: 'abc', signal: new AbortController().signal })).toThrow(/not an etcd revision/);
  });
});

describe('etcd watch: many at once', () => {
  it('a client with a hundred watches open warns of no listener leak, and every watch sees its key', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const c = await etcd.coordinator();
      // A signal of its own per watch: what they share is the client's.
      const stops = Array.from({ length: 100 }, () => new AbortController());
      const seen = new Set<number>();
      const loops = stops.map(async (stop, i) => {
        for await (const batch of c.watch(`many/${i}/`, { signal: stop.signal })) {
          if (batch.events.some((e) => e.key === `many/${i}/k`)) seen.add(i);
        }
      });
      for (let i = 0; i < 100; i++) await c.create(`many/${i}/k`, bytes('x'));
      await eventually('every watch saw its key', () => seen.size === 100, patience);
      for (const stop of stops) stop.abort();
      await Promise.all(loops);
      // Warnings are emitted on a later tick.
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  }, 60_000);
});

describe('etcd watch: compaction', () => {
  it('throws CompactedError for a revision etcd compacted away; re-listing and watching on works', async () => {
    const c = await etcd.coordinator();
    const start = await c.list('cp/');
    let v = await c.create('cp/k', bytes('0'));
    for (let i = 1; i <= 5; i++) v = await c.update('cp/k', bytes(String(i)), v);
    await c.client.kv.compact({ revision: v, physical: true });
    const w = collect(c, 'cp/', start.revision);
    await w.done;
    expect((w.error() as { code?: string }).code).toBe('COMPACTED');
    expect(w.batches).toEqual([]);
    const again = await c.list('cp/');
    expect(again.entries.map((e) => text(e.value))).toEqual(['5']);
    const w2 = collect(c, 'cp/', again.revision);
    await c.update('cp/k', bytes('6'), v);
    await eventually('the watch after the re-list sees the update', () => w2.puts().includes('cp/k=6'), patience);
    await w2.stop();
  });

  it('a compaction under a running watch does not disturb it', async () => {
    const c = await etcd.coordinator();
    const start = await c.list('cr/');
    const w = collect(c, 'cr/', start.revision);
    const v = await c.create('cr/k', bytes('0'));
    await eventually('the first put', () => w.puts().length === 1, patience);
    await c.client.kv.compact({ revision: v, physical: true });
    await c.update('cr/k', bytes('1'), v);
    await eventually('the put after the compaction', () => w.puts().length === 2, patience);
    expect(w.error()).toBeUndefined();
    await w.stop();
  });
});

describe('etcd watch: faults', () => {
  const own = etcdFixture({ name: 'restarted' });

  it('resumes across an etcd stop and restart on the same data dir and misses nothing', async () => {
    const c = await own.coordinator({ requestTimeoutMs: 2000 });
    const writer = await own.coordinator({ namespace: c.namespace });
    const start = await c.list('r/');
    const w = collect(c, 'r/', start.revision);
    for (let i = 0; i < 5; i++) await writer.create(`r/${i}`, bytes(String(i)));
    await eventually('the first five puts', () => w.puts().length === 5, patience);
    await own.server.stop();
    await own.server.restart();
    // Writes the watch has not seen yet, made as soon as etcd is back.
    for (let i = 5; i < 10; i++) {
      await eventually(`write ${i} is accepted`, async () => {
        await writer.create(`r/${i}`, bytes(String(i))).catch((err: { code?: string }) => {
          if (err.code !== 'ALREADY_EXISTS') throw err;
        });
        return true;
      }, patience);
    }
    await eventually('all ten puts', () => w.puts().length >= 10, patience);
    await w.stop();
    expect(w.error()).toBeUndefined();
    expect(w.puts()).toEqual(Array.from({ length: 10 }, (_, i) => `r/${i}=${i}`));
    assertIncreasing(w.batches);
  }, 60_000);

  it('resumes after kill -9 while writes continue in the gap', async () => {
    const c = await own.coordinator({ requestTimeoutMs: 2000 });
    const start = await c.list('k/');
    const w = collect(c, 'k/', start.revision);
    await c.create('k/before', bytes('b'));
    await eventually('the put before the kill', () => w.puts().length === 1, patience);
    await own.server.kill();
    // The watch's stream is down; another client writes as soon as etcd is back,
    // possibly before the watch reconnects: those writes must come from history.
    await own.server.restart();
    const writer = await own.coordinator({ namespace: c.namespace });
    for (let i = 0; i < 20; i++) await writer.create(`k/${String(i).padStart(2, '0')}`, bytes(String(i)));
    await eventually('all 21 puts', () => w.puts().length >= 21, patience);
    await w.stop();
    expect(w.puts()).toEqual(['k/before=b', ...Array.from({ length: 20 }, (_, i) => `k/${String(i).padStart(2, '0')}=${i}`)]);
    assertIncreasing(w.batches);
  }, 60_000);

  it('a watch whose etcd is down keeps trying, and aborting it ends it without error', async () => {
    const c = await own.coordinator({ requestTimeoutMs: 1000 });
    await own.server.stop();
    try {
      const controller = new AbortController();
      const it = c.watch('down/', { signal: controller.signal })[Symbol.asyncIterator]();
      const pending = it.next();
      controller.abort();
      expect(await pending).toEqual({ value: undefined, done: true });
    } finally {
      await own.server.restart();
    }
  }, 60_000);

  it('reports CompactedError when etcd went back in revisions (data replaced), instead of waiting forever', async () => {
    const c = await own.coordinator();
    const list = await c.list('gone/');
    const future = (BigInt(list.revision) + 1000n).toString();
    const err = await rejection(
      (async () => {
        for await (const b of c.watch('gone/', { after: future, signal: new AbortController().signal })) return b;
        return undefined;
      })(),
    );
    expect(err.code).toBe('COMPACTED');
  });
});
