/**
 * watch(prefix): key changes in revision order, gap-free or CompactedError.
 *
 * The stream below reconnects by itself (see watch-stream.ts). On top of that, this
 * keeps a shadow of the prefix's state (each key's version and the version it
 * replaced) and checks every change against it: a MODIFIED must replace the version
 * last seen, an ADDED must be of a key not present, a DELETED must remove the last
 * state seen. A broken chain means a change was never received (@kubernetes/client-
 * node drops a line it cannot parse without a word). The watch then lists the prefix
 * at exactly the last delivered revision: if that state equals the shadow, nothing
 * before it was lost and the stream resumes from it, delivering the lost change in
 * order; otherwise the loss lies behind what was already delivered and the watch
 * throws CompactedError, so the caller re-lists. A loss with no later change of the
 * same key is caught by the same comparison, run every `auditIntervalMs`.
 */
import { CompactedError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, TimerHandle, WatchBatch, WatchEvent } from '@taskgraph/api';
import { Backoff, pause } from '@taskgraph/backend-kit';
import { decodeKey, type StoredKey } from './codec.js';
import { isTransient } from './kube.js';
import type { KubeApi } from './kube.js';
import { WatchStream, type StreamItem } from './watch-stream.js';

export interface KeyWatchOptions {
  readonly api: KubeApi;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly keyPrefix: string;
  readonly labelSelector: string;
  readonly after: string | undefined;
  readonly signal: AbortSignal;
  /** The coordinator's close: the watch then ends, as when `signal` aborts. */
  readonly closed: AbortSignal;
  readonly timeoutSeconds: () => number;
  readonly idleTimeoutMs: number;
  /** How often an idle watch checks its shadow against the server; 0: never. */
  readonly auditIntervalMs: number;
}

interface Shadow {
  readonly version: string;
  readonly prev: string | undefined;
}

type Verdict = 'ok' | 'gap';

class KeyWatch {
  private readonly shadow = new Map<string, Shadow>();
  /** The revision of the last batch delivered (or the start): the consumer's resume point. */
  private frontier = '';
  /**
   * The revision of the last item handled (any event, or a bookmark): every change up to
   * it has either been applied to the shadow or was never received.
   */
  private handled = '';
  private stream: WatchStream | undefined;
  /** A change the server delivered again at the same place after a check: not a loss. */
  private acceptedBreak: string | undefined;
  private auditTimer: TimerHandle | undefined;
  private auditDue = false;
  /** Aborts when the caller's signal or the coordinator's close does: the watch ends without error. */
  private readonly ended = new AbortController();

  constructor(private readonly o: KeyWatchOptions) {}

  async *run(): AsyncGenerator<WatchBatch> {
    const { signal, closed } = this.o;
    if (signal.aborted || closed.aborted) return;
    const stop = () => {
      this.ended.abort();
      this.stream?.stop();
    };
    signal.addEventListener('abort', stop, { once: true });
    closed.addEventListener('abort', stop, { once: true });
    try {
      await this.start();
      this.armAudit();
      while (true) {
        const stream = this.stream;
        if (stream === undefined || this.ended.signal.aborted) return;
        for await (const item of stream) {
          const batch = await this.handle(item);
          if (batch !== undefined) yield batch;
          if (this.auditDue) await this.audit();
          if (this.stream !== stream) break;
        }
        // The stream ended without being replaced: stopped by the signal or by close.
        if (this.stream === stream) return;
      }
    } catch (err) {
      // Whatever failed while the watch was being ended (a request cut by close) is no news.
      if (this.ended.signal.aborted) return;
      throw err;
    } finally {
      signal.removeEventListener('abort', stop);
      closed.removeEventListener('abort', stop);
      if (this.auditTimer !== undefined) this.o.clock.clearTimeout(this.auditTimer);
      this.stream?.stop();
    }
  }

  private async start(): Promise<void> {
    const { api, after } = this.o;
    // The shadow starts from the state at the starting revision: exactly `after`, or now.
    let list;
    try {
      list = await this.retrying(() =>
        api.listConfigMaps(after === undefined ? { labelSelector: this.o.labelSelector } : { labelSelector: this.o.labelSelector, resourceVersion: after, exact: true }),
      );
    } catch (err) {
      if (TaskGraphError.is(err, 'COMPACTED')) {
        throw new CompactedError(`cannot watch ${JSON.stringify(this.o.keyPrefix)} after revision ${after ?? ''}: it is older than the history the API server keeps; list again and watch after the new revision`, { cause: err });
      }
      throw err;
    }
    for (const item of list.items) {
      const k = decodeKey(item);
      if (k !== undefined && k.key.startsWith(this.o.keyPrefix)) this.shadow.set(k.key, { version: k.version, prev: k.prev });
    }
    this.frontier = after ?? list.metadata?.resourceVersion ?? '';
    this.handled = this.frontier;
    this.openStream();
  }

  private async handle(item: StreamItem): Promise<WatchBatch | undefined> {
    if (item.kind === 'tick') return undefined;
    if (item.kind === 'bookmark') {
      this.handled = item.rv;
      return undefined;
    }
    if (item.kind === 'expired') {
      throw new CompactedError(`the watch of ${JSON.stringify(this.o.keyPrefix)} fell behind the history the API server keeps (${item.message}); list again and watch after the new revision`);
    }
    const stored = decodeKey(item.object);
    if (stored === undefined || !stored.key.startsWith(this.o.keyPrefix)) {
      this.handled = item.rv;
      return undefined;
    }
    if (this.check(item.type, stored) === 'gap') {
      if (this.acceptedBreak === item.rv) {
        this.o.logger.warn('a key changed without TaskGraph\'s version chain (written by another tool?); accepting it', { key: stored.key, version: stored.version });
      } else {
        await this.recover(stored.key, item.rv);
        return undefined;
      }
    }
    this.acceptedBreak = undefined;
    let event: WatchEvent;
    if (item.type === 'DELETED') {
      this.shadow.delete(stored.key);
      event = { type: 'delete', key: stored.key };
    } else {
      this.shadow.set(stored.key, { version: stored.version, prev: stored.prev });
      event = { type: 'put', key: stored.key, value: stored.value, version: stored.version };
    }
    this.frontier = item.rv;
    this.handled = item.rv;
    return { revision: item.rv, events: [event] };
  }

  private check(type: 'ADDED' | 'MODIFIED' | 'DELETED', k: StoredKey): Verdict {
    const seen = this.shadow.get(k.key);
    if (type === 'ADDED') return seen === undefined ? 'ok' : 'gap';
    if (seen === undefined) return 'gap';
    // A DELETED event carries the last state: it must be the state last seen.
    if (type === 'DELETED') return k.prev === seen.prev ? 'ok' : 'gap';
    return k.prev === seen.version ? 'ok' : 'gap';
  }

  /** The server's state of the prefix at exactly `revision` against the shadow ('unknown': too old to read). */
  private async compareWithServer(revision: string): Promise<'same' | 'different' | 'unknown'> {
    let list;
    try {
      list = await this.retrying(() => this.o.api.listConfigMaps({ labelSelector: this.o.labelSelector, resourceVersion: revision, exact: true }));
    } catch (err) {
      if (TaskGraphError.is(err, 'COMPACTED')) return 'unknown';
      throw err;
    }
    let count = 0;
    for (const item of list.items) {
      const k = decodeKey(item);
      if (k === undefined || !k.key.startsWith(this.o.keyPrefix)) continue;
      count++;
      if (this.shadow.get(k.key)?.version !== k.version) return 'different';
    }
    return count === this.shadow.size ? 'same' : 'different';
  }

  private async recover(key: string, rv: string): Promise<void> {
    this.o.logger.warn('a watch line was lost (the version chain of a key broke); checking what was delivered', { key, frontier: this.frontier, at: rv });
    this.stream?.stop();
    // Nothing delivered after the frontier: is the state there the one delivered?
    if ((await this.compareWithServer(this.frontier)) !== 'same') {
      throw new CompactedError(
        `the watch of ${JSON.stringify(this.o.keyPrefix)} lost a change before revision ${this.frontier} (a watch line never arrived); list again and watch after the new revision`,
      );
    }
    this.acceptedBreak = rv;
    this.handled = this.frontier;
    this.openStream();
  }

  /** Follows the prefix from the frontier (unless the watch is ending). */
  private openStream(): void {
    if (this.ended.signal.aborted) return;
    this.stream = new WatchStream({
      api: this.o.api,
      resource: 'configmaps',
      labelSelector: this.o.labelSelector,
      from: this.frontier,
      clock: this.o.clock,
      logger: this.o.logger,
      timeoutSeconds: this.o.timeoutSeconds,
      idleTimeoutMs: this.o.idleTimeoutMs,
    });
  }

  /**
   * Runs a request until it gets an answer that is not a transient failure: a watch
   * retries those inside, as the contract says, until its signal or close ends it.
   */
  private async retrying<T>(request: () => Promise<T>): Promise<T> {
    // 100, 200, 400 ... 5000 ms.
    const backoff = new Backoff(100, 5000, () => 1);
    for (;;) {
      try {
        return await request();
      } catch (err) {
        if (!isTransient(err) || this.ended.signal.aborted) throw err;
        this.o.logger.debug('a watch request failed; retrying', { prefix: this.o.keyPrefix, error: String(err) });
        await pause(this.o.clock, backoff.next(), this.ended.signal);
        if (this.ended.signal.aborted) throw err;
      }
    }
  }

  private armAudit(): void {
    if (this.o.auditIntervalMs <= 0) return;
    this.auditTimer = this.o.clock.setTimeout(() => {
      this.auditDue = true;
      this.stream?.tick();
    }, this.o.auditIntervalMs);
    this.auditTimer.unref?.();
  }

  private async audit(): Promise<void> {
    this.auditDue = false;
    // Every change up to the last item handled was delivered, unless its line was lost.
    // (When that revision is already compacted there is nothing to compare with.)
    if ((await this.compareWithServer(this.handled)) === 'different') {
      throw new CompactedError(
        `the watch of ${JSON.stringify(this.o.keyPrefix)} found its state different from the server's at revision ${this.frontier} (a watch line never arrived); list again and watch after the new revision`,
      );
    }
    this.armAudit();
  }
}

/** The iterable behind Coordinator.watch. */
export function watchKeys(o: KeyWatchOptions): AsyncIterable<WatchBatch> {
  return {
    [Symbol.asyncIterator]: () => new KeyWatch(o).run()[Symbol.asyncIterator](),
  };
}

