/**
 * The master's knowledge of its workers, and the events it turns into: for each
 * worker, in order, `joined` (the first incarnation that announced itself to this
 * master), `failed` (an announced incarnation's node went away) and `restarted` (a
 * later incarnation announced itself). Two sources feed it: announcements (a
 * worker's hello, a data-plane call) and the address book's failures (a neighbour
 * event). Either may come first; the events are the same: an incarnation that
 * announces itself after a later one did, or after its failure was seen, is over,
 * and its calls are refused.
 */
export type RosterEvent = { readonly kind: 'joined' | 'failed' | 'restarted'; readonly workerId: number; readonly incarnation: number };

interface WorkerView {
  /** The latest incarnation that announced itself (0: none yet). */
  announced: number;
  /** Every incarnation up to this one is known to be over. */
  overUpTo: number;
  /** Whether the `failed` event of `announced` was given. */
  failedTold: boolean;
}

export class WorkerRoster {
  private readonly views: WorkerView[];

  constructor(numWorkers: number) {
    this.views = Array.from({ length: numWorkers }, () => ({ announced: 0, overUpTo: 0, failedTold: false }));
  }

  /** True when `incarnation` of `workerId` is known to be over (its calls are refused). */
  isOver(workerId: number, incarnation: number): boolean {
    const v = this.views[workerId];
    return v === undefined || incarnation <= v.overUpTo || incarnation < v.announced;
  }

  /** Whether `incarnation` announced itself to this master and is not over. */
  isReady(workerId: number, incarnation: number): boolean {
    const v = this.views[workerId];
    return v !== undefined && incarnation > 0 && v.announced === incarnation && incarnation > v.overUpTo;
  }

  /**
   * An incarnation announced itself. Returns the events it makes (none for a repeat),
   * or undefined when the incarnation is over.
   */
  announce(workerId: number, incarnation: number): RosterEvent[] | undefined {
    const v = this.views[workerId];
    if (v === undefined || this.isOver(workerId, incarnation)) return undefined;
    if (incarnation === v.announced) return [];
    const events: RosterEvent[] = [];
    if (v.announced > 0 && !v.failedTold) events.push({ kind: 'failed', workerId, incarnation: v.announced });
    events.push({ kind: v.announced === 0 ? 'joined' : 'restarted', workerId, incarnation });
    v.overUpTo = Math.max(v.overUpTo, incarnation - 1);
    v.announced = incarnation;
    v.failedTold = false;
    return events;
  }

  /**
   * The node of `incarnation` went away (and with it every earlier one). Returns the
   * `failed` event of the announced incarnation, if this is news of its end.
   */
  failed(workerId: number, incarnation: number): RosterEvent[] {
    const v = this.views[workerId];
    if (v === undefined || incarnation <= v.overUpTo) return [];
    v.overUpTo = incarnation;
    if (v.announced === 0 || v.announced > incarnation || v.failedTold) return [];
    v.failedTold = true;
    return [{ kind: 'failed', workerId, incarnation: v.announced }];
  }
}
