/** watch: ordered, gap-free from a list or a batch, compaction, and a clean end. */
import assert from 'node:assert/strict';
import type { Coordinator, WatchBatch } from '@taskgraph/api';
import type { DefineTest, TestContext } from './context.js';
import { eventually } from '../eventually.js';
import {
  activeHandleCount,
  applyEvents,
  assertCode,
  bytes,
  consumeWatch,
  describeState,
  sameState,
  stateOf,
  text,
} from './util.js';
import type { KeyState, WatchLog } from './util.js';

/** Waits until replaying `log` over `start` gives exactly what `list(prefix)` gives now. */
async function converges(t: TestContext, c: Coordinator, prefix: string, start: KeyState, logs: readonly WatchLog[]): Promise<KeyState> {
  let final: KeyState = new Map();
  let replayed: KeyState = new Map();
  try {
    await eventually('the watch replayed over the snapshot equals the final list', async () => {
      final = stateOf((await c.list(prefix)).entries);
      replayed = new Map(start);
      for (const log of logs) applyEvents(replayed, log.events);
      return sameState(final, replayed);
    }, t.settings.patience);
  } catch (err) {
    throw new assert.AssertionError({
      message: `${(err as Error).message}\n  final:    ${describeState(final)}\n  replayed: ${describeState(replayed)}`,
    });
  }
  return final;
}

/** For backends with history: every write's version is delivered exactly once. */
function assertEveryWriteOnce(puts: ReadonlyMap<string, string>, logs: readonly WatchLog[], deletes: number): void {
  const seen = new Map<string, number>();
  let deleteEvents = 0;
  for (const log of logs) {
    for (const e of log.events) {
      if (e.type === 'delete') {
        deleteEvents++;
        continue;
      }
      const id = `${e.key}@${e.version}`;
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
  }
  for (const [id, key] of puts) {
    assert.equal(seen.get(id), 1, `the write ${id} of ${key} was delivered ${seen.get(id) ?? 0} times, not once`);
  }
  assert.equal(seen.size, puts.size, 'no put was delivered that was not written');
  assert.equal(deleteEvents, deletes, 'every delete was delivered once');
}

function assertDistinctRevisions(batches: readonly WatchBatch[]): void {
  const revisions = batches.map((b) => b.revision);
  for (const r of revisions) assert.equal(typeof r, 'string');
  assert.equal(new Set(revisions).size, revisions.length, `one batch per revision, got ${JSON.stringify(revisions)}`);
}

export function watchTests(test: DefineTest, hasCompact: boolean): void {
  // Backends that declare caps.watchCoalesces keep no history: for them these tests check final states only.
  const historyNote = ' (final state only if caps.watchCoalesces)';

  test(`watch after a list's revision delivers puts, updates and deletes in order with the writes' versions${historyNote}`, async (t) => {
    const c = await t.client();
    const coalesces = c.caps.watchCoalesces;
    await c.create('w/pre', bytes('pre'));
    const start = await c.list('w/');
    const log = consumeWatch(t, c, 'w/', start.revision);
    const v1 = await c.create('w/a', bytes('1'));
    const v2 = await c.update('w/a', bytes('2'), v1);
    await c.delete('w/a', v2);
    await c.create('x/outside', bytes('not under the prefix'));
    const v3 = await c.create('w/b', bytes('3'));
    const pre = await c.get('w/pre');
    const v4 = await c.update('w/pre', bytes('pre2'), pre?.version ?? '');
    if (coalesces) {
      await converges(t, c, 'w/', stateOf(start.entries), [log]);
      return;
    }
    await eventually('the watch saw all five changes', () => log.events.length >= 5, t.settings.patience);
    assert.deepEqual(
      log.events.map((e) => (e.type === 'put' ? ['put', e.key, text(e.value), e.version] : ['delete', e.key])),
      [
        ['put', 'w/a', '1', v1],
        ['put', 'w/a', '2', v2],
        ['delete', 'w/a'],
        ['put', 'w/b', '3', v3],
        ['put', 'w/pre', 'pre2', v4],
      ],
    );
    assertDistinctRevisions(log.batches);
  });

  test('watch without `after` delivers the writes made after it started', async (t) => {
    const c = await t.client();
    const log = consumeWatch(t, c, 'now/');
    // A watch is established asynchronously on remote backends: write until one is seen.
    let i = 0;
    await eventually('the watch delivered a write made after it started', async () => {
      await c.create(`now/${i++}`, bytes('x'));
      return log.events.length > 0;
    }, t.settings.patience);
    const first = log.events[0];
    assert.equal(first?.type, 'put');
    const v = await c.create('now/last', bytes('last'));
    await eventually('the watch delivered the last write', () =>
      log.events.some((e) => e.type === 'put' && e.key === 'now/last' && e.version === v), t.settings.patience);
  });

  test(`a watch after list's revision misses nothing while two clients write concurrently${historyNote}`, async (t) => {
    const watcher = await t.client();
    const coalesces = watcher.caps.watchCoalesces;
    const writers = [await t.client(), await t.client()];
    const n = t.settings.concurrency;
    for (let i = 0; i < 4; i++) await (writers[0] as Coordinator).create(`cw/pre/${i}`, bytes(`pre-${i}`));
    const start = await watcher.list('cw/');
    const log = consumeWatch(t, watcher, 'cw/', start.revision);
    const puts = new Map<string, string>();
    let deletes = 0;
    const record = (key: string, version: string): string => {
      puts.set(`${key}@${version}`, key);
      return version;
    };
    await Promise.all([
      ...Array.from({ length: n }, async (_, i) => {
        const w = writers[i % 2] as Coordinator;
        const key = `cw/k/${String(i).padStart(3, '0')}`;
        let v = record(key, await w.create(key, bytes(`c${i}`)));
        v = record(key, await w.update(key, bytes(`u${i}`), v));
        if (i % 3 === 0) {
          await w.delete(key, v);
          deletes++;
        } else if (i % 3 === 1) {
          record(key, await w.update(key, bytes(`uu${i}`), v));
        }
      }),
      ...Array.from({ length: 4 }, async (_, i) => {
        const w = writers[(i + 1) % 2] as Coordinator;
        const key = `cw/pre/${i}`;
        const e = start.entries.find((x) => x.key === key);
        if (i % 2 === 0) {
          record(key, await w.update(key, bytes(`pre-${i}-new`), e?.version ?? ''));
        } else {
          await w.delete(key, e?.version ?? '');
          deletes++;
        }
      }),
    ]);
    await converges(t, watcher, 'cw/', stateOf(start.entries), [log]);
    if (!coalesces) {
      assertEveryWriteOnce(puts, [log], deletes);
      assertDistinctRevisions(log.batches);
    }
  });

  test(`resuming a watch after a batch's revision misses nothing${historyNote}`, async (t) => {
    const c = await t.client();
    const coalesces = c.caps.watchCoalesces;
    const writer = await t.client();
    const start = await c.list('rs/');
    const puts = new Map<string, string>();
    let deletes = 0;
    const versions = new Map<string, string>();
    const write = async (key: string, value: string): Promise<void> => {
      const old = versions.get(key);
      const v = old === undefined ? await writer.create(key, bytes(value)) : await writer.update(key, bytes(value), old);
      versions.set(key, v);
      puts.set(`${key}@${v}`, key);
    };
    for (let i = 0; i < 10; i++) await write(`rs/${i}`, `first-${i}`);
    // First watch: take batches until five events arrived, then stop consuming.
    const first = t.controller();
    const firstEvents: WatchLog['events'] = [];
    let resumeAfter: string | undefined;
    for await (const batch of c.watch('rs/', { after: start.revision, signal: first.signal })) {
      firstEvents.push(...batch.events);
      resumeAfter = batch.revision;
      if (firstEvents.length >= 5) break;
    }
    first.abort();
    assert.ok(resumeAfter !== undefined, 'the first watch delivered a batch');
    // More writes while nobody watches, some concurrent.
    await Promise.all([
      ...Array.from({ length: 6 }, (_, i) => write(`rs/new/${i}`, `new-${i}`)),
      write('rs/0', 'changed'),
      (async () => {
        const key = 'rs/1';
        const v = versions.get(key);
        await writer.delete(key, v ?? '');
        versions.delete(key);
        deletes++;
      })(),
    ]);
    const second = consumeWatch(t, c, 'rs/', resumeAfter);
    const firstLog: WatchLog = {
      batches: [],
      events: firstEvents,
      ended: Promise.resolve(undefined),
      controller: first,
      finished: () => true,
    };
    await converges(t, c, 'rs/', stateOf(start.entries), [firstLog, second]);
    if (!coalesces) assertEveryWriteOnce(puts, [firstLog, second], deletes);
  });

  if (hasCompact) {
    test('a watch resuming from a compacted revision throws CompactedError; re-listing and watching on works', async (t) => {
      const c = await t.client();
      let v = await c.create('cp/k', bytes('0'));
      const start = await c.list('cp/');
      for (let i = 1; i <= 5; i++) v = await c.update('cp/k', bytes(String(i)), v);
      await t.options.compact?.(c);
      const stale = consumeWatch(t, c, 'cp/', start.revision);
      await eventually('the watch from a compacted revision ended', () => stale.finished(), t.settings.patience);
      assert.deepEqual(stale.batches, [], 'no batch from a compacted revision');
      assertCode(await stale.ended, 'COMPACTED', 'watch from a compacted revision');
      const again = await c.list('cp/');
      assert.equal(text(again.entries[0]?.value ?? bytes('')), '5');
      const log = consumeWatch(t, c, 'cp/', again.revision);
      const v2 = await c.update('cp/k', bytes('6'), v);
      await eventually('the new watch delivers the next write', () =>
        log.events.some((e) => e.type === 'put' && e.version === v2), t.settings.patience);
      assert.equal(log.events.length, 1, 'nothing before the re-listed revision is delivered again');
    });
  } else {
    test('resuming from an old revision delivers every key\'s final state (no compact hook: checked through caps.watchCoalesces)', async (t) => {
      const c = await t.client();
      await c.create('co/gone', bytes('x'));
      const start = await c.list('co/');
      let v = await c.create('co/k', bytes('0'));
      for (let i = 1; i <= 10; i++) v = await c.update('co/k', bytes(String(i)), v);
      const tmp = await c.create('co/tmp', bytes('short-lived'));
      await c.delete('co/tmp', tmp);
      await c.create('co/new', bytes('new'));
      const gone = await c.get('co/gone');
      await c.delete('co/gone', gone?.version ?? '');
      const log = consumeWatch(t, c, 'co/', start.revision);
      const startState = stateOf(start.entries);
      let converged = false;
      await eventually('the watch from an old revision converges on the final list, or ends', async () => {
        const replayed = new Map(startState);
        applyEvents(replayed, log.events);
        converged = sameState(stateOf((await c.list('co/')).entries), replayed);
        return converged || log.finished();
      }, t.settings.patience);
      if (!converged) {
        // The contract allows CompactedError instead: then re-listing and watching on must converge.
        assertCode(await log.ended, 'COMPACTED', 'a watch from an old revision either converges or throws CompactedError');
        const again = await c.list('co/');
        const log2 = consumeWatch(t, c, 'co/', again.revision);
        await c.create('co/after', bytes('after'));
        await converges(t, c, 'co/', stateOf(again.entries), [log2]);
      }
    });
  }

  test('aborting the signal ends a pending watch iterator without error', async (t) => {
    const c = await t.client();
    const controller = t.controller();
    const it = c.watch('ab/', { signal: controller.signal })[Symbol.asyncIterator]();
    let settled: IteratorResult<WatchBatch> | undefined;
    let failed: unknown;
    const pending = it.next().then(
      (r) => (settled = r),
      (err: unknown) => (failed = err),
    );
    t.track(pending);
    controller.abort();
    await eventually('the pending next() settles after abort', () => settled !== undefined || failed !== undefined, t.settings.patience);
    assert.equal(failed, undefined, `the iterator ended with an error: ${String(failed)}`);
    assert.equal(settled?.done, true, 'the iterator is done');
    assert.equal((await it.next()).done, true, 'and stays done');
  });

  test('stopped watches leave no open handles behind: rounds of five watches add none', async (t) => {
    const c = await t.client();
    const round = async (): Promise<void> => {
      const controller = new AbortController();
      const iterators = Array.from({ length: 5 }, () => c.watch('h/', { signal: controller.signal })[Symbol.asyncIterator]());
      const firsts = iterators.map((it) => it.next());
      await c.create(`h/${Math.random().toString(36).slice(2)}`, bytes('x'));
      controller.abort();
      const results = await Promise.all(firsts);
      for (const [i, r] of results.entries()) {
        if (!r.done) {
          // A batch that was already on its way may arrive; the next call must then end.
          const after = await (iterators[i] as AsyncIterator<WatchBatch>).next();
          assert.equal(after.done, true, 'an aborted watch ends after at most the batch in flight');
        }
      }
    };
    // A first round may set up what the client keeps for its lifetime (a stream, pooled connections): measure after it.
    await round();
    const baseline = await eventually('the handle count settles', async () => {
      const a = activeHandleCount();
      await new Promise((r) => setImmediate(r));
      return activeHandleCount() === a ? { n: a } : undefined;
    }, t.settings.patience);
    for (let i = 0; i < 3; i++) await round();
    await eventually(
      `the open handles drop back to ${baseline.n} (now ${activeHandleCount()}: ${process.getActiveResourcesInfo().join(', ')})`,
      () => activeHandleCount() <= baseline.n,
      t.settings.patience,
    );
  });

  test('a watch whose signal is aborted before iterating ends at once', async (t) => {
    const c = await t.client();
    await c.create('pre/a', bytes('a'));
    const controller = new AbortController();
    controller.abort();
    const batches: WatchBatch[] = [];
    for await (const b of c.watch('pre/', { signal: controller.signal, after: (await c.list('pre/')).revision })) batches.push(b);
    assert.deepEqual(batches, []);
  });

  test('breaking out of a for-await ends the watch; the client stays usable', async (t) => {
    const c = await t.client();
    const controller = t.controller();
    const start = await c.list('br/');
    await c.create('br/a', bytes('a'));
    let seen = 0;
    for await (const batch of c.watch('br/', { after: start.revision, signal: controller.signal })) {
      seen += batch.events.length;
      break;
    }
    assert.ok(seen >= 1);
    await c.create('br/b', bytes('b'));
    assert.deepEqual(
      (await c.list('br/')).entries.map((e) => e.key),
      ['br/a', 'br/b'],
    );
  });

  test('a watch delivers only keys under its prefix, and never locks', async (t) => {
    const c = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    const start = await c.list('wp/');
    const log = consumeWatch(t, c, 'wp/', start.revision);
    await c.create('wp2/x', bytes('x'));
    await c.create('w/x', bytes('x'));
    await c.create('x/wp/x', bytes('x'));
    const lock = await c.acquire('wp/lock', s);
    const other = await c.tryAcquire('wp/lock2', s);
    assert.ok(other, 'a free lock is taken');
    await c.create('wp/last', bytes('last'));
    await eventually('the watch saw wp/last', () => log.events.some((e) => e.key === 'wp/last'), t.settings.patience);
    await lock.release();
    await other.release();
    await c.create('wp/end', bytes('end'));
    await eventually('the watch saw wp/end', () => log.events.some((e) => e.key === 'wp/end'), t.settings.patience);
    assert.deepEqual(
      log.events.map((e) => e.key),
      ['wp/last', 'wp/end'],
    );
    assert.deepEqual(
      (await c.list('wp/')).entries.map((e) => e.key),
      ['wp/end', 'wp/last'],
    );
  });

  test('a watch sees the deletes of ephemeral keys when their session closes', async (t) => {
    const c = await t.client();
    const s = await c.openSession({ ttlMs: t.options.sessionTtlMs });
    const start = await c.list('we/');
    const log = consumeWatch(t, c, 'we/', start.revision);
    await c.create('we/a', bytes('a'), { session: s });
    await c.create('we/b', bytes('b'), { session: s });
    await c.create('we/stays', bytes('c'));
    await s.close();
    await eventually('the watch saw both ephemeral keys deleted', () => {
      const deleted = new Set(log.events.filter((e) => e.type === 'delete').map((e) => e.key));
      return deleted.has('we/a') && deleted.has('we/b');
    }, t.settings.patience);
    assert.ok(!log.events.some((e) => e.type === 'delete' && e.key === 'we/stays'));
    await converges(t, c, 'we/', stateOf(start.entries), [log]);
  });
}
