// The watch against the faults a real API server and @kubernetes/client-node show:
// 410 Expired, streams closed early or reset, a partial last line, lines lost
// silently, and silent connections.
import { TaskGraphError, type Coordinator, type WatchBatch, type WatchEvent } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { createK8sCoordinator } from '../src/index.js';
import { k8sFixture, patience, TEST_OPTIONS } from './helpers.js';

// Bookmarks only when a test sends them: resume points then move only as the test says.
const { h, client } = k8sFixture({ bookmarkIntervalMs: 600_000 });
let n = 0;

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

interface Log {
  batches: WatchBatch[];
  events: WatchEvent[];
  ended: Promise<unknown>;
  finished: () => boolean;
  stop: () => void;
}

function consume(c: Coordinator, prefix: string, after?: string): Log {
  const controller = new AbortController();
  const batches: WatchBatch[] = [];
  const events: WatchEvent[] = [];
  let done = false;
  const ended = (async () => {
    try {
      for await (const b of c.watch(prefix, after === undefined ? { signal: controller.signal } : { signal: controller.signal, after })) {
        batches.push(b);
        events.push(...b.events);
      }
      return undefined;
    } catch (err) {
      return err;
    } finally {
      done = true;
    }
  })();
  return { batches, events, ended, finished: () => done, stop: () => controller.abort() };
}

const describeEvents = (events: readonly WatchEvent[]) => events.map((e) => (e.type === 'put' ? `put ${e.key}=${text(e.value)}` : `delete ${e.key}`));

function prefix(): string {
  return `w${++n}`;
}

describe('410 Expired', () => {
  it('a watch from a compacted revision throws CompactedError before any batch', async () => {
    const c = await client(prefix());
    await c.create('a/1', bytes('1'));
    const start = await c.list('a/');
    await c.create('a/2', bytes('2'));
    h.emulator.compact();
    const log = consume(c, 'a/', start.revision);
    const err = await log.ended;
    expect(TaskGraphError.is(err, 'COMPACTED')).toBe(true);
    expect(log.batches).toEqual([]);
  });

  it('a watch that falls behind the retained history while reconnecting throws CompactedError', async () => {
    const c = await client(prefix());
    const other = await client(prefix());
    const start = await c.list('k/');
    const log = consume(c, 'k/', start.revision);
    await c.create('k/1', bytes('1'));
    await eventually('the first event', () => log.events.length === 1, patience);
    // The store moves on where this watch does not look, the history is compacted, and the
    // stream ends: the reconnect asks for a revision that is gone.
    await other.create('elsewhere', bytes('x'));
    h.emulator.compact();
    h.emulator.faults.closeWatches();
    const err = await log.ended;
    expect(TaskGraphError.is(err, 'COMPACTED')).toBe(true);
    expect(describeEvents(log.events)).toEqual(['put k/1=1']);
  });
});

describe('streams that end early', () => {
  it('resumes from the last revision seen when the server closes or resets streams: nothing lost, nothing twice', async () => {
    const c = await client(prefix());
    const writer = await client(c.prefix);
    const start = await c.list('s/');
    const log = consume(c, 's/', start.revision);
    const expected: string[] = [];
    for (let i = 0; i < 30; i++) {
      await writer.create(`s/${i}`, bytes(String(i)));
      expected.push(`put s/${i}=${i}`);
      if (i % 5 === 2) h.emulator.faults.closeWatches();
      if (i % 7 === 3) h.emulator.faults.resetWatches();
    }
    await eventually('every write was delivered', () => log.events.length >= expected.length, patience);
    expect(describeEvents(log.events)).toEqual(expected);
    expect(new Set(log.batches.map((b) => b.revision)).size).toBe(log.batches.length);
    log.stop();
    expect(await log.ended).toBeUndefined();
  });

  it('gets a partial last line again: the line cut by a dropped connection is delivered after the resume', async () => {
    const c = await client(prefix());
    const start = await c.list('t/');
    const log = consume(c, 't/', start.revision);
    await c.create('t/before', bytes('x'));
    await eventually('the first event', () => log.events.length === 1, patience);
    h.emulator.faults.truncateNextWatchLine();
    await c.create('t/cut', bytes('y'));
    await c.create('t/after', bytes('z'));
    await eventually('three events', () => log.events.length >= 3, patience);
    expect(describeEvents(log.events)).toEqual(['put t/before=x', 'put t/cut=y', 'put t/after=z']);
  });

  it('bookmarks advance the resume point past history that is compacted meanwhile', async () => {
    const c = await client(prefix());
    const other = await client(prefix());
    const start = await c.list('b/');
    const log = consume(c, 'b/', start.revision);
    await c.create('b/1', bytes('1'));
    await eventually('the first event', () => log.events.length === 1, patience);
    // As in the previous test, but a bookmark reaches the stream before it ends: the server
    // writes it first, so the client has read it when it sees the end.
    await other.create('elsewhere', bytes('x'));
    h.emulator.sendBookmarks();
    h.emulator.compact();
    h.emulator.faults.closeWatches();
    await c.create('b/2', bytes('2'));
    await eventually('the second event', () => log.events.length === 2 || log.finished(), patience);
    expect(describeEvents(log.events)).toEqual(['put b/1=1', 'put b/2=2']);
    expect(log.finished()).toBe(false);
  });

  it('replaces a connection that went silent (a partition) and catches up after it heals', async () => {
    const c = await client(prefix(), { watchIdleTimeoutMs: 1500 });
    const writer = await client(c.prefix);
    const start = await c.list('p/');
    const log = consume(c, 'p/', start.revision);
    await writer.create('p/1', bytes('1'));
    await eventually('the first event', () => log.events.length === 1, patience);
    const proxy = h.proxyOf(c);
    proxy.cut();
    const before = proxy.connections;
    await writer.create('p/2', bytes('2'));
    await writer.create('p/3', bytes('3'));
    // The idle timer gives up on the silent connection and tries a new one (which hangs too).
    await eventually('a new connection was tried', () => proxy.connections > before, patience);
    proxy.heal();
    await eventually('the writes made during the partition', () => log.events.length >= 3, patience);
    expect(describeEvents(log.events)).toEqual(['put p/1=1', 'put p/2=2', 'put p/3=3']);
  });
});

describe('a long partition', () => {
  /**
   * A proxy that, once cut, forwards nothing and answers nothing, but keeps reading
   * (unlike a paused socket, it notices when the client closes a connection): the
   * number of connections it holds open is the number the client left open.
   */
  async function blackholeProxy(target: number) {
    const held = new Set<Socket>();
    let cut = false;
    const server = createServer((client) => {
      held.add(client);
      client.on('close', () => held.delete(client));
      client.on('error', () => client.destroy());
      if (cut) {
        client.on('data', () => undefined);
        return;
      }
      const upstream = connect(target, '127.0.0.1');
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.on('data', (d: Buffer) => {
        if (!cut) upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        if (!cut) client.write(d);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      port: (server.address() as AddressInfo).port,
      open: () => held.size,
      cut: () => (cut = true),
      close: async () => {
        for (const s of held) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  it('keeps one connection per watch however often it gives up on a silent one', async () => {
    const silences: string[] = [];
    const logger = {
      debug: (message: string) => {
        if (message.includes('silent')) silences.push(message);
      },
      info: () => undefined,
      warn: () => undefined,
      error: () => undefined,
      child: () => logger,
    };
    const proxy = await blackholeProxy(h.emulator.port);
    const c = await createK8sCoordinator({
      ...TEST_OPTIONS,
      kubeconfigPath: await h.kubeconfig(h.serverAt(proxy.port)),
      prefix: prefix(),
      watchIdleTimeoutMs: 200,
      logger,
    });
    try {
      const start = await c.list('q/');
      const log = consume(c, 'q/', start.revision);
      await c.create('q/1', bytes('1'));
      await eventually('the first event', () => log.events.length === 1, patience);
      proxy.cut();
      // Every give-up tries a new connection, which hangs too; the one it replaces must be closed.
      await eventually('several silent connections were given up', () => silences.length >= 8, patience);
      // The key watch and the Lease observer: one connection each, and maybe one closing.
      expect(proxy.open()).toBeLessThanOrEqual(4);
      log.stop();
      expect(await log.ended).toBeUndefined();
    } finally {
      await c.close();
      await proxy.close();
    }
  });
});

describe('an unavailable API server', () => {
  it('a watch started while the server answers 503 retries inside and then delivers', async () => {
    const c = await client(prefix());
    const writer = await client(c.prefix);
    const start = await c.list('u/');
    h.emulator.faults.setUnavailable(true);
    const lists = h.emulator.verbsUsed().get('configmaps:list') ?? 0;
    const log = consume(c, 'u/', start.revision);
    await eventually('the watch tried twice and was refused', () => (h.emulator.verbsUsed().get('configmaps:list') ?? 0) >= lists + 2, patience);
    h.emulator.faults.setUnavailable(false);
    await writer.create('u/1', bytes('1'));
    await eventually('the write is delivered', () => log.events.length === 1 || log.finished(), patience);
    expect(describeEvents(log.events)).toEqual(['put u/1=1']);
  });
});

describe('lines lost silently', () => {
  it('detects a lost line when the key changes again, and resumes transparently when nothing was delivered past it', async () => {
    const c = await client(prefix());
    const writer = await client(c.prefix);
    let v = await writer.create('d/k', bytes('0'));
    const start = await c.list('d/');
    const log = consume(c, 'd/', start.revision);
    v = await writer.update('d/k', bytes('1'), v);
    await eventually('the first update', () => log.events.length === 1, patience);
    // @kubernetes/client-node skips a line it cannot parse without a word.
    h.emulator.faults.dropWatchLines(1, 'garble');
    v = await writer.update('d/k', bytes('2'), v);
    await writer.update('d/k', bytes('3'), v);
    await eventually('every update', () => log.events.length >= 3, patience);
    expect(describeEvents(log.events)).toEqual(['put d/k=1', 'put d/k=2', 'put d/k=3']);
    expect(log.finished()).toBe(false);
  });

  it('throws CompactedError when a lost line lies behind changes already delivered; re-listing converges', async () => {
    const c = await client(prefix());
    const writer = await client(c.prefix);
    const va = await writer.create('e/a', bytes('a0'));
    const start = await c.list('e/');
    const log = consume(c, 'e/', start.revision);
    h.emulator.faults.dropWatchLines(1, 'omit');
    const va1 = await writer.update('e/a', bytes('a1'), va);
    await writer.create('e/b', bytes('b0'));
    await eventually('e/b was delivered', () => log.events.length === 1, patience);
    // The next change of e/a shows its chain broke, behind the delivered e/b.
    await writer.update('e/a', bytes('a2'), va1);
    const err = await log.ended;
    expect(TaskGraphError.is(err, 'COMPACTED')).toBe(true);
    expect((err as Error).message).toMatch(/lost a change/);
    const again = await c.list('e/');
    expect(again.entries.map((e) => `${e.key}=${text(e.value)}`)).toEqual(['e/a=a2', 'e/b=b0']);
  });

  it('an audit finds a lost last change that no later change would reveal', async () => {
    const c = await client(prefix(), { watchAuditIntervalMs: 500 });
    const writer = await client(c.prefix);
    const start = await c.list('f/');
    const log = consume(c, 'f/', start.revision);
    await writer.create('f/1', bytes('1'));
    await eventually('the first create', () => log.events.length === 1, patience);
    h.emulator.faults.dropWatchLines(1, 'omit');
    await writer.create('f/2', bytes('2'));
    // A bookmark tells the watch the store is past f/2 (real servers send one about every minute).
    h.emulator.sendBookmarks();
    const err = await log.ended;
    expect(TaskGraphError.is(err, 'COMPACTED')).toBe(true);
    expect((err as Error).message).toMatch(/state different from the server/);
  });

  it('accepts a change written by another tool (no version chain) after checking nothing was lost', async () => {
    const c = await client(prefix());
    const v = await c.create('g/k', bytes('1'));
    const start = await c.list('g/');
    const log = consume(c, 'g/', start.revision);
    // A ConfigMap edited with kubectl keeps the old chain annotation.
    const { call } = await import('./raw.js');
    const name = (await call(h, 'GET', `/api/v1/namespaces/default/configmaps?labelSelector=taskgraph.io/store%3D${c.prefix}`)) as { items: { metadata: { name: string } }[] };
    const objectName = name.items[0]?.metadata.name ?? '';
    await call(h, 'PATCH', `/api/v1/namespaces/default/configmaps/${objectName}`, { binaryData: { value: Buffer.from('edited').toString('base64') } }, 'application/merge-patch+json');
    await c.update('g/k', bytes('3'), (await c.get('g/k'))?.version ?? v);
    await eventually('both changes', () => log.events.length >= 2, patience);
    expect(describeEvents(log.events)).toEqual(['put g/k=edited', 'put g/k=3']);
  });
});
