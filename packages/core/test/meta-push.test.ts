import { DecodeFailedError, NotOwnerError } from '@taskgraph/api';
import type { Coordinator, CreateOptions, EpochContext, Framework, InboundRequest, Task, Transport } from '@taskgraph/api';
import { createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { defineMethod, jobKeys, serve } from '../src/index.js';
import { META_PUSH_METHOD, decodeMetaPush, encodeMetaPush, metaPushHandler } from '../src/meta-push.js';
import type { MetaPush, PushReceiver } from '../src/meta-push.js';
import { world } from './helpers.js';

const ping = defineMethod<number, number>('ping');
const LINKS = ['Parents', 'Children'];

let w: ReturnType<typeof world>;

/** A task that logs its metas and keeps its framework and context for the test. */
function metaTask(log: string[]) {
  const box: { fw?: Framework; ctx?: EpochContext } = {};
  const task: Task = {
    init: (_id, fw) => void (box.fw = fw),
    enterEpoch: (ctx) => void (box.ctx = ctx),
    metaReady: (_ctx, from, linkType, meta) => void log.push(`${from} ${linkType} ${meta}`),
    exit: () => undefined,
    methods: [serve(ping, (_ctx, n) => n)],
  };
  return { box, task };
}

/** A coordinator whose meta writes wait, while `holding`, until the test lets them go (the push then wins the race). */
function holdingMetaWrites(inner: Coordinator) {
  const held: Array<() => void> = [];
  const gate = { holding: true, held, release: () => held.splice(0).forEach((go) => go()) };
  const coordinator = new Proxy(inner, {
    get(target, prop) {
      if (prop === 'create') {
        return async (key: string, value: Uint8Array, options?: CreateOptions) => {
          if (gate.holding && key.includes('/meta/')) await new Promise<void>((resolve) => held.push(resolve));
          return target.create(key, value, options);
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { coordinator, gate };
}

/** A transport whose meta pushes wait until the test lets them go (the store copy can then win the race). */
async function holdingPushes() {
  const inner = await createLocalTransport({ network: w.network });
  const held: Array<() => void> = [];
  const state = { answered: 0 };
  const transport: Transport = {
    kind: inner.kind,
    maxMessageBytes: inner.maxMessageBytes,
    listen: (options) => inner.listen(options),
    call: async (address, method, meta, payload, options) => {
      if (method !== META_PUSH_METHOD) return inner.call(address, method, meta, payload, options);
      await new Promise<void>((resolve) => held.push(resolve));
      try {
        return await inner.call(address, method, meta, payload, options);
      } finally {
        state.answered++;
      }
    },
    forget: (address) => inner.forget(address),
    close: () => inner.close(),
  };
  return { transport, held, state, release: () => held.splice(0).forEach((go) => go()) };
}

/**
 * A tree of 3 tasks (0 is the parent of 1 and 2), one node each; the sender (task 0)
 * has pinged both children, so its address book knows where they are.
 */
async function threeTasks(sender: { transport?: Transport; coordinator?: Coordinator } = {}, options: { metaPush?: boolean } = {}) {
  await w.controller().createJob({ numTasks: 3, linkTypes: LINKS });
  const logs: string[][] = [[], [], []];
  const tasks = logs.map((log) => metaTask(log));
  const nodes: Array<Awaited<ReturnType<typeof w.node>> & { run: Promise<unknown> }> = [];
  for (const id of [0, 1, 2]) {
    const made = await w.node(() => tasks[id]!.task, { preferredTask: id, ...(id === 0 ? sender : {}), ...options });
    nodes.push({ ...made, run: made.node.start() });
  }
  await eventually('every task runs where it was pinned', () => nodes.every((n, id) => n.node.currentTask === id && tasks[id]!.box.ctx !== undefined));
  const box = tasks[0]!.box;
  for (const to of [1, 2]) await box.fw!.dataRequest(box.ctx!, to, ping, to);
  return { logs, tasks, nodes, sender: box };
}

describe('the meta fast path', () => {
  afterEach(async () => {
    await w.close();
  });

  it('a flagged meta reaches each receiver by push, once; its store copy, seen later, is not delivered again', async () => {
    w = world();
    const { coordinator, gate } = holdingMetaWrites(w.coordinator());
    const { logs, nodes, sender } = await threeTasks({ coordinator });
    const flagged = sender.fw!.flagMeta(sender.ctx!, 'Children', 'x');
    await eventually('both children have x while its store copy is held', () => logs[1]!.length === 1 && logs[2]!.length === 1);
    expect(gate.held).toHaveLength(2);
    gate.holding = false;
    gate.release();
    await flagged;
    for (const id of [1, 2]) expect(nodes[id]!.node.stats).toMatchObject({ metasByPush: 1, metasByStore: 0 });
    // The next meta's push is lost: it comes by the store, after x's store copy (the watch keeps the store's order).
    const drop = w.network.dropRequests({ method: META_PUSH_METHOD });
    await sender.fw!.flagMeta(sender.ctx!, 'Children', 'y');
    await eventually('both children have y', () => logs[1]!.length === 2 && logs[2]!.length === 2);
    drop.remove();
    expect(logs[1]).toEqual(['0 Children x', '0 Children y']);
    expect(logs[2]).toEqual(['0 Children x', '0 Children y']);
    for (const id of [1, 2]) expect(nodes[id]!.node.stats).toMatchObject({ metasByPush: 1, metasByStore: 1 });
    expect(nodes[0]!.node.stats.metaPushes).toBe(4);
    expect(drop.hits).toBe(2);
  });

  it('when the store copy wins the race, the push that arrives after it is not delivered again', async () => {
    w = world();
    const hold = await holdingPushes();
    const { logs, nodes, sender } = await threeTasks({ transport: hold.transport });
    await sender.fw!.flagMeta(sender.ctx!, 'Children', 'x');
    await eventually('both children have x from the store', () => logs[1]!.length === 1 && logs[2]!.length === 1);
    expect(hold.held).toHaveLength(2);
    hold.release();
    await eventually('both pushes answered', () => hold.state.answered === 2);
    // The pushes were accepted (no failure), and dropped as already delivered.
    expect(nodes[0]!.node.stats.metaPushFailures).toBe(0);
    for (const id of [1, 2]) {
      expect(logs[id]).toEqual(['0 Children x']);
      expect(nodes[id]!.node.stats).toMatchObject({ metasByPush: 0, metasByStore: 1 });
    }
  });

  it('a receiver that dies after the push: its successor gets the meta once, from the store copy', async () => {
    w = world();
    const { coordinator, gate } = holdingMetaWrites(w.coordinator());
    const { logs, nodes, sender } = await threeTasks({ coordinator });
    const flagged = sender.fw!.flagMeta(sender.ctx!, 'Children', 'x');
    await eventually('task 1 has x while its store copy is held', () => logs[1]!.length === 1);
    expect(nodes[1]!.node.stats.metasByPush).toBe(1);
    gate.holding = false;
    gate.release();
    await flagged;
    const successorLog: string[] = [];
    const successor = metaTask(successorLog);
    const standby = await w.node(() => successor.task, {}, 3);
    const standbyRun = standby.node.start();
    await eventually('the standby waits', () => standby.node.state === 'standby');
    await nodes[1]!.node.kill();
    await eventually('the standby runs task 1 and has x', () => standby.node.currentTask === 1 && successorLog.length === 1);
    expect(successorLog).toEqual(['0 Children x']);
    expect(standby.node.stats).toMatchObject({ metasByPush: 0, metasByStore: 1 });
    // The new incarnation's own flag is pushed too (which path delivers it first is a race here).
    await successor.box.fw!.flagMeta(successor.box.ctx!, 'Parents', 'up');
    await eventually('task 0 has up', () => logs[0]!.includes('1 Parents up'));
    expect(standby.node.stats.metaPushes).toBe(1);
    expect(logs[0]).toEqual(['1 Parents up']);
    await standby.node.stop();
    await standbyRun;
  });

  it('with metaPush off, metas travel by the store only', async () => {
    w = world();
    const { logs, nodes, sender } = await threeTasks({}, { metaPush: false });
    await sender.fw!.flagMeta(sender.ctx!, 'Children', 'x');
    await eventually('both children have x', () => logs[1]!.length === 1 && logs[2]!.length === 1);
    expect(nodes[0]!.node.stats.metaPushes).toBe(0);
    for (const id of [1, 2]) expect(nodes[id]!.node.stats).toMatchObject({ metasByPush: 0, metasByStore: 1 });
    // The store copy is there, under the receiver's prefix and the epoch's generation.
    expect(w.store.entries().some((e) => e.key.endsWith(jobKeys.meta(w.job, 1, 0, 0, 'Children')))).toBe(true);
  });
});

describe('metaPushHandler', () => {
  const pushes: Array<{ epoch: number; from: number; push: MetaPush }> = [];
  const receiver: PushReceiver & { begun: boolean } = {
    id: 1,
    token: '7',
    begun: true,
    receivePush: (epoch, from, push) => void pushes.push({ epoch, from, push }),
  };
  const view = { primary: (): PushReceiver | undefined => receiver, sessionLost: () => false, maxMetaBytes: 8 };
  const request = (over: Partial<InboundRequest['meta']> = {}, payload = encodeMetaPush({ senderToken: '3', linkType: 'Children', meta: 'hi' })): InboundRequest => ({
    method: META_PUSH_METHOD,
    meta: { job: 'j', from: 0, to: 1, epoch: 4, token: '7', requestId: 'r1', ...over },
    payload,
    signal: new AbortController().signal,
  });

  it('hands a push for the task and token it runs to the task, and answers empty', async () => {
    pushes.length = 0;
    await expect(metaPushHandler(view)(request())).resolves.toEqual(new Uint8Array(0));
    expect(pushes).toEqual([{ epoch: 4, from: 0, push: { senderToken: '3', linkType: 'Children', meta: 'hi' } }]);
  });

  it('refuses, as NotOwner, a push for another task or token, before the task began, or with the session lost', async () => {
    pushes.length = 0;
    const handle = metaPushHandler(view);
    await expect(handle(request({ to: 2 }))).rejects.toThrow(NotOwnerError);
    await expect(handle(request({ token: '6' }))).rejects.toThrow(NotOwnerError);
    receiver.begun = false;
    await expect(handle(request())).rejects.toThrow(NotOwnerError);
    receiver.begun = true;
    await expect(metaPushHandler({ ...view, sessionLost: () => true })(request())).rejects.toThrow(NotOwnerError);
    await expect(metaPushHandler({ ...view, primary: () => undefined })(request())).rejects.toThrow(NotOwnerError);
    expect(pushes).toEqual([]);
  });

  it('refuses a malformed or oversized push as DecodeFailed, and hands nothing on', async () => {
    pushes.length = 0;
    const handle = metaPushHandler(view);
    const enc = new TextEncoder();
    const bad = [
      new Uint8Array([0xff, 0xfe]),
      enc.encode('[]'),
      enc.encode('null'),
      enc.encode('{"senderToken":"x3","linkType":"Children","meta":"m"}'),
      enc.encode('{"senderToken":"3","linkType":"9bad","meta":"m"}'),
      enc.encode('{"senderToken":"3","linkType":"Children","meta":5}'),
      encodeMetaPush({ senderToken: '3', linkType: 'Children', meta: 'nine byte' }),
    ];
    for (const payload of bad) await expect(handle(request({}, payload))).rejects.toThrow(DecodeFailedError);
    expect(pushes).toEqual([]);
    expect(decodeMetaPush(encodeMetaPush({ senderToken: '12', linkType: 'Parents', meta: '' }))).toEqual({ senderToken: '12', linkType: 'Parents', meta: '' });
  });
});
