import { systemClock } from '@taskgraph/api';
import type { Coordinator, Entry, WatchBatch, WatchEvent } from '@taskgraph/api';
import { MemoryCoordinator, MemoryStore } from '@taskgraph/coord-memory';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import { eventually, startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { shareWatches } from '../src/shared-watch.js';
import type { SharedWatchCoordinator } from '../src/shared-watch.js';
import { WatchedPrefix } from '../src/watched-prefix.js';
import { bytes, recordingLogger } from './parts.js';

const text = (v: Uint8Array) => new TextDecoder().decode(v);

/** A level-triggered follower (as the node's are): the state it holds and every change it was told. */
function follower(coordinator: Coordinator, prefix: string) {
  const state = new Map<string, string>();
  const seen: string[] = [];
  const watch = new WatchedPrefix(
    coordinator,
    prefix,
    {
      snapshot: (entries: readonly Entry[]) => {
        state.clear();
        for (const e of entries) state.set(e.key, text(e.value));
        seen.push(`snapshot ${entries.map((e) => `${e.key}=${text(e.value)}`).join(',')}`);
      },
      event: (ev: WatchEvent) => {
        if (ev.type === 'put') state.set(ev.key, text(ev.value));
        else state.delete(ev.key);
        seen.push(ev.type === 'put' ? `put ${ev.key}=${text(ev.value)}` : `delete ${ev.key}`);
      },
    },
    systemClock,
    recordingLogger(),
  );
  return { state, seen, watch, start: () => watch.start(new AbortController().signal), stop: () => watch.stop() };
}

/** Every batch of a watch until `count` events arrived. */
async function batchesOf(watch: AsyncIterable<WatchBatch>, count: number): Promise<string[]> {
  const out: string[] = [];
  let n = 0;
  for await (const b of watch) {
    for (const ev of b.events) out.push(ev.type === 'put' ? `put ${ev.key}=${text(ev.value)}` : `delete ${ev.key}`);
    n += b.events.length;
    if (n >= count) break;
  }
  return out;
}

async function storeState(c: Coordinator, prefix: string): Promise<Map<string, string>> {
  const { entries } = await c.list(prefix);
  return new Map(entries.map((e) => [e.key, text(e.value)]));
}

describe('shared watches on the memory store', () => {
  let store: MemoryStore;
  let base: MemoryCoordinator;
  let writer: MemoryCoordinator;
  let shared: SharedWatchCoordinator;

  const setUp = (historyBatches?: number) => {
    store = new MemoryStore();
    base = new MemoryCoordinator({ store, namespace: 'tg' });
    writer = new MemoryCoordinator({ store, namespace: 'tg' });
    shared = shareWatches(base, { shares: (p) => p === 'j/tasks/', ...(historyBatches ? { historyBatches } : {}) });
  };

  afterEach(async () => {
    await shared.close();
    await writer.close();
  });

  it('N followers of one prefix cost one store watch, and each sees what its own watch would have shown', async () => {
    setUp();
    await writer.create('j/tasks/0', bytes('a'));
    const own = follower(writer, 'j/tasks/');
    const followers = [follower(shared, 'j/tasks/'), follower(shared, 'j/tasks/'), follower(shared, 'j/tasks/')];
    await own.start();
    await Promise.all(followers.map((f) => f.start()));
    expect(base.activeWatches).toBe(1);
    const v = await writer.create('j/tasks/1', bytes('b'));
    await writer.update('j/tasks/1', bytes('c'), v);
    await writer.delete('j/tasks/0', (await writer.get('j/tasks/0'))!.version);
    await writer.create('j/other', bytes('not followed'));
    await eventually('every follower saw the three changes', () => [own, ...followers].every((f) => f.seen.length === 4));
    for (const f of followers) expect(f.seen).toEqual(own.seen);
    expect(own.seen).toEqual(['snapshot j/tasks/0=a', 'put j/tasks/1=b', 'put j/tasks/1=c', 'delete j/tasks/0']);
    expect(shared.sharing).toEqual({ views: 1, followers: 3, listsShared: 3, ownWatches: 0 });
    expect(base.activeWatches).toBe(1);
    for (const f of followers) await f.stop();
    await own.stop();
    await eventually('the view stopped with its last follower', () => base.activeWatches === 0 && shared.sharing.views === 0);
  });

  it('a follower that joins late gets the current state, then every change after it', async () => {
    setUp();
    const first = follower(shared, 'j/tasks/');
    await first.start();
    for (let i = 0; i < 5; i++) await writer.create(`j/tasks/${i}`, bytes(String(i)));
    await eventually('the first follower saw the five', () => first.state.size === 5);
    const late = follower(shared, 'j/tasks/');
    await late.start();
    expect(late.seen).toEqual(['snapshot j/tasks/0=0,j/tasks/1=1,j/tasks/2=2,j/tasks/3=3,j/tasks/4=4']);
    await writer.create('j/tasks/5', bytes('5'));
    await eventually('both saw the sixth', () => first.state.size === 6 && late.state.size === 6);
    expect(late.seen.slice(1)).toEqual(['put j/tasks/5=5']);
    expect(late.state).toEqual(await storeState(writer, 'j/tasks/'));
    expect(base.activeWatches).toBe(1);
    await late.stop();
    await first.stop();
  });

  it('a watch after a listed revision replays the batches since, exactly as the store\'s own watch from there', async () => {
    setUp();
    const keeper = follower(shared, 'j/tasks/');
    await keeper.start();
    const listed = await shared.list('j/tasks/');
    await writer.create('j/tasks/a', bytes('1'));
    await writer.create('j/tasks/b', bytes('2'));
    await eventually('the view has both', () => keeper.state.size === 2);
    const stop = new AbortController();
    const sharedSeen = batchesOf(shared.watch('j/tasks/', { after: listed.revision, signal: stop.signal }), 3);
    const ownSeen = batchesOf(writer.watch('j/tasks/', { after: listed.revision, signal: stop.signal }), 3);
    await writer.delete('j/tasks/a', (await writer.get('j/tasks/a'))!.version);
    expect(await sharedSeen).toEqual(await ownSeen);
    expect(await sharedSeen).toEqual(['put j/tasks/a=1', 'put j/tasks/b=2', 'delete j/tasks/a']);
    expect(shared.sharing.ownWatches).toBe(0);
    stop.abort();
    await keeper.stop();
  });

  it('a revision the view does not keep gets a watch of its own on the store (exact), never a guess', async () => {
    setUp(2);
    const keeper = follower(shared, 'j/tasks/');
    await keeper.start();
    const old = await writer.list('j/tasks/');
    for (let i = 0; i < 4; i++) await writer.create(`j/tasks/${i}`, bytes(String(i)));
    await eventually('the view moved past its two kept batches', () => keeper.state.size === 4);
    const stop = new AbortController();
    const seen = await batchesOf(shared.watch('j/tasks/', { after: old.revision, signal: stop.signal }), 4);
    expect(seen).toEqual(['put j/tasks/0=0', 'put j/tasks/1=1', 'put j/tasks/2=2', 'put j/tasks/3=3']);
    expect(shared.sharing.ownWatches).toBe(1);
    stop.abort();
    await keeper.stop();
  });

  it('a compaction under the shared stream: every follower gets Compacted, re-lists from the rebuilt view, and ends exact', async () => {
    setUp();
    const followers = [follower(shared, 'j/tasks/'), follower(shared, 'j/tasks/')];
    await Promise.all(followers.map((f) => f.start()));
    await writer.create('j/tasks/0', bytes('a'));
    await eventually('both saw the first key', () => followers.every((f) => f.state.size === 1));
    base.setUnreachable(true);
    await writer.create('j/tasks/1', bytes('b'));
    await writer.delete('j/tasks/0', (await writer.get('j/tasks/0'))!.version);
    store.compact();
    base.setUnreachable(false);
    await eventually('both re-listed after the compaction', () => followers.every((f) => f.seen.filter((s) => s.startsWith('snapshot')).length === 2));
    await writer.create('j/tasks/2', bytes('c'));
    const want = await storeState(writer, 'j/tasks/');
    await eventually('both hold the store\'s state', () => followers.every((f) => f.state.size === want.size));
    for (const f of followers) {
      expect(f.state).toEqual(want);
      expect(f.seen.at(-2)).toBe('snapshot j/tasks/1=b');
      expect(f.seen.at(-1)).toBe('put j/tasks/2=c');
    }
    expect(base.activeWatches).toBe(1);
    expect(shared.sharing.ownWatches).toBe(0);
    for (const f of followers) await f.stop();
  });

  it('a transient failure of the shared stream is retried inside: the followers miss nothing', async () => {
    setUp();
    const refused = base.faults.add({ op: 'watch', times: 2 });
    const followers = [follower(shared, 'j/tasks/'), follower(shared, 'j/tasks/')];
    await Promise.all(followers.map((f) => f.start()));
    await writer.create('j/tasks/0', bytes('a'));
    await eventually('both saw the change', () => followers.every((f) => f.state.size === 1));
    expect(refused.hits).toBe(2);
    for (const f of followers) expect(f.seen).toEqual(['snapshot ', 'put j/tasks/0=a']);
    expect(shared.sharing.ownWatches).toBe(0);
    expect(base.activeWatches).toBe(1);
    for (const f of followers) await f.stop();
  });

  it('prefixes not shared, and watches from now, go straight to the store', async () => {
    setUp();
    const f = follower(shared, 'j/state/');
    await f.start();
    const g = follower(shared, 'j/state/');
    await g.start();
    expect(base.activeWatches).toBe(2);
    expect(shared.sharing).toEqual({ views: 0, followers: 0, listsShared: 0, ownWatches: 0 });
    const stop = new AbortController();
    const fromNow = batchesOf(shared.watch('j/tasks/', { signal: stop.signal }), 1);
    await eventually('the watch from now is open', () => base.activeWatches === 3);
    await writer.create('j/tasks/x', bytes('1'));
    expect(await fromNow).toEqual(['put j/tasks/x=1']);
    expect(shared.sharing.ownWatches).toBe(1);
    stop.abort();
    await f.stop();
    await g.stop();
  });

  it('stop() ends every follower\'s watch and leaves the wrapped coordinator open', async () => {
    setUp();
    const stop = new AbortController();
    const listed = await shared.list('j/tasks/');
    const watching = batchesOf(shared.watch('j/tasks/', { after: listed.revision, signal: stop.signal }), 1);
    await shared.stop();
    expect(await watching).toEqual([]);
    expect(base.activeWatches).toBe(0);
    expect(await base.get('j/tasks/none')).toBeUndefined();
  });
});

describe('shared watches on a real etcd', () => {
  let etcd: EtcdServer;
  let writer: Coordinator;
  let base: Coordinator;
  let shared: SharedWatchCoordinator;

  beforeAll(async () => {
    etcd = await startEtcd();
    writer = await createEtcdCoordinator(`etcd://${etcd.clientAddress}?namespace=sw`);
    base = await createEtcdCoordinator(`etcd://${etcd.clientAddress}?namespace=sw`);
    shared = shareWatches(base, { shares: (p) => p === 'j/tasks/' });
  }, 60_000);

  afterAll(async () => {
    await shared?.close();
    await writer?.close();
    await etcd?.cleanup();
  });

  it('followers joining at different times each see what their own etcd watch shows', async () => {
    await writer.create('j/tasks/0', bytes('a'));
    const own = follower(writer, 'j/tasks/');
    const early = follower(shared, 'j/tasks/');
    await own.start();
    await early.start();
    const v = await writer.create('j/tasks/1', bytes('b'));
    await eventually('the early follower saw the second key', () => early.state.size === 2);
    const late = follower(shared, 'j/tasks/');
    await late.start();
    await writer.update('j/tasks/1', bytes('c'), v);
    await writer.delete('j/tasks/0', (await writer.get('j/tasks/0'))!.version);
    await eventually('all saw the delete', () => [own, early, late].every((f) => f.seen.at(-1) === 'delete j/tasks/0'));
    expect(early.seen).toEqual(own.seen);
    expect(late.seen).toEqual(['snapshot j/tasks/0=a,j/tasks/1=b', 'put j/tasks/1=c', 'delete j/tasks/0']);
    expect(late.state).toEqual(await storeState(writer, 'j/tasks/'));
    expect(shared.sharing).toMatchObject({ views: 1, followers: 2, ownWatches: 0 });
    // A listed revision replays exactly what etcd's own watch from it delivers.
    const stop = new AbortController();
    const listed = await shared.list('j/tasks/');
    await writer.create('j/tasks/2', bytes('d'));
    await eventually('the view has the new key', () => early.state.size === 2);
    const fromShared = batchesOf(shared.watch('j/tasks/', { after: listed.revision, signal: stop.signal }), 2);
    const fromEtcd = batchesOf(writer.watch('j/tasks/', { after: listed.revision, signal: stop.signal }), 2);
    await writer.create('j/tasks/3', bytes('e'));
    expect(await fromShared).toEqual(await fromEtcd);
    stop.abort();
    for (const f of [own, early, late]) await f.stop();
    await eventually('the view stopped with its last follower', () => shared.sharing.views === 0);
  }, 60_000);
});
