/**
 * A watch that survives @kubernetes/client-node's Watch and the network: it follows
 * one collection from a resourceVersion, and whenever the stream ends (the server's
 * timeout, a proxy cutting an idle connection, a reset) or goes silent for too long,
 * it reconnects from the last resourceVersion it saw, which bookmarks advance. A
 * partial last line, which the client drops silently when a connection is cut, is
 * thereby received again. What it cannot repair it reports: a 410 Expired.
 */
import type { Agent } from 'node:http';
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { InternalError, TaskGraphError } from '@taskgraph/api';
import type { Clock, Logger, TimerHandle } from '@taskgraph/api';
import { Backoff } from '@taskgraph/backend-kit';
import { untrustedServerError, type KubeApi } from './kube.js';

export interface KubeObject {
  readonly metadata?: {
    readonly name?: string;
    readonly resourceVersion?: string;
    readonly uid?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
  };
}

export type StreamItem =
  | { readonly kind: 'event'; readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'; readonly object: KubeObject; readonly rv: string }
  | { readonly kind: 'bookmark'; readonly rv: string }
  /** The resourceVersion to resume from is gone (410 Expired): the stream has stopped. */
  | { readonly kind: 'expired'; readonly message: string }
  /** Wakes the consumer (a timer of its own fired). */
  | { readonly kind: 'tick' };

export interface WatchStreamOptions {
  readonly api: KubeApi;
  readonly resource: 'configmaps' | 'leases';
  readonly labelSelector: string;
  /** The resourceVersion to start after. */
  readonly from: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The timeoutSeconds asked of the server for each connection. */
  readonly timeoutSeconds: () => number;
  /** Reconnect when nothing (not even a bookmark) arrived for this long. */
  readonly idleTimeoutMs: number;
}

/** One followed collection; iterate it for events. `stop()` ends the iteration. */
export class WatchStream implements AsyncIterable<StreamItem> {
  /** The newest resourceVersion seen (events and bookmarks): where a reconnect resumes. */
  lastRv: string;
  private readonly queue: StreamItem[] = [];
  private wake: (() => void) | undefined;
  private stopped = false;
  private generation = 0;
  private controller: AbortController | undefined;
  /** The connection's own agent: destroying it ends the connection even before the server answered. */
  private agent: Agent | undefined;
  private idleTimer: TimerHandle | undefined;
  private retryTimer: TimerHandle | undefined;
  /** Delays before reconnecting after failures: 200 ms doubling to 5 s, jittered; reset by any line received. */
  private readonly backoff = new Backoff(200, 5000);
  private fatal: unknown;

  constructor(private readonly o: WatchStreamOptions) {
    this.lastRv = o.from;
    this.connect();
  }

  /** Wakes the consumer with a `tick` item. */
  tick(): void {
    if (!this.stopped) this.push({ kind: 'tick' });
  }

  /** Ends the stream and its connection; a pending iteration finishes. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.disconnect();
    this.queue.length = 0;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamItem> {
    while (true) {
      const item = this.queue.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.fatal !== undefined) throw this.fatal;
      if (this.stopped) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  private push(item: StreamItem): void {
    this.queue.push(item);
    this.wake?.();
  }

  private disconnect(): void {
    this.generation++;
    this.controller?.abort();
    this.controller = undefined;
    // The client's Watch hands out its AbortController only once the server has answered;
    // a request still waiting for headers (a partition) is ended through its agent instead.
    this.agent?.destroy();
    this.agent = undefined;
    if (this.idleTimer !== undefined) this.o.clock.clearTimeout(this.idleTimer);
    if (this.retryTimer !== undefined) this.o.clock.clearTimeout(this.retryTimer);
    this.idleTimer = undefined;
    this.retryTimer = undefined;
  }

  private armIdle(generation: number): void {
    if (this.idleTimer !== undefined) this.o.clock.clearTimeout(this.idleTimer);
    this.idleTimer = this.o.clock.setTimeout(() => {
      if (generation !== this.generation) return;
      this.o.logger.debug('watch went silent; reconnecting', { resource: this.o.resource, from: this.lastRv });
      this.reconnect(true);
    }, this.o.idleTimeoutMs);
    this.idleTimer.unref?.();
  }

  private reconnect(failed: boolean): void {
    if (this.stopped) return;
    this.disconnect();
    const delay = failed ? this.backoff.next() : 0;
    const generation = this.generation;
    this.retryTimer = this.o.clock.setTimeout(() => {
      if (generation === this.generation) this.connect();
    }, delay);
    this.retryTimer.unref?.();
  }

  private connect(): void {
    if (this.stopped) return;
    const generation = ++this.generation;
    let received = false;
    const watch = new Watch(this.connectionConfig(generation));
    const query = {
      resourceVersion: this.lastRv,
      allowWatchBookmarks: true,
      labelSelector: this.o.labelSelector,
      timeoutSeconds: this.o.timeoutSeconds(),
    };
    this.armIdle(generation);
    const onLine = (type: string, object: unknown): void => {
      if (generation !== this.generation) return;
      received = true;
      this.backoff.reset();
      this.armIdle(generation);
      const obj = (object ?? {}) as KubeObject & { code?: number; reason?: string; message?: string };
      if (type === 'BOOKMARK') {
        const rv = obj.metadata?.resourceVersion;
        if (rv) {
          this.lastRv = rv;
          this.push({ kind: 'bookmark', rv });
        }
        return;
      }
      if (type === 'ERROR') {
        if (obj.code === 410) {
          this.disconnect();
          this.push({ kind: 'expired', message: obj.message ?? 'resourceVersion expired' });
          this.stopped = true;
          return;
        }
        this.o.logger.debug('watch ERROR event; reconnecting', { resource: this.o.resource, code: obj.code, message: obj.message });
        this.reconnect(true);
        return;
      }
      if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
      const rv = obj.metadata?.resourceVersion;
      if (!rv) return;
      this.lastRv = rv;
      this.push({ kind: 'event', type, object: obj, rv });
    };
    const onDone = (err: unknown): void => {
      if (generation !== this.generation) return;
      const status = (err as { statusCode?: number } | null)?.statusCode;
      if (status === 410) {
        this.disconnect();
        this.stopped = true;
        this.push({ kind: 'expired', message: 'resourceVersion expired (HTTP 410)' });
        return;
      }
      const untrusted = untrustedServerError(err, this.o.api.server);
      if (untrusted !== undefined) {
        this.fail(untrusted);
        return;
      }
      if (status === 401 || status === 403 || status === 400 || status === 404 || status === 422) {
        this.fail(new InternalError(`the watch of ${this.o.resource} was refused with HTTP ${status}: check the kubeconfig, namespace and Role`, { cause: err }));
        return;
      }
      // A clean end right after a working stream is the server's timeout: resume at once.
      this.reconnect(err !== null && err !== undefined ? true : !received);
    };
    watch
      .watch(this.o.api.collectionPath(this.o.resource), query, onLine, onDone)
      .then((controller) => {
        if (generation !== this.generation || this.stopped) controller.abort();
        else this.controller = controller;
      })
      .catch((err: unknown) => {
        if (generation !== this.generation) return;
        const untrusted = untrustedServerError(err, this.o.api.server);
        if (untrusted !== undefined) {
          this.fail(untrusted);
          return;
        }
        this.o.logger.warn('could not start a watch', { resource: this.o.resource, error: String(err) });
        this.reconnect(true);
      });
  }

  /**
   * The kubeconfig as the Watch sees it, except that the agent it makes for this
   * connection (client-node makes one per request) is kept, so that it can be destroyed.
   */
  private connectionConfig(generation: number): KubeConfig {
    const base = this.o.api.kubeConfig;
    const config = Object.create(base) as KubeConfig;
    config.applyToFetchOptions = async (opts) => {
      const options = await base.applyToFetchOptions(opts);
      const agent = options.agent as Agent | undefined;
      if (generation === this.generation) this.agent = agent;
      else agent?.destroy();
      return options;
    };
    return config;
  }

  private fail(err: unknown): void {
    this.fatal = TaskGraphError.is(err) ? err : new InternalError(String(err), { cause: err });
    this.stopped = true;
    this.disconnect();
    this.wake?.();
  }
}
