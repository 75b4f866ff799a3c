// Sessions as Leases: expiry judged by local observation (never by the Lease's own
// timestamps), janitors removing expired sessions' keys and locks, and the owner's view.
import { keyObjectName, LABEL, type K8sSession } from '../src/index.js';
import { dutyRank, JANITORS_ACTING } from '../src/observer.js';
import { countHandles, eventually, leakedHandles } from '@taskgraph/testkit';
import { TaskGraphError } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { call } from './raw.js';
import { k8sFixture, patience } from './helpers.js';

const { h, client } = k8sFixture();
let n = 0;

const bytes = (s: string) => new TextEncoder().encode(s);
const prefix = () => `s${++n}`;
const LEASES = '/apis/coordination.k8s.io/v1/namespaces/default/leases';
const CONFIGMAPS = '/api/v1/namespaces/default/configmaps';

describe('the session Lease', () => {
  it('is a Lease holding the session id, with the TTL in whole seconds, renewed by compare-and-set', async () => {
    const c = await client(prefix());
    const s = (await c.openSession({ ttlMs: 1500 })) as K8sSession;
    expect(s.ttlMs).toBe(2000);
    const first = (await call(h, 'GET', `${LEASES}/${s.leaseName}`)) as { metadata: { resourceVersion: string; labels: Record<string, string> }; spec: Record<string, unknown> };
    expect(first.spec).toMatchObject({ holderIdentity: s.id, leaseDurationSeconds: 2, leaseTransitions: 0 });
    expect(String(first.spec['renewTime'])).toMatch(/\.\d{6}Z$/);
    expect(first.metadata.labels).toEqual({ [LABEL.janitor]: 'true', [LABEL.store]: c.prefix, [LABEL.kind]: 'session' });
    await eventually('a renewal', async () => {
      const now = (await call(h, 'GET', `${LEASES}/${s.leaseName}`)) as { metadata: { resourceVersion: string } };
      return now.metadata.resourceVersion !== first.metadata.resourceVersion;
    }, patience);
    expect(s.isLost()).toBe(false);
  });

  it('ties ephemeral keys to it with a label and an owner reference (for the garbage collector of a real cluster)', async () => {
    const c = await client(prefix());
    const s = (await c.openSession({ ttlMs: 2000 })) as K8sSession;
    await c.create('e/k', bytes('v'), { session: s });
    const list = (await call(h, 'GET', `${CONFIGMAPS}?labelSelector=${encodeURIComponent(`${LABEL.session}=${s.id}`)}`)) as {
      items: { metadata: { ownerReferences: unknown[] } }[];
    };
    expect(list.items).toHaveLength(1);
    expect(list.items[0]?.metadata.ownerReferences).toEqual([{ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', name: s.leaseName, uid: s.leaseUid }]);
  });

  it('is lost when a renewal finds the Lease taken by another holder', async () => {
    const c = await client(prefix());
    const s = (await c.openSession({ ttlMs: 3000 })) as K8sSession;
    const lease = (await call(h, 'GET', `${LEASES}/${s.leaseName}`)) as { spec: Record<string, unknown> };
    await call(h, 'PUT', `${LEASES}/${s.leaseName}`, { ...lease, spec: { ...lease.spec, holderIdentity: 'someone-else' } });
    await eventually('the session is lost', () => s.lost.aborted, patience);
    expect(TaskGraphError.is(s.lost.reason, 'LEASE_LOST')).toBe(true);
    expect((s.lost.reason as Error).message).toMatch(/deleted or taken over/);
  });

  it('survives someone else touching the Lease (a label): the renewal retries on their version', async () => {
    const c = await client(prefix());
    const s = (await c.openSession({ ttlMs: 2000 })) as K8sSession;
    await call(h, 'PATCH', `${LEASES}/${s.leaseName}`, { metadata: { labels: { touched: 'yes' } } }, 'application/merge-patch+json');
    const touched = (await call(h, 'GET', `${LEASES}/${s.leaseName}`)) as { metadata: { resourceVersion: string } };
    await eventually('a renewal on top of the touch', async () => {
      const now = (await call(h, 'GET', `${LEASES}/${s.leaseName}`)) as { metadata: { resourceVersion: string } };
      return now.metadata.resourceVersion !== touched.metadata.resourceVersion;
    }, patience);
    expect(s.isLost()).toBe(false);
  });
});

describe('expiry by local observation', () => {
  it('a partitioned owner loses its session by its own deadline first; a janitor then removes its keys and Lease', async () => {
    const p = prefix();
    const owner = await client(p);
    const janitor = await client(p);
    const s = (await owner.openSession({ ttlMs: 2000 })) as K8sSession;
    await owner.create('eph/a', bytes('a'), { session: s });
    await owner.create('plain', bytes('p'));
    let ownerLostWhenRemoved: boolean | undefined;
    const start = await janitor.list('eph/');
    const controller = new AbortController();
    const watched = (async () => {
      for await (const b of janitor.watch('eph/', { after: start.revision, signal: controller.signal })) {
        if (b.events.some((e) => e.type === 'delete')) {
          ownerLostWhenRemoved = s.isLost();
          return;
        }
      }
    })();
    h.proxyOf(owner).cut();
    await watched;
    controller.abort();
    // The safety property: nobody removed the session while its owner still trusted it.
    expect(ownerLostWhenRemoved).toBe(true);
    expect(TaskGraphError.is(s.lost.reason, 'LEASE_LOST')).toBe(true);
    await eventually('the Lease is gone', async () => {
      const list = (await call(h, 'GET', `${LEASES}?labelSelector=${encodeURIComponent(`${LABEL.store}=${p},${LABEL.kind}=session`)}`)) as { items: unknown[] };
      return list.items.length === 0;
    }, patience);
    expect(await janitor.get('plain')).toBeDefined();
    h.proxyOf(owner).heal();
  });

  it("judges by when it saw a Lease change, never by the Lease's renewTime: a future renewTime does not keep it alive", async () => {
    const p = prefix();
    const janitor = await client(p);
    // A session Lease written by a process with a clock far ahead, then abandoned.
    const id = 'f'.repeat(20);
    await call(h, 'POST', LEASES, {
      metadata: { name: `${p}-s-${id}`, labels: { [LABEL.store]: p, [LABEL.kind]: 'session' } },
      spec: { holderIdentity: id, leaseDurationSeconds: 1, renewTime: '2100-01-01T00:00:00.000000Z' },
    });
    await call(h, 'POST', CONFIGMAPS, {
      metadata: {
        name: keyObjectName(p, 'abandoned'),
        labels: { [LABEL.store]: p, [LABEL.kind]: 'key', [LABEL.session]: id },
        annotations: { 'taskgraph.io/key': 'abandoned' },
      },
      binaryData: { value: '' },
    });
    expect(await janitor.get('abandoned')).toBeDefined();
    await eventually('the abandoned session and its key are removed', async () => (await janitor.get('abandoned')) === undefined, patience);
    await eventually('its Lease is removed', async () => {
      const list = (await call(h, 'GET', `${LEASES}?labelSelector=${encodeURIComponent(`${LABEL.store}=${p}`)}`)) as { items: unknown[] };
      return list.items.length === 0;
    }, patience);
  });

  it("and a Lease that keeps changing stays alive, however old its renewTime reads", async () => {
    const p = prefix();
    const janitor = await client(p);
    const id = 'a'.repeat(20);
    const name = `${p}-s-${id}`;
    await call(h, 'POST', LEASES, {
      metadata: { name, labels: { [LABEL.store]: p, [LABEL.kind]: 'session' } },
      spec: { holderIdentity: id, leaseDurationSeconds: 1, renewTime: '2000-01-01T00:00:00.000000Z' },
    });
    await call(h, 'POST', CONFIGMAPS, {
      metadata: { name: keyObjectName(p, 'kept'), labels: { [LABEL.store]: p, [LABEL.kind]: 'key', [LABEL.session]: id }, annotations: { 'taskgraph.io/key': 'kept' } },
      binaryData: { value: '' },
    });
    // A renewer with a stopped clock: it bumps a counter, never the timestamp, every 300 ms.
    for (let i = 0; i < 12; i++) {
      await call(h, 'PATCH', `${LEASES}/${name}`, { metadata: { annotations: { beat: String(i) } } }, 'application/merge-patch+json');
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await janitor.get('kept')).toBeDefined();
    expect(janitor.caps.expiryFactor).toBe(1);
  });

  it('a client with janitor: false removes nobody', async () => {
    const p = prefix();
    const lazy = await client(p, { janitor: false, janitorSweepIntervalMs: 1000 });
    const id = 'b'.repeat(20);
    await call(h, 'POST', LEASES, {
      metadata: { name: `${p}-s-${id}`, labels: { [LABEL.store]: p, [LABEL.kind]: 'session' } },
      spec: { holderIdentity: id, leaseDurationSeconds: 1 },
    });
    await call(h, 'POST', CONFIGMAPS, {
      metadata: { name: keyObjectName(p, 'x'), labels: { [LABEL.store]: p, [LABEL.kind]: 'key', [LABEL.session]: id }, annotations: { 'taskgraph.io/key': 'x' } },
      binaryData: { value: '' },
    });
    // Three durations and three sweep intervals later the lazy client has removed nothing.
    await new Promise((r) => setTimeout(r, 3500));
    expect(await lazy.get('x')).toBeDefined();
    const active = await client(p, { janitorSweepIntervalMs: 1000 });
    await eventually('an active janitor removes it', async () => (await active.get('x')) === undefined, patience);
  });
});

describe('the janitor sweep', () => {
  it("removes ephemeral keys whose session's Lease no longer exists", async () => {
    const p = prefix();
    const c = await client(p, { janitorSweepIntervalMs: 1000 });
    await call(h, 'POST', CONFIGMAPS, {
      metadata: {
        name: keyObjectName(p, 'left/behind'),
        labels: { [LABEL.store]: p, [LABEL.kind]: 'key', [LABEL.session]: 'c'.repeat(20) },
        annotations: { 'taskgraph.io/key': 'left/behind' },
      },
      binaryData: { value: '' },
    });
    await eventually('the sweep removed the key', async () => (await c.get('left/behind')) === undefined, patience);
  });
});

describe('handles', () => {
  it('a closed coordinator leaves no timers or sockets behind', async () => {
    const baseline = countHandles();
    const c = await h.client(prefix());
    const s = await c.openSession({ ttlMs: 2000 });
    await c.create('h/e', bytes('e'), { session: s });
    const lock = await c.acquire('h/lock', s);
    const controller = new AbortController();
    const watching = (async () => {
      try {
        for await (const _ of c.watch('h/', { signal: controller.signal })) void _;
      } catch (err) {
        // A watch ended by close may say so.
        if (!TaskGraphError.is(err, 'CLOSED')) throw err;
      }
    })();
    await c.create('h/x', bytes('x'));
    expect(lock.token).toBeGreaterThan(0n);
    await c.close();
    await watching;
    await eventually('the handles are released', () => Object.keys(leakedHandles(baseline)).length === 0, { timeoutMs: 10_000 });
  });
});

describe('janitor duty', () => {
  it('ranks the janitors in a different order for each vanished session; exactly the first two act', () => {
    const janitors = Array.from({ length: 12 }, (_, i) => `${i}`.padStart(20, '0'));
    const firsts = new Set<string>();
    for (let t = 0; t < 50; t++) {
      const target = `${t}`.padStart(20, 'f');
      const ranks = janitors.map((j) => dutyRank(target, [j], janitors));
      expect([...ranks].sort((a, b) => a - b)).toEqual(janitors.map((_, i) => i));
      expect(ranks.filter((r) => r < JANITORS_ACTING)).toHaveLength(JANITORS_ACTING);
      firsts.add(janitors[ranks.indexOf(0)] ?? '');
      // A client counts by its best session; one without a janitor session ranks last.
      expect(dutyRank(target, janitors.slice(0, 2), janitors)).toBe(Math.min(...ranks.slice(0, 2)));
      expect(dutyRank(target, ['x'.repeat(20)], janitors)).toBe(janitors.length);
      expect(dutyRank(janitors[0] ?? '', [janitors[0] ?? ''], janitors)).toBe(janitors.length - 1);
    }
    expect(firsts.size).toBeGreaterThan(6);
  });

  it("a session's Lease deleted behind its partitioned owner: its key is removed, and only the first two janitors of eight list for it", async () => {
    const p = prefix();
    const quiet = { janitorSweepIntervalMs: 600_000 };
    const before = (verb: string) => h.emulator.verbsUsed().get(verb) ?? 0;
    const lists0 = before('configmaps:list');
    const janitors = await Promise.all(Array.from({ length: 8 }, () => client(p, quiet)));
    for (const j of janitors) await j.openSession({ ttlMs: 10_000 });
    const owner = await client(p, quiet);
    const s = (await owner.openSession({ ttlMs: 10_000 })) as K8sSession;
    await owner.create('eph', bytes('x'), { session: s });
    // Each client's first sweep lists once, 5 s after it started; let them all pass first.
    await eventually('every first sweep has run', async () => before('configmaps:list') - lists0 >= 9, patience);
    h.proxyOf(owner).cut();
    const lists = before('configmaps:list');
    await call(h, 'DELETE', `${LEASES}/${s.leaseName}`);
    const reader = janitors[0];
    if (reader === undefined) throw new Error('no janitor');
    await eventually('the key is removed', async () => (await reader.get('eph')) === undefined, patience);
    // An upper bound, so waiting can only expose more listing: a second janitor looks after a random delay of up to 1 s.
    await new Promise((r) => setTimeout(r, 1500));
    const listed = before('configmaps:list') - lists;
    expect(listed).toBeGreaterThanOrEqual(1);
    expect(listed).toBeLessThanOrEqual(JANITORS_ACTING);
    h.proxyOf(owner).heal();
  });
});
