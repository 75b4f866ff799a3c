import { ClosedError, EpochChangedError, InvalidArgumentError, LeaseLostError } from '@taskgraph/api';
import type { EpochContext, Task, Topology } from '@taskgraph/api';
import { tree } from '@taskgraph/topologies';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { AddressBook } from '../src/address-book.js';
import { defineMethod } from '../src/codec.js';
import { DataClient } from '../src/data-client.js';
import { EpochTracker } from '../src/epoch.js';
import { TaskFramework } from '../src/framework.js';
import { encodeJson, keys } from '../src/layout.js';
import { RunningTask } from '../src/running-task.js';
import { newStats } from '../src/stats.js';
import { recordingTask } from './helpers.js';
import { bytes, memoryWorld, recordingLogger, rejectionOf, text } from './parts.js';

const double = defineMethod<number, number>('double');

let w: ReturnType<typeof memoryWorld>;
let transports: LocalTransport[] = [];
afterEach(async () => {
  for (const t of transports) await t.close();
  transports = [];
  await w.close();
});

/**
 * The framework of task 0 (incarnation 2) of a 3-task job in epoch 5, over real
 * parts: an epoch tracker on the store, a running task holding a real lock, a data
 * client on a local network (task 2 answers `double` there). What it asks of its
 * node (alive, owner, kill, shutdownJob) is recorded.
 */
async function setup(extra: Partial<Task> = {}, maxMetaBytes = 16) {
  w = memoryWorld();
  const coordinator = w.client();
  const session = await coordinator.openSession({ ttlMs: 1000 });
  const lock = (await coordinator.tryAcquire(keys.taskLock(w.job, 0), session))!;
  const logger = recordingLogger();
  const stats = newStats();
  const version = await coordinator.create(keys.epoch(w.job), bytes('5'));
  const tracker = new EpochTracker({ job: w.job, coordinator, clock: w.clock, logger, stats, onChange: () => undefined });
  tracker.apply(bytes('5'), version);

  const network = new LocalNetwork();
  const transport = new LocalTransport({ network });
  const peer = new LocalTransport({ network });
  transports.push(transport, peer);
  const addresses = new AddressBook(w.job, transport, logger);
  const requests: unknown[] = [];
  const server = await peer.listen({
    methods: ['double'],
    handler: async (req) => {
      requests.push(req.meta);
      return encodeJson(2 * (JSON.parse(text(req.payload)) as number));
    },
  });
  addresses.set(2, { nodeId: 'n2', address: server.address, token: '9', incarnation: 1 });
  const data = new DataClient({ job: w.job, transport, addresses, clock: w.clock, stats, attemptTimeoutMs: 5000, epochChanged: (a, c) => tracker.changed(a, c), logger: () => logger });

  const log: string[] = [];
  const task = recordingTask(log, extra);
  const asked = { alive: 0, owner: [] as string[], kills: 0, shutdowns: 0 };
  const node = { left: false, lost: false };
  const running = new RunningTask(
    {
      job: w.job,
      nodeId: 'node-a',
      coordinator,
      session,
      clock: w.clock,
      stats,
      epochs: tracker,
      addresses,
      transport,
      attemptTimeoutMs: 5000,
      linkages: new Map(),
      isServing: () => true,
      onCallbackError: (err) => void log.push(`error ${String(err)}`),
      assertOwner: () => undefined,
      metaPush: false,
    },
    { id: 0, lock, incarnation: 2, task, logger, seq: 0 },
  );
  const t = tree({ numTasks: 3, fanout: 2 });
  t.Parents.setTaskId(0);
  t.Children.setTaskId(0);
  const linkages = new Map<string, Topology>([
    ['Parents', t.Parents],
    ['Children', t.Children],
    ['Beyond', { setTaskId: () => undefined, getNeighbors: () => [1, 5] }],
  ]);
  const framework = new TaskFramework(
    {
      job: w.job,
      linkages,
      maxMetaBytes,
      epochs: tracker,
      data,
      assertAlive: () => {
        asked.alive++;
        if (node.left) throw new ClosedError('the node has left');
      },
      assertOwner: (what) => {
        asked.owner.push(what);
        if (node.lost) throw new LeaseLostError(`${what}: lost`);
      },
      kill: async () => void asked.kills++,
      shutdownJob: async () => void asked.shutdowns++,
      addresses,
      coordinator,
      clock: w.clock,
      onCallbackError: (err) => void log.push(`error ${String(err)}`),
    },
    { id: 0, primary: () => running, backup: () => undefined, logger: () => logger },
    3,
  );
  const metaRecord = (to: number, linkType: string, epoch = 5) => {
    const t2 = w.text(keys.meta(w.job, to, epoch, 0, linkType));
    return t2 === undefined ? undefined : (JSON.parse(t2) as unknown);
  };
  return { framework, tracker, running, linkages, logger, log, asked, node, requests, metaRecord, stats, lock };
}

describe('TaskFramework', () => {
  it('tells the job, the task, the number of tasks, the incarnation, the epoch, the topologies and the logger', async () => {
    const { framework, tracker, linkages, logger } = await setup();
    expect(framework.getJob()).toBe(w.job);
    expect(framework.getTaskId()).toBe(0);
    expect(framework.getNumTasks()).toBe(3);
    expect(framework.getIncarnation()).toBe(2);
    expect(framework.getEpoch()).toBe(5);
    tracker.apply(bytes('6'), '999');
    expect(framework.getEpoch()).toBe(6);
    expect(framework.getTopology()).toBe(linkages);
    expect(framework.getLogger()).toBe(logger);
  });

  it('kill() and shutdownJob() are the node’s', async () => {
    const { framework, asked } = await setup();
    await framework.kill();
    await framework.shutdownJob();
    await framework.shutdownJob();
    expect(asked.kills).toBe(1);
    expect(asked.shutdowns).toBe(2);
  });

  describe('every call checks its context first', () => {
    it('not a context: InvalidArgumentError; an old epoch’s: EpochChangedError; after the node left: ClosedError', async () => {
      const { framework, tracker, node, requests, metaRecord } = await setup();
      const calls = (ctx: EpochContext) => [framework.flagMeta(ctx, 'Children', 'm'), framework.incEpoch(ctx), framework.dataRequest(ctx, 2, double, 1)];
      for (const p of calls({ epoch: 5 } as EpochContext)) expect(await rejectionOf(p)).toBeInstanceOf(InvalidArgumentError);
      const old = tracker.context;
      tracker.apply(bytes('6'), '999');
      for (const p of calls(old)) expect(await rejectionOf(p)).toBeInstanceOf(EpochChangedError);
      node.left = true;
      for (const p of calls(tracker.context)) expect(await rejectionOf(p)).toBeInstanceOf(ClosedError);
      expect(requests).toEqual([]);
      expect(metaRecord(1, 'Children')).toBeUndefined();
      expect(w.text(keys.epoch(w.job))).toBe('5');
    });
  });

  describe('flagMeta', () => {
    it('writes the meta to every neighbour of the link type in the context’s epoch', async () => {
      const { framework, tracker, metaRecord, running } = await setup();
      await framework.flagMeta(tracker.context, 'Children', 'ready');
      expect(metaRecord(1, 'Children')).toEqual({ token: running.token, metas: ['ready'] });
      expect(metaRecord(2, 'Children')).toEqual({ token: running.token, metas: ['ready'] });
      // Task 0 has no parent: nothing to write.
      await framework.flagMeta(tracker.context, 'Parents', 'up');
      expect(w.store.entries().filter((e) => e.key.includes('/Parents'))).toEqual([]);
    });

    it('an unknown link type, a meta that is not a string, or one too large: InvalidArgumentError, nothing written', async () => {
      const { framework, tracker, stats } = await setup({}, 4);
      const ctx = tracker.context;
      expect(await rejectionOf(framework.flagMeta(ctx, 'Siblings', 'm'))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: 'flagMeta: unknown link type "Siblings" (added: Parents, Children, Beyond)',
      });
      expect(await rejectionOf(framework.flagMeta(ctx, 'Children', 42 as unknown as string))).toMatchObject({ message: 'flagMeta: meta must be a string' });
      // The limit is in UTF-8 bytes: "é" is two.
      await framework.flagMeta(ctx, 'Children', 'éé');
      expect(await rejectionOf(framework.flagMeta(ctx, 'Children', 'ééa'))).toMatchObject({ message: 'flagMeta: meta is 5 bytes; the limit is 4' });
      expect(stats.writes.meta).toBe(2);
    });

    it('a topology naming a task that does not exist: InvalidArgumentError before anything is written', async () => {
      const { framework, tracker, metaRecord } = await setup();
      const err = await rejectionOf(framework.flagMeta(tracker.context, 'Beyond', 'm'));
      expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', message: 'topology "Beyond": task 5 does not exist (tasks are 0..2)' });
      expect(metaRecord(1, 'Beyond')).toBeUndefined();
    });
  });

  describe('incEpoch', () => {
    it('advances the job’s epoch, checking ownership right before the write', async () => {
      const { framework, tracker, asked } = await setup();
      await framework.incEpoch(tracker.context);
      expect(w.text(keys.epoch(w.job))).toBe('6');
      expect(asked.owner).toEqual(['incEpoch']);
    });

    it('a node that lost its lease does not write', async () => {
      const { framework, tracker, node } = await setup();
      node.lost = true;
      expect(await rejectionOf(framework.incEpoch(tracker.context))).toMatchObject({ code: 'LEASE_LOST', message: 'incEpoch: lost' });
      expect(w.text(keys.epoch(w.job))).toBe('5');
    });
  });

  describe('update', () => {
    it('on a node that is no longer the primary (its lease lost, or it left): LeaseLostError, as documented, even once the node is closed', async () => {
      const { framework, tracker, node, asked } = await setup();
      node.lost = true;
      node.left = true;
      expect(await rejectionOf(framework.update(tracker.context, bytes('x')))).toMatchObject({ code: 'LEASE_LOST', message: 'update: lost' });
      expect(asked.owner).toEqual(['update']);
    });
  });

  describe('dataRequest', () => {
    it('asks the target from this task, returns the answer, and queues dataReady with it', async () => {
      const seen: unknown[] = [];
      const { framework, tracker, requests, log } = await setup({
        dataReady: (ctx, from, method, output) => void seen.push({ ctx, from, method, output }),
      });
      const ctx = tracker.context;
      expect(await framework.dataRequest(ctx, 2, double, 21)).toBe(42);
      expect(requests).toEqual([expect.objectContaining({ from: 0, to: 2, epoch: 5, token: '9' })]);
      await eventually('dataReady', () => seen.length === 1);
      expect(seen).toEqual([{ ctx, from: 2, method: 'double', output: 42 }]);
      expect(log).toEqual([]);
    });

    it('a task without dataReady just gets the answer', async () => {
      const { framework, tracker, log } = await setup();
      expect(await framework.dataRequest(tracker.context, 2, double, 4)).toBe(8);
      expect(log).toEqual([]);
    });

    it('a task id that does not exist: InvalidArgumentError, nothing sent', async () => {
      const { framework, tracker, requests } = await setup();
      for (const id of [3, -1, 1.5, Number.NaN]) {
        const err = await rejectionOf(framework.dataRequest(tracker.context, id, double, 1));
        expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', message: `dataRequest: task ${id} does not exist (tasks are 0..2)` });
      }
      expect(requests).toEqual([]);
    });
  });
});
