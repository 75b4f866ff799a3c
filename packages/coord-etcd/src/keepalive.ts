/**
 * One Lease keepalive stream per coordinator, shared by all of its sessions.
 *
 * etcd's LeaseKeepAlive stream takes keepalives for any lease and answers each with
 * the lease's ID, in the order it received them (the server handles one request at
 * a time per stream). So a coordinator with many sessions (a node host runs one per
 * node) needs one stream, not one per session: answers are dispatched by lease ID,
 * first in first out per ID. A keepalive whose renewal stopped waiting keeps its
 * place in its lease's queue, so its late answer is dropped rather than taken for
 * the next renewal's (whose deadline counts from a later send time).
 *
 * A stream that fails or ends fails every keepalive waiting on it; the next
 * keepalive opens a new one (on a cluster it may reach another member).
 */
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { ClosedError } from '@taskgraph/api';
import { closeStream } from './watch.js';

export type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

interface Waiter {
  resolve(res: ILeaseKeepAliveResponse): void;
  reject(err: unknown): void;
  /** The renewal stopped waiting: the answer, when it comes, is dropped. */
  abandoned: boolean;
  /** How many answers the stream had given when this keepalive was written. */
  answersAtSend: number;
  stream: KeepAliveStream;
}

/** A keepalive written for one lease; `answer` settles with etcd's answer or the stream's failure. */
export interface KeepAlive {
  readonly answer: Promise<ILeaseKeepAliveResponse>;
  /**
   * The renewal stopped waiting: its answer, when it comes, is dropped, and `answer`
   * fails with `reason` now. With `stalled` (its timeout passed), a stream that has
   * answered nothing since this keepalive was written is replaced, and the other
   * keepalives waiting on it fail with `reason` too.
   */
  abandon(reason: unknown, stalled?: boolean): void;
}

export class KeepAliveChannel {
  readonly #open: () => Promise<KeepAliveStream>;
  #stream: KeepAliveStream | undefined;
  #opening: Promise<KeepAliveStream> | undefined;
  /** Keepalives written on `#stream` and not yet answered, per lease ID, oldest first. */
  readonly #waiting = new Map<string, Waiter[]>();
  /** Answers read from `#stream`. */
  #answers = 0;
  #closed = false;

  constructor(open: () => Promise<KeepAliveStream>) {
    this.#open = open;
  }

  /** Sessions with a keepalive waiting for its answer (for tests and diagnostics). */
  get pending(): number {
    let n = 0;
    for (const queue of this.#waiting.values()) for (const w of queue) if (!w.abandoned) n++;
    return n;
  }

  /** Whether a stream is open now. */
  get open(): boolean {
    return this.#stream !== undefined;
  }

  /**
   * Writes one keepalive for lease `id`, opening the stream first if none is open.
   * `wanted` is asked once the stream is open: a renewal that gave up while it opened
   * sends nothing.
   */
  async send(id: string, wanted: () => boolean): Promise<KeepAlive> {
    if (this.#closed) throw new ClosedError('the keepalive channel is closed');
    const stream = this.#stream ?? (await this.#openStream());
    if (!wanted()) throw new Error('the keepalive stream opened after its renewal gave up');
    if (stream !== this.#stream) throw new Error('the keepalive stream failed as it opened');
    let waiter!: Waiter;
    const answer = new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      waiter = { resolve, reject, abandoned: false, answersAtSend: this.#answers, stream };
    });
    let queue = this.#waiting.get(id);
    if (queue === undefined) this.#waiting.set(id, (queue = []));
    queue.push(waiter);
    stream.write({ ID: id });
    return {
      answer,
      abandon: (reason, stalled = false) => {
        if (waiter.abandoned) return;
        waiter.abandoned = true;
        waiter.reject(reason);
        if (stalled && waiter.stream === this.#stream && this.#answers === waiter.answersAtSend) this.#drop(reason);
      },
    };
  }

  /** Closes the stream; keepalives still waiting fail with a ClosedError. */
  close(): void {
    this.#closed = true;
    this.#drop(new ClosedError('the keepalive channel is closed'));
  }

  /** One stream open at a time; a keepalive that timed out while it opened leaves it to the next. */
  #openStream(): Promise<KeepAliveStream> {
    this.#opening ??= this.#open().then(
      (stream) => {
        this.#opening = undefined;
        if (this.#closed) {
          closeStream(stream);
          throw new ClosedError('the keepalive channel closed while its stream opened');
        }
        this.#stream = stream;
        this.#answers = 0;
        stream.on('data', (res: ILeaseKeepAliveResponse) => this.#onAnswer(stream, res));
        stream.on('error', (err: Error) => {
          if (stream === this.#stream) this.#drop(err);
        });
        stream.on('end', () => {
          if (stream === this.#stream) this.#drop(new Error('etcd ended the keepalive stream'));
        });
        return stream;
      },
      (err: unknown) => {
        this.#opening = undefined;
        throw err;
      },
    );
    return this.#opening;
  }

  #onAnswer(stream: KeepAliveStream, res: ILeaseKeepAliveResponse): void {
    if (stream !== this.#stream) return;
    this.#answers++;
    const id = String(res.ID);
    const queue = this.#waiting.get(id);
    const waiter = queue?.shift();
    if (queue !== undefined && queue.length === 0) this.#waiting.delete(id);
    if (waiter !== undefined && !waiter.abandoned) waiter.resolve(res);
  }

  /** Closes the stream; every keepalive still waiting on it fails with `reason`. */
  #drop(reason: unknown): void {
    const stream = this.#stream;
    this.#stream = undefined;
    const waiting = [...this.#waiting.values()].flat();
    this.#waiting.clear();
    if (stream) closeStream(stream);
    for (const waiter of waiting) {
      if (waiter.abandoned) continue;
      waiter.abandoned = true;
      waiter.reject(reason);
    }
  }
}
