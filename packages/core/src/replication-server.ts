/**
 * Serves the framework's own replication methods on the node's transport server:
 * updates to the backup this node holds, snapshots from the primary it runs. Each
 * is checked like an application request (the target task, the role's token, a
 * live session) but not by epoch: replication crosses epochs, and its fencing is
 * the primary's token inside the message.
 */
import { NotOwnerError } from '@taskgraph/api';
import type { InboundRequest } from '@taskgraph/api';
import type { BackupTask } from './backup-task.js';
import { METHODS, isChunkRequest, isSnapshotRequest, unframe, unframeUpdate } from './replication-wire.js';
import type { ChunkRequest, SnapshotRequest } from './replication-wire.js';
import type { Replicator } from './replicator.js';

export interface ReplicationView {
  /** The task this node runs as primary, with its replicator. */
  primary(): { readonly id: number; readonly token: string; readonly replicator: Replicator } | undefined;
  /** The task this node holds as a backup. */
  backup(): BackupTask | undefined;
  sessionLost(): boolean;
}

export function replicationHandler(view: ReplicationView): (req: InboundRequest) => Promise<Uint8Array> {
  return async (req) => {
    const m = req.meta;
    if (req.method === METHODS.update) {
      const backup = view.backup();
      if (!backup || backup.id !== m.to || backup.token !== m.token || view.sessionLost()) {
        throw new NotOwnerError(`this node holds no backup of task ${m.to} with token ${m.token}`, { details: { task: m.to } });
      }
      const { header, body } = unframeUpdate(req.payload);
      return backup.handleUpdate(header, body);
    }
    const primary = view.primary();
    if (!primary || primary.id !== m.to || primary.token !== m.token || view.sessionLost()) {
      throw new NotOwnerError(`this node is not the primary of task ${m.to} with token ${m.token}`, { details: { task: m.to } });
    }
    if (req.method === METHODS.snapshot) {
      const { header } = unframe<SnapshotRequest>(req.payload, 'snapshot request', isSnapshotRequest);
      return primary.replicator.serveSnapshot(header);
    }
    const { header } = unframe<ChunkRequest>(req.payload, 'snapshot chunk request', isChunkRequest);
    return primary.replicator.serveChunk(header.id, header.offset);
  };
}
