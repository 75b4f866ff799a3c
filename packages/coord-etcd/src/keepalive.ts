/**
 * The Lease keepalive streams of one coordinator, pooled across its sessions.
 *
 * etcd answers the keepalives on one stream one at a time, in order, and since
 * 3.4.20 a renewal on the leader first waits (up to a second) for the applied index
 * to catch up with the committed one (etcd PR 13690). Under write load that wait is
 * hundreds of milliseconds, so keepalives queued on one stream wait for each
 * other: one stream for a host's 74 sessions left the last of them unanswered for
 * 9 s, and every session was lost (issue 18100 in etcd describes the same for the
 * Go client). A stream per session avoids that but keeps one idle HTTP/2 stream,
 * and a goroutine in etcd, per session forever.
 *
 * So a stream carries at most one keepalive at a time: a keepalive takes an idle
 * stream, or opens one when none is idle, and gives it back when answered. The
 * pool grows to the number of keepalives in flight at once (no more than the
 * sessions) and keeps idle streams for reuse; one idle for `idleMs` is closed.
 * Every keepalive is independent of the others, and the answer on a stream is
 * always for the one keepalive it carries.
 */
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { ClosedError } from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';
import { closeStream } from './watch.js';

export type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** An idle stream unused this long is closed (the next burst of keepalives opens what it needs). */
export const DEFAULT_KEEPALIVE_IDLE_MS = 60_000;

interface Waiter {
  readonly id: string;
  resolve(res: ILeaseKeepAliveResponse): void;
  reject(err: unknown): void;
  /** Answered, failed or given up already. */
  settled: boolean;
}

interface Pooled {
  readonly stream: KeepAliveStream;
  /** The keepalive this stream carries, until it is answered. */
  waiter: Waiter | undefined;
  /** When it was last given back (idle streams only). */
  idleSince: number;
  dead: boolean;
}

/** A keepalive written for one lease; `answer` settles with etcd's answer or the stream's failure. */
export interface KeepAlive {
  readonly answer: Promise<ILeaseKeepAliveResponse>;
  /**
   * The renewal stopped waiting (its timeout passed, or its session ended):
   * `answer` fails with `reason` now, and the stream is closed, so no answer is
   * left to come on a stream that is used again (and one that swallows
   * keepalives is not used again).
   */
  abandon(reason: unknown): void;
}

export class KeepAlivePool {
  readonly #open: () => Promise<KeepAliveStream>;
  readonly #clock: Clock;
  readonly #idleMs: number;
  /** Streams with no keepalive in flight, the most recently used last. */
  readonly #idle: Pooled[] = [];
  readonly #busy = new Set<Pooled>();
  #opened = 0;
  #closed = false;

  constructor(open: () => Promise<KeepAliveStream>, clock: Clock, idleMs = DEFAULT_KEEPALIVE_IDLE_MS) {
    this.#open = open;
    this.#clock = clock;
    this.#idleMs = idleMs;
  }

  /** Streams open now, idle or carrying a keepalive. */
  get streams(): number {
    return this.#idle.length + this.#busy.size;
  }

  /** Streams opened since the pool was made. */
  get opened(): number {
    return this.#opened;
  }

  /**
   * Writes one keepalive for lease `id` on a stream of its own. `wanted` is asked
   * once the stream is there: a renewal that gave up while one opened sends
   * nothing (the stream goes to the pool).
   */
  async send(id: string, wanted: () => boolean): Promise<KeepAlive> {
    if (this.#closed) throw new ClosedError('the keepalive pool is closed');
    this.#closeIdle();
    const pooled = this.#idle.pop() ?? (await this.#openStream());
    if (pooled.dead) throw new Error('the keepalive stream failed as it opened');
    if (!wanted()) {
      this.#giveBack(pooled);
      throw new Error('the keepalive stream opened after its renewal gave up');
    }
    let waiter!: Waiter;
    const answer = new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      waiter = { id, resolve, reject, settled: false };
    });
    pooled.waiter = waiter;
    this.#busy.add(pooled);
    pooled.stream.write({ ID: id });
    return {
      answer,
      abandon: (reason) => {
        if (waiter.settled) return;
        waiter.settled = true;
        waiter.reject(reason);
        if (pooled.waiter === waiter) this.#kill(pooled, reason);
      },
    };
  }

  /** Closes every stream; keepalives still waiting fail with a ClosedError. */
  close(): void {
    this.#closed = true;
    const reason = new ClosedError('the keepalive pool is closed');
    for (const pooled of [...this.#busy, ...this.#idle]) this.#kill(pooled, reason);
  }

  async #openStream(): Promise<Pooled> {
    const stream = await this.#open();
    this.#opened++;
    const pooled: Pooled = { stream, waiter: undefined, idleSince: 0, dead: false };
    if (this.#closed) {
      this.#kill(pooled, new ClosedError('the keepalive pool closed while a stream opened'));
      throw new ClosedError('the keepalive pool closed while a stream opened');
    }
    stream.on('data', (res: ILeaseKeepAliveResponse) => this.#onAnswer(pooled, res));
    stream.on('error', (err: Error) => this.#kill(pooled, err));
    stream.on('end', () => this.#kill(pooled, new Error('etcd ended the keepalive stream')));
    return pooled;
  }

  #onAnswer(pooled: Pooled, res: ILeaseKeepAliveResponse): void {
    if (pooled.dead) return;
    const waiter = pooled.waiter;
    if (waiter === undefined || String(res.ID) !== waiter.id) {
      // Not the answer to what this stream carries: nothing it says can be trusted.
      this.#kill(pooled, new Error(`etcd answered a keepalive for lease ${String(res.ID)} on a stream that carried ${waiter?.id ?? 'none'}`));
      return;
    }
    pooled.waiter = undefined;
    this.#giveBack(pooled);
    waiter.settled = true;
    waiter.resolve(res);
  }

  #giveBack(pooled: Pooled): void {
    this.#busy.delete(pooled);
    if (pooled.dead) return;
    if (this.#closed) {
      this.#kill(pooled, new ClosedError('the keepalive pool is closed'));
      return;
    }
    pooled.idleSince = this.#clock.now();
    this.#idle.push(pooled);
  }

  /** Closes the idle streams unused for `idleMs` (the least recently used are first). */
  #closeIdle(): void {
    const cutoff = this.#clock.now() - this.#idleMs;
    while (this.#idle.length > 0 && this.#idle[0]!.idleSince < cutoff) this.#kill(this.#idle[0]!, new Error('idle'));
  }

  /** Closes the stream; the keepalive it carries, if any is still waited for, fails with `reason`. */
  #kill(pooled: Pooled, reason: unknown): void {
    if (pooled.dead) return;
    pooled.dead = true;
    this.#busy.delete(pooled);
    const i = this.#idle.indexOf(pooled);
    if (i >= 0) this.#idle.splice(i, 1);
    closeStream(pooled.stream);
    const waiter = pooled.waiter;
    pooled.waiter = undefined;
    if (waiter !== undefined && !waiter.settled) {
      waiter.settled = true;
      waiter.reject(reason);
    }
  }
}
