import { TaskGraphError } from '@taskgraph/api';
import type { Backupable, InboundRequest, Task, UpdateLog } from '@taskgraph/api';
import { eventually } from '@taskgraph/testkit';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { afterEach, describe, expect, it } from 'vitest';
import { AddressBook } from '../src/address-book.js';
import { epochScope } from '../src/epoch.js';
import { encodeJson, keys } from '../src/layout.js';
import { METHODS, isSnapshotHeader, unframe, unframeUpdate } from '../src/replication-wire.js';
import type { SnapshotHeader, UpdateHeader } from '../src/replication-wire.js';
import { Replicator } from '../src/replicator.js';
import { bytes, memoryWorld, recordingLogger, text, track, turn } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await w.close();
});

class StateTask implements Task, Backupable {
  state: Uint8Array = new Uint8Array(0);
  init(): void {}
  enterEpoch(): void {}
  metaReady(): void {}
  exit(): void {}
  snapshot(): Uint8Array {
    return this.state.slice();
  }
  restore(): void {}
  applyUpdate(): void {}
}

/** A primary's replicator for task 0, and stand-in backups that record what they get. */
async function setup(options: { maxMessageBytes?: number } = {}) {
  w = memoryWorld();
  const network = new LocalNetwork();
  const transport = await createLocalTransport({ network, ...(options.maxMessageBytes ? { maxMessageBytes: options.maxMessageBytes } : {}) });
  closers.push(() => transport.close());
  const addresses = new AddressBook(w.job, transport, recordingLogger());
  const task = new StateTask();
  const owner = { lost: false };
  const replicator = new Replicator({
    job: w.job,
    nodeId: 'primary',
    taskId: 0,
    token: '10',
    incarnation: 2,
    seq: 5,
    task,
    transport,
    addresses,
    clock: w.clock,
    logger: recordingLogger(),
    attemptTimeoutMs: 5000,
    assertOwner: (what) => {
      if (owner.lost) throw new TaskGraphError('LEASE_LOST', `${what}: lost`);
    },
  });
  closers.push(() => replicator.close());
  /** A backup server: answers updates with `answer` (default: apply). */
  const backup = async (slot: number, answer?: (h: UpdateHeader) => void, token = String(20 + slot)) => {
    const got: UpdateLog[] = [];
    let calls = 0;
    const server = await transport.listen({
      methods: [METHODS.update],
      handler: async (req: InboundRequest) => {
        calls++;
        const { header, body } = unframeUpdate(req.payload);
        answer?.(header);
        got.push({ epoch: header.epoch, seq: header.seq, data: body.slice() });
        return new Uint8Array(0);
      },
    });
    const value = { nodeId: `b${slot}`, address: server.address, token, slot, state: 'syncing' as const };
    const put = () => addresses.event({ type: 'put', key: keys.backup(w.job, 0, slot), value: encodeJson(value), version: '1' });
    const remove = () => addresses.event({ type: 'delete', key: keys.backup(w.job, 0, slot) });
    const askSnapshot = async () => {
      const out = await replicator.serveSnapshot({ backupToken: value.token, slot, address: server.address, nodeId: value.nodeId });
      return unframe<SnapshotHeader>(out, 'snapshot', isSnapshotHeader);
    };
    return { got, value, put, remove, askSnapshot, tries: () => calls };
  };
  const ctx = epochScope(3).context;
  return { replicator, task, backup, ctx, owner, addresses };
}

describe('Replicator', () => {
  it('with no backup an update resolves at once, numbered after the state it started from', async () => {
    const { replicator, ctx } = await setup();
    expect(await replicator.update(ctx, bytes('x'))).toEqual({ epoch: 3, seq: 6, data: bytes('x') });
    expect((await replicator.update(ctx, bytes('y'))).seq).toBe(7);
    expect(replicator.lastSeq).toBe(7);
  });

  it('an update waits for a backup that has not asked for its snapshot yet; the snapshot then holds it and it is not sent again', async () => {
    const { replicator, backup, ctx, task } = await setup();
    const b = await backup(0);
    b.put();
    task.state = bytes('S');
    const first = track(replicator.update(ctx, bytes('u6')));
    await turn();
    expect(first.state.settled).toBe(false);
    const { header, body } = await b.askSnapshot();
    expect(header).toMatchObject({ primaryToken: '10', incarnation: 2, seq: 6, total: 1 });
    expect(text(body)).toBe('S');
    expect(await first.promise).toMatchObject({ seq: 6 });
    expect(b.got).toEqual([]);
    // From the snapshot's seq on, every update goes to it.
    await replicator.update(ctx, bytes('u7'));
    expect(b.got.map((l) => [l.seq, text(l.data)])).toEqual([[7, 'u7']]);
  });

  it('two backups whose slot locks have the same token (Kubernetes counts tokens per lock) are two peers, each sent every update', async () => {
    const { replicator, backup, ctx } = await setup();
    const b0 = await backup(0, undefined, '1');
    const b1 = await backup(1, undefined, '1');
    b0.put();
    b1.put();
    await b0.askSnapshot();
    await b1.askSnapshot();
    expect(replicator.inSync).toBe(2);
    await replicator.update(ctx, bytes('u6'));
    expect(b0.got.map((l) => l.seq)).toEqual([6]);
    expect(b1.got.map((l) => l.seq)).toEqual([6]);
    // One of them going leaves the other in.
    b0.remove();
    await replicator.update(ctx, bytes('u7'));
    expect(b1.got.map((l) => l.seq)).toEqual([6, 7]);
    expect(replicator.backups.map((b) => b.slot)).toEqual([1]);
  });

  /** A primary whose one backup is in sync but stalls, and an update waiting on it. */
  async function stalledUpdate() {
    const parts = await setup();
    const b = await parts.backup(0, () => {
      throw new TaskGraphError('UNAVAILABLE', 'stalled');
    });
    b.put();
    await b.askSnapshot();
    const u = track(parts.replicator.update(parts.ctx, bytes('x')));
    await eventually('the update tried', () => b.tries() > 0);
    return { ...parts, b, u };
  }

  it('a backup whose record goes is dropped: an update waiting on it resolves', async () => {
    const { replicator, b, u } = await stalledUpdate();
    expect(u.state.settled).toBe(false);
    b.remove();
    expect(await u.promise).toMatchObject({ seq: 6 });
    expect(replicator.backups).toEqual([]);
  });

  it('an update in flight when the primary stops replicating (it left) rejects with LeaseLost, not acknowledged', async () => {
    const { replicator, u } = await stalledUpdate();
    replicator.close();
    const err = await u.promise.catch((e: unknown) => e);
    expect(TaskGraphError.is(err, 'LEASE_LOST')).toBe(true);
  });

  it('a backup that follows a newer primary makes the update reject with LeaseLost', async () => {
    const { replicator, backup, ctx } = await setup();
    const b = await backup(0, () => {
      throw new TaskGraphError('NOT_OWNER', 'deposed', { details: { reason: 'deposed' } });
    });
    b.put();
    await b.askSnapshot();
    const err = await replicator.update(ctx, bytes('x')).catch((e: unknown) => e);
    expect(TaskGraphError.is(err, 'LEASE_LOST')).toBe(true);
  });

  it('refuses to hand out a seq once the primary lost its lease, and an oversized update', async () => {
    const { replicator, ctx, owner } = await setup({ maxMessageBytes: 80 * 1024 });
    const big = await replicator.update(ctx, new Uint8Array(100 * 1024)).catch((e: unknown) => e);
    expect(TaskGraphError.is(big, 'INVALID_ARGUMENT')).toBe(true);
    owner.lost = true;
    expect(TaskGraphError.is(await replicator.update(ctx, bytes('x')).catch((e: unknown) => e), 'LEASE_LOST')).toBe(true);
    expect(replicator.lastSeq).toBe(5);
  });

  it('a snapshot larger than one message is served in pieces, and the pieces are released after the last', async () => {
    const { replicator, backup, task } = await setup({ maxMessageBytes: 80 * 1024 });
    task.state = Uint8Array.from({ length: 200 * 1024 }, (_, i) => i % 251);
    const b = await backup(0);
    const { header, body } = await b.askSnapshot();
    expect(header.total).toBe(200 * 1024);
    expect(body.length).toBe(64 * 1024);
    const parts = [body];
    for (let offset = body.length; offset < header.total; ) {
      const piece = replicator.serveChunk(header.id, offset);
      parts.push(piece);
      offset += piece.length;
    }
    const whole = new Uint8Array(header.total);
    let at = 0;
    for (const p of parts) {
      whole.set(p, at);
      at += p.length;
    }
    expect(whole).toEqual(task.state);
    expect(() => replicator.serveChunk(header.id, 0)).toThrow('no snapshot');
  });
});
