import { TaskGraphError } from '@taskgraph/api';
import type { Backupable, InboundRequest, Task, UpdateLog } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { AddressBook } from '../src/address-book.js';
import { deferred } from '../src/async.js';
import { BackupTask } from '../src/backup-task.js';
import { encodeJson, keys } from '../src/layout.js';
import { METHODS, frame, frameUpdate, unframeUpdate } from '../src/replication-wire.js';
import type { UpdateHeader } from '../src/replication-wire.js';
import { newStats } from '../src/stats.js';
import { bytes, memoryWorld, recordingLogger, text, track, turn } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await w.close();
});

/** A backup's task: its state is the list of values applied. */
class ListTask implements Task, Backupable {
  items: string[] = [];
  readonly restores: string[][] = [];
  init(): void {}
  enterEpoch(): void {}
  metaReady(): void {}
  exit(): void {}
  snapshot(): Uint8Array {
    return bytes(JSON.stringify(this.items));
  }
  restore(snapshot: Uint8Array): void {
    this.items = JSON.parse(text(snapshot)) as string[];
    this.restores.push([...this.items]);
  }
  applyUpdate(log: UpdateLog): void {
    this.items.push(text(log.data));
  }
}

/**
 * A backup of task 0 on a real memory store and local transport, and a stand-in
 * primary that serves the snapshots the test hands it.
 */
async function setup() {
  w = memoryWorld();
  const coordinator = w.client();
  const session = await coordinator.openSession({ ttlMs: 5000 });
  const slotLock = (await coordinator.tryAcquire(keys.backupLock(w.job, 0, 0), session, { owner: 'backup' }))!;
  const network = new LocalNetwork();
  const transport = await createLocalTransport({ network });
  closers.push(() => transport.close());
  const logger = recordingLogger();
  const addresses = new AddressBook(w.job, transport, logger);
  const snapshots: Array<{ seq: number; items: string[]; gate: Promise<void> }> = [];
  const asked: string[] = [];
  const primaryServer = await transport.listen({
    methods: [METHODS.snapshot],
    handler: async (req: InboundRequest) => {
      asked.push(req.meta.token);
      const next = snapshots.shift();
      if (!next) throw new TaskGraphError('UNAVAILABLE', 'no snapshot yet');
      await next.gate;
      const body = bytes(JSON.stringify(next.items));
      return frame({ primaryToken: req.meta.token, incarnation: 1, seq: next.seq, total: body.length, id: 'x' }, body);
    },
  });
  const task = new ListTask();
  const gone: number[] = [];
  const backup = new BackupTask({
    job: w.job,
    id: 0,
    slot: 0,
    lock: slotLock,
    task,
    nodeId: 'backup',
    address: 'local://backup',
    coordinator,
    session,
    transport,
    addresses,
    clock: w.clock,
    stats: newStats(),
    logger,
    attemptTimeoutMs: 5000,
    epochs: { epoch: 0 },
    onPrimaryGone: () => void gone.push(1),
    onFailure: (err) => {
      throw err;
    },
  });
  closers.push(() => backup.stop());
  const primary = (token: string) =>
    addresses.event({
      type: 'put',
      key: keys.addr(w.job, 0),
      value: encodeJson({ nodeId: `p${token}`, address: primaryServer.address, token, incarnation: Number(token) }),
      version: token,
    });
  const update = (token: string, seq: number, value: string) => {
    const header: UpdateHeader = { primaryToken: token, epoch: 0, seq };
    const { header: h, body } = unframeUpdate(frameUpdate(header, bytes(value)).frame);
    return backup.handleUpdate(h, body);
  };
  const record = () => JSON.parse(w.text(keys.backup(w.job, 0, 0)) ?? 'null') as { state: string; primaryToken?: string } | null;
  return { backup, task, primary, update, snapshots, asked, record, gone, coordinator };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  return TaskGraphError.is(err) ? `${err.code} ${String(err.details['reason'])}` : String(err);
}

describe('BackupTask', () => {
  it('publishes its record, syncs from the primary’s snapshot, then applies updates in seq order, each once', async () => {
    const { backup, task, primary, update, snapshots, record } = await setup();
    snapshots.push({ seq: 2, items: ['a', 'b'], gate: Promise.resolve() });
    await backup.start();
    expect(record()).toMatchObject({ state: 'syncing' });
    primary('7');
    await eventually('in sync', () => backup.ready && record()?.state === 'ready');
    expect(record()).toMatchObject({ state: 'ready', primaryToken: '7' });
    expect(task.items).toEqual(['a', 'b']);
    // 4 before 3: held until 3 arrives; repeats of applied seqs are acknowledged without applying.
    const four = update('7', 4, 'd');
    await update('7', 3, 'c');
    await four;
    await update('7', 2, 'b-again');
    await update('7', 3, 'c-again');
    expect(task.items).toEqual(['a', 'b', 'c', 'd']);
    expect(backup.applied).toBe(4);
  });

  it('acknowledges no update before its record says ready: a standby reading the records must not take the slot over it', async () => {
    const { backup, task, primary, update, snapshots, record, coordinator } = await setup();
    snapshots.push({ seq: 0, items: [], gate: Promise.resolve() });
    const refused = coordinator.faults.add({ op: 'update', key: keys.backup(w.job, 0, 0), times: 1 });
    await backup.start();
    primary('7');
    await eventually('the ready write refused once', () => refused.hits === 1);
    const first = track(update('7', 1, 'a'));
    await turn();
    expect(first.state.settled).toBe(false);
    expect(record()?.state).toBe('syncing');
    await w.clock.advance(1000);
    await first.promise;
    expect(record()?.state).toBe('ready');
    expect(task.items).toEqual(['a']);
  });

  it('refuses an update from a deposed primary and asks a newer one it does not follow yet to wait', async () => {
    const { backup, primary, update, snapshots } = await setup();
    snapshots.push({ seq: 0, items: [], gate: Promise.resolve() });
    await backup.start();
    primary('7');
    await eventually('in sync', () => backup.ready);
    expect(await codeOf(update('5', 1, 'x'))).toBe('NOT_OWNER deposed');
    expect(await codeOf(update('9', 1, 'x'))).toBe('UNAVAILABLE resync');
  });

  it('after a new primary appears, it holds that primary’s updates until its snapshot is restored, whatever seqs the old one had used', async () => {
    const { backup, task, primary, update, snapshots } = await setup();
    snapshots.push({ seq: 0, items: [], gate: Promise.resolve() });
    await backup.start();
    primary('7');
    await eventually('in sync with 7', () => backup.ready);
    for (const [seq, v] of [[1, 'a'], [2, 'b'], [3, 'unacked']] as const) await update('7', seq, v);
    // Primary 7 dies; the promoted backup (token 9) had only seqs 1-2: its seq 3 is another change.
    const slow = deferred<void>();
    snapshots.push({ seq: 2, items: ['a', 'b'], gate: slow.promise });
    primary('9');
    await eventually('asking 9 for a snapshot', () => snapshots.length === 0);
    const three = update('9', 3, 'c');
    slow.resolve();
    await three;
    expect(task.restores.at(-1)).toEqual(['a', 'b']);
    expect(task.items).toEqual(['a', 'b', 'c']);
    expect(await codeOf(update('7', 4, 'late'))).toBe('NOT_OWNER deposed');
  });

  it('retrying its sync with the same primary (a snapshot answer lost) releases the updates it held as retryable, not as deposed', async () => {
    const { backup, task, primary, update, snapshots } = await setup();
    const lost = deferred<void>();
    snapshots.push({ seq: 0, items: [], gate: lost.promise });
    await backup.start();
    primary('7');
    await eventually('asking 7 for a snapshot', () => snapshots.length === 0);
    // Held while the snapshot is on its way.
    const held = track(update('7', 1, 'a'));
    await turn();
    expect(held.state.settled).toBe(false);
    // The snapshot's answer is lost; the backup asks the same primary again after a backoff.
    lost.reject(new TaskGraphError('UNAVAILABLE', 'the answer was lost'));
    snapshots.push({ seq: 0, items: [], gate: Promise.resolve() });
    await eventually('asking 7 again', async () => {
      await w.clock.advance(100);
      return snapshots.length === 0;
    });
    // A "deposed" answer here made a live primary abdicate (simulator: hot-standby seed 56).
    expect(await codeOf(held.promise)).toBe('UNAVAILABLE resync');
    await eventually('in sync with 7', () => backup.ready);
    await update('7', 1, 'a');
    expect(task.items).toEqual(['a']);
  });

  it('tells its node when the task has no primary, at start and when the primary’s record goes', async () => {
    const { backup, primary, gone, snapshots } = await setup();
    snapshots.push({ seq: 0, items: [], gate: Promise.resolve() });
    await backup.start();
    expect(gone).toEqual([1]);
    primary('7');
    await eventually('in sync', () => backup.ready);
    expect(gone).toEqual([1]);
  });
});
