import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import {
  MemoryCoordinator,
  MemoryStore,
  createCoordinator,
  createMemoryCoordinator,
  dropSharedMemoryStore,
  parseMemoryUrl,
  sharedMemoryStore,
} from '../src/index.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const unique = (): string => `t${Math.random().toString(36).slice(2, 10)}`;

async function invalid(target: string): Promise<string> {
  try {
    await createMemoryCoordinator(target);
  } catch (err) {
    expect(TaskGraphError.is(err, 'INVALID_ARGUMENT')).toBe(true);
    return (err as Error).message;
  }
  throw new Error(`${target} was accepted`);
}

describe('memory:// URLs', () => {
  it('parse the store name, namespace and history limit', () => {
    expect(parseMemoryUrl('memory://demo?namespace=jobs')).toEqual({ storeName: 'demo', namespace: 'jobs', historyLimit: undefined });
    expect(parseMemoryUrl('memory://')).toEqual({ storeName: 'default', namespace: undefined, historyLimit: undefined });
    expect(parseMemoryUrl(new URL('memory://x/?historyLimit=50'))).toEqual({ storeName: 'x', namespace: undefined, historyLimit: 50 });
    expect(parseMemoryUrl('memory://a?namespace=tg%2Fprod').namespace).toBe('tg/prod');
  });

  it('bad URLs are InvalidArgument with a sentence saying what to fix', async () => {
    expect(await invalid('etcd://localhost:2379')).toMatch(/not a memory:\/\/ URL \(scheme "etcd"\)/);
    expect(await invalid('not a url')).toMatch(/is not a URL/);
    expect(await invalid('memory://x?namespaces=a')).toMatch(/unknown parameter "namespaces"; known: namespace, historyLimit/);
    expect(await invalid('memory://x?namespace=a&namespace=b')).toMatch(/more than once/);
    expect(await invalid('memory://x/some/path')).toMatch(/has a path/);
    expect(await invalid('memory://x:99')).toMatch(/port/);
    expect(await invalid('memory://u:p@x')).toMatch(/user, password/);
    expect(await invalid('memory://x#frag')).toMatch(/fragment/);
    expect(await invalid('memory://x?historyLimit=0')).toMatch(/historyLimit must be a positive integer/);
    expect(await invalid('memory://x?namespace=a/../b')).toMatch(/namespace in memory URL/);
    expect(await invalid('memory://x?namespace=')).toMatch(/namespace in memory URL must not be empty/);
  });

  it('the same name shares one store; namespaces and other names are apart', async () => {
    const name = unique();
    const a = await createMemoryCoordinator(`memory://${name}?namespace=n`);
    const b = await createCoordinator(`memory://${name}?namespace=n`);
    const otherNs = await createMemoryCoordinator(`memory://${name}?namespace=m`);
    const otherStore = await createMemoryCoordinator(`memory://${unique()}?namespace=n`);
    await a.create('k', bytes('v'));
    expect(await b.get('k')).toBeDefined();
    expect(await otherNs.get('k')).toBeUndefined();
    expect(await otherStore.get('k')).toBeUndefined();
    expect(b).toBeInstanceOf(MemoryCoordinator);
    expect((b as MemoryCoordinator).store).toBe(sharedMemoryStore(name));
    expect(sharedMemoryStore(name).entries().map((e) => e.key)).toEqual(['n/k']);
    for (const c of [a, b, otherNs, otherStore]) await c.close();
  });

  it('data outlives the clients, as on a server; dropping the store starts afresh', async () => {
    const name = unique();
    const a = await createMemoryCoordinator(`memory://${name}`);
    await a.create('k', bytes('v'));
    await a.close();
    const b = await createMemoryCoordinator(`memory://${name}`);
    expect(await b.get('k')).toBeDefined();
    expect(dropSharedMemoryStore(name)).toBe(true);
    const c = await createMemoryCoordinator(`memory://${name}`);
    expect(await c.get('k')).toBeUndefined();
    expect(await b.get('k')).toBeDefined();
    await b.close();
    await c.close();
  });

  it('historyLimit applies to a new store and must agree with an existing one', async () => {
    const name = unique();
    const a = await createMemoryCoordinator(`memory://${name}?historyLimit=7`);
    expect(a.store.historyLimit).toBe(7);
    expect(await invalid(`memory://${name}?historyLimit=8`)).toMatch(/already exists with historyLimit 7/);
    const b = await createMemoryCoordinator(`memory://${name}?historyLimit=7`);
    expect(b.store).toBe(a.store);
  });

  it('the runtime clock drives a new shared store and the client', async () => {
    const clock = new ManualClock();
    const c = await createCoordinator(`memory://${unique()}`, { clock });
    const s = await c.openSession({ ttlMs: 300 });
    await clock.advance(300);
    expect(s.lost.aborted).toBe(false);
    expect((c as MemoryCoordinator).store.sessionInfo(s.id)?.keepalives).toBe(3);
    await c.close();
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('options make a private store unless one is given', async () => {
    const clock = new ManualClock();
    const a = await createMemoryCoordinator({ clock });
    const b = await createMemoryCoordinator({ clock });
    expect(a.store).not.toBe(b.store);
    expect(a.store.clock).toBe(clock);
    const store = new MemoryStore();
    const c = await createMemoryCoordinator({ store, namespace: 'x', id: 'node-1' });
    expect(c.store).toBe(store);
    expect(c.namespace).toBe('x');
    expect(c.id).toBe('node-1');
    await expect(createMemoryCoordinator(42 as never)).rejects.toThrow(/memory:\/\/ URL or an options object/);
    expect(() => new MemoryCoordinator({ store: {} as never })).toThrow(/must be a MemoryStore/);
    expect(() => sharedMemoryStore('Bad Name')).toThrow(/store name/);
  });
});
