/**
 * `<job>/state/` as a node sees it: the epoch key goes to the epoch tracker, the
 * status key tells when the job is finished (a corrupt value is logged and
 * ignored: a node never dies of what someone wrote into the store), and a task's
 * `shutdownJob` marks the status done.
 */
import { wallNow } from '@taskgraph/api';
import type { Clock, Coordinator, Entry, Logger, WatchEvent } from '@taskgraph/api';
import type { EpochTracker } from './epoch.js';
import { decodeStatus, encodeJson, keys } from './layout.js';
import type { JobStatusValue } from './layout.js';
import { CorruptionLog } from './corruption.js';
import { casUpdate } from './store-ops.js';
import type { PrefixHandlers } from './watched-prefix.js';

export class JobState implements PrefixHandlers {
  private readonly epochKey: string;
  private readonly statusKey: string;
  private finished = false;
  private readonly corruption: CorruptionLog;

  constructor(
    job: string,
    private readonly epochs: Pick<EpochTracker, 'apply'>,
    logger: () => Logger,
    /** Called once, when the status first says the job is no longer running. */
    private readonly onFinished: (status: JobStatusValue) => void,
  ) {
    this.epochKey = keys.epoch(job);
    this.statusKey = keys.status(job);
    this.corruption = new CorruptionLog(logger);
  }

  /**
   * Marks the job done (unless it already is), on behalf of `by`. A corrupt status is
   * repaired: it is overwritten (by compare-and-set on the corrupt value's version).
   */
  static async markDone(
    coordinator: Coordinator,
    job: string,
    by: string,
    options: { clock: Clock; signal: AbortSignal; logger: Logger; onWrite(): void },
  ): Promise<void> {
    const key = keys.status(job);
    const value = encodeJson({ state: 'done', updated: new Date(wallNow(options.clock)).toISOString(), by });
    await casUpdate(
      coordinator,
      key,
      (e) => {
        if (!e) return value;
        try {
          return decodeStatus(key, e.value).state === 'done' ? undefined : value;
        } catch (err) {
          options.logger.warn('repairing a corrupt job status: the job is marked done', { key, error: (err as Error).message });
          return value;
        }
      },
      options,
    );
  }

  snapshot(entries: readonly Entry[]): void {
    for (const e of entries) this.apply(e);
  }

  event(ev: WatchEvent): void {
    if (ev.type === 'put') this.apply(ev);
  }

  private apply(e: Entry | Extract<WatchEvent, { type: 'put' }>): void {
    try {
      if (e.key === this.epochKey) {
        this.epochs.apply(e.value, e.version);
      } else if (e.key === this.statusKey) {
        const status = decodeStatus(e.key, e.value);
        if (status.state !== 'running' && !this.finished) {
          this.finished = true;
          this.onFinished(status);
        }
      }
      this.corruption.readable(e.key);
    } catch (err) {
      this.corruption.report(e.key, err, 'ignoring a corrupt job state value');
    }
  }
}
