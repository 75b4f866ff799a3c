import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, TaskGraphError } from '@taskgraph/api';
import type { TransportFactory } from '@taskgraph/api';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  LocalNetwork,
  LocalTransport,
  createLocalTransport,
  createTransport,
} from '@taskgraph/transport-local';
import { meta, text, untext } from './helpers.js';

const opened: LocalTransport[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((t) => t.close()));
});

async function open(urlOrOptions?: Parameters<typeof createLocalTransport>[0]): Promise<LocalTransport> {
  const t = await createLocalTransport(urlOrOptions);
  opened.push(t);
  return t;
}

function invalid(f: () => unknown): TaskGraphError {
  let caught: unknown;
  try {
    f();
  } catch (err) {
    caught = err;
  }
  expect(TaskGraphError.is(caught, ErrorCodes.InvalidArgument), `expected InvalidArgumentError, got ${String(caught)}`).toBe(true);
  return caught as TaskGraphError;
}

async function invalidAsync(p: Promise<unknown>): Promise<TaskGraphError> {
  const caught = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(TaskGraphError.is(caught, ErrorCodes.InvalidArgument), `expected InvalidArgumentError, got ${String(caught)}`).toBe(true);
  return caught as TaskGraphError;
}

describe('the URL factory', () => {
  it('is exported as createTransport, the name the URL resolver calls', () => {
    const factory: TransportFactory = createTransport;
    expect(factory).toBe(createLocalTransport);
  });

  it('local:// joins the process-wide default network with generated server names', async () => {
    const a = await open('local://');
    const b = await open(new URL('local://'));
    expect(a.kind).toBe('local');
    expect(a.network).toBe(LocalNetwork.default);
    expect(b.network).toBe(LocalNetwork.default);
    expect(a.maxMessageBytes).toBe(DEFAULT_MAX_MESSAGE_BYTES);
    const s1 = await a.listen({ methods: ['m'], handler: async () => text('a') });
    const s2 = await a.listen({ methods: ['m'], handler: async () => text('a') });
    expect(s1.address).toMatch(/^local:\/\/node-\d+$/);
    expect(s2.address).not.toBe(s1.address);
    expect(LocalNetwork.default.addresses()).toEqual(expect.arrayContaining([s1.address, s2.address]));
    expect(untext(await b.call(s1.address, 'm', meta(), new Uint8Array(0), { timeoutMs: 5_000 }))).toBe('a');
    // A generated name is never handed out again, so a restarted node gets a new address.
    await s1.close();
    const s3 = await a.listen({ methods: ['m'], handler: async () => text('a') });
    expect([s1.address, s2.address]).not.toContain(s3.address);
  });

  it('local://<name> names its servers, and ?maxMessageBytes sets the limit', async () => {
    const a = await open('local://url-node-1?maxMessageBytes=1024');
    expect(a.maxMessageBytes).toBe(1024);
    const server = await a.listen({ methods: ['m'], handler: async () => text('named') });
    expect(server.address).toBe('local://url-node-1');
    const clash = await a.listen({ handler: async () => text('') }).catch((e: unknown) => e);
    expect(TaskGraphError.is(clash, ErrorCodes.AlreadyExists)).toBe(true);
    const other = await open('LOCAL://url-node-1/');
    expect(TaskGraphError.is(await other.listen({ handler: async () => text('') }).catch((e: unknown) => e), ErrorCodes.AlreadyExists)).toBe(true);
    await server.close();
    const again = await other.listen({ methods: ['m'], handler: async () => text('again') });
    expect(again.address).toBe('local://url-node-1');
    expect(untext(await a.call(again.address, 'm', meta(), new Uint8Array(0), { timeoutMs: 5_000 }))).toBe('again');
  });

  it('rejects a bad URL with one clear sentence', async () => {
    const bad: [string, RegExp][] = [
      ['grpc://127.0.0.1:4000', /expected "local:\/\/" or "local:\/\/<name>"/],
      ['local:', /expected/],
      ['local:node', /expected/],
      ['local://a/b', /expected/],
      ['local://a#frag', /expected/],
      ['local://bad name', /is invalid: use letters, digits/],
      ['local://-lead', /is invalid/],
      ['local://user@host', /is invalid/],
      ['local://host:80', /is invalid/],
      ['local://x?timeout=5', /unknown parameter "timeout"; the only one is "maxMessageBytes"/],
      ['local://x?maxMessageBytes=0', /maxMessageBytes must be a positive integer/],
      ['local://x?maxMessageBytes=1e3', /maxMessageBytes must be a positive integer/],
      ['local://x?maxMessageBytes=1&maxMessageBytes=2', /repeats the parameter/],
    ];
    for (const [url, message] of bad) {
      const err = await invalidAsync(createLocalTransport(url));
      expect(err.message, url).toMatch(message);
      expect(err.message, url).toContain(JSON.stringify(url));
    }
  });

  it('rejects bad options', async () => {
    await invalidAsync(createLocalTransport({ maxMessageBytes: 0 }));
    await invalidAsync(createLocalTransport({ maxMessageBytes: 1.5 }));
    await invalidAsync(createLocalTransport({ name: 'no/slash' }));
    await invalidAsync(createLocalTransport({ network: {} as never }));
    invalid(() => new LocalNetwork({ random: 4 as never }));
    const t = await open({ network: new LocalNetwork() });
    await invalidAsync(t.listen({} as never));
    await invalidAsync(t.listen({ handler: async () => text(''), methods: ['ok', '9bad'] }));
    await invalidAsync(t.listen({ handler: async () => text(''), name: '' }));
    await invalidAsync(t.listen({ handler: async () => text(''), methods: 'm' as never }));
  });
});

describe('networks', () => {
  it('isolate their transports: the same name on two networks is two servers', async () => {
    const one = new LocalNetwork();
    const two = new LocalNetwork();
    const a1 = await open({ network: one, name: 'same' });
    const a2 = await open({ network: two, name: 'same' });
    const b1 = await open({ network: one });
    const b2 = await open({ network: two });
    await a1.listen({ methods: ['who'], handler: async () => text('one') });
    await a2.listen({ methods: ['who'], handler: async () => text('two') });
    const only = await a2.listen({ name: 'only-on-two', methods: ['who'], handler: async () => text('two') });
    expect(untext(await b1.call('local://same', 'who', meta(), new Uint8Array(0), { timeoutMs: 5_000 }))).toBe('one');
    expect(untext(await b2.call('local://same', 'who', meta(), new Uint8Array(0), { timeoutMs: 5_000 }))).toBe('two');
    const err = await b1.call(only.address, 'who', meta(), new Uint8Array(0), { timeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(TaskGraphError.is(err, ErrorCodes.Unavailable)).toBe(true);
    one.dropRequests();
    expect(two.faults()).toEqual([]);
    expect(one.stats().sent).toBe(2);
    expect(two.stats().sent).toBe(1);
    expect(one.addresses()).toEqual(['local://same']);
    expect(two.addresses().sort()).toEqual(['local://only-on-two', 'local://same']);
  });

  it('a listen name beats the transport name; forget() never throws', async () => {
    const network = new LocalNetwork();
    const t = await open({ network, name: 'base' });
    const s = await t.listen({ name: 'override', handler: async () => text('') });
    expect(s.address).toBe('local://override');
    t.forget('local://override');
    t.forget('not an address');
    expect(t.servers).toEqual([s]);
  });
});
