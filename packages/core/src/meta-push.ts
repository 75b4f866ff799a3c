/**
 * The meta fast path: `flagMeta` hands each meta straight to its receiver's current
 * node over the transport, beside the store copy. The push saves the store's
 * write-then-watch round trip; the store copy stays the record of truth, the one a
 * new incarnation of the receiver reads. Neither path alone decides delivery: the
 * receiver's inbox delivers whichever arrives first, once.
 *
 * Why a push is as safe as a record: a record is tied to the sender's session and
 * vanishes with it, so a meta from an incarnation that then dies can be delivered by
 * the store path too, and the receiver drops pushes from a sender it knows replaced,
 * as it drops such records. A push is checked on arrival like any request (the
 * receiver's task and token, a live session) and is never retried: a lost push costs
 * only the store path's latency.
 */
import { DecodeFailedError, NotOwnerError } from '@taskgraph/api';
import type { InboundRequest } from '@taskgraph/api';
import { INTERNAL_PREFIX } from './replication-wire.js';

/** Sender -> receiver's node: one meta. */
export const META_PUSH_METHOD = `${INTERNAL_PREFIX}meta`;

export interface MetaPush {
  /** The sender's fencing token (the request's own token names the receiver). */
  readonly senderToken: string;
  readonly linkType: string;
  readonly meta: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export function encodeMetaPush(push: MetaPush): Uint8Array {
  return enc.encode(JSON.stringify(push));
}

export function decodeMetaPush(bytes: Uint8Array): MetaPush {
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(bytes));
  } catch (err) {
    throw new DecodeFailedError(`meta push: not UTF-8 JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof v !== 'object' || v === null) throw new DecodeFailedError('meta push: not an object');
  const { senderToken, linkType, meta } = v as Record<string, unknown>;
  if (typeof senderToken !== 'string' || !/^\d{1,30}$/.test(senderToken)) throw new DecodeFailedError('meta push: bad senderToken');
  if (typeof linkType !== 'string' || !/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(linkType)) throw new DecodeFailedError('meta push: bad linkType');
  if (typeof meta !== 'string') throw new DecodeFailedError('meta push: bad meta');
  return { senderToken, linkType, meta };
}

/** The task a node runs, as the push handler sees it. */
export interface PushReceiver {
  readonly id: number;
  readonly token: string;
  /** True once the task has started (becamePrimary and its first epoch are queued). */
  readonly begun: boolean;
  receivePush(epoch: number, from: number, push: MetaPush): void;
}

export interface MetaPushView {
  primary(): PushReceiver | undefined;
  sessionLost(): boolean;
  readonly maxMetaBytes: number;
}

/** Serves `META_PUSH_METHOD` on a node's transport server. */
export function metaPushHandler(view: MetaPushView): (req: InboundRequest) => Promise<Uint8Array> {
  return (req) => {
    const m = req.meta;
    const task = view.primary();
    // Before the task began, a push could overtake its becamePrimary: refused, the store copy follows it.
    if (!task || !task.begun || task.id !== m.to || task.token !== m.token || view.sessionLost()) {
      return Promise.reject(new NotOwnerError(`this node does not run task ${m.to} with token ${m.token}`, { details: { task: m.to } }));
    }
    try {
      const push = decodeMetaPush(req.payload);
      if (enc.encode(push.meta).length > view.maxMetaBytes) throw new DecodeFailedError(`meta push: the meta is over the ${view.maxMetaBytes}-byte limit`);
      task.receivePush(m.epoch, m.from, push);
    } catch (err) {
      return Promise.reject(err);
    }
    return Promise.resolve(new Uint8Array(0));
  };
}
