/**
 * The master's knowledge of its workers, and the events it turns into: for each
 * worker, in order, `joined` (the first incarnation that announced itself to this
 * master), `failed` (an incarnation this master knew of went away) and `restarted`
 * (a later incarnation announced itself). A master knows of an incarnation once it
 * announced itself (a worker's hello, any call it makes) or when it was live as
 * the master started (seeded from the address book: a new master may rely on what
 * the previous one recorded of it). Announcements and failures (neighbour events)
 * may come in either order; the events are the same. An incarnation that
 * announces itself after a later one did, or after its end was seen, is over, and
 * its calls are refused.
 */
export type RosterEvent = { readonly kind: 'joined' | 'failed' | 'restarted'; readonly workerId: number; readonly incarnation: number };

interface WorkerView {
  /** The latest incarnation this master knows of (0: none). */
  current: number;
  /** Whether `current` announced itself. */
  announced: boolean;
  /** Whether any incarnation announced itself to this master (the next one is a restart). */
  everAnnounced: boolean;
  /** Every incarnation up to this one is known to be over. */
  overUpTo: number;
  /** Whether the `failed` event of `current` was given. */
  failedTold: boolean;
}

export class WorkerRoster {
  private readonly views: WorkerView[];

  constructor(numWorkers: number) {
    this.views = Array.from({ length: numWorkers }, () => ({ current: 0, announced: false, everAnnounced: false, overUpTo: 0, failedTold: false }));
  }

  /** An incarnation that is live as the master starts (no event: it has not announced itself yet). Only for a worker not known yet. */
  seed(workerId: number, incarnation: number): void {
    const v = this.views[workerId];
    if (v === undefined || v.current > 0 || incarnation <= v.overUpTo) return;
    Object.assign(v, { current: incarnation, announced: false, failedTold: false });
  }

  /** True when `incarnation` of `workerId` is known to be over (its calls are refused). */
  isOver(workerId: number, incarnation: number): boolean {
    const v = this.views[workerId];
    return v === undefined || incarnation <= v.overUpTo || incarnation < v.current;
  }

  /** Whether `incarnation` announced itself to this master and is not over. */
  isReady(workerId: number, incarnation: number): boolean {
    const v = this.views[workerId];
    return v !== undefined && incarnation > 0 && v.current === incarnation && v.announced && incarnation > v.overUpTo;
  }

  /**
   * An incarnation announced itself. Returns the events it makes (none for a repeat),
   * or undefined when the incarnation is over.
   */
  announce(workerId: number, incarnation: number): RosterEvent[] | undefined {
    const v = this.views[workerId];
    if (v === undefined || this.isOver(workerId, incarnation)) return undefined;
    if (incarnation === v.current && v.announced) return [];
    const events: RosterEvent[] = [];
    if (incarnation > v.current && v.current > 0 && !v.failedTold) events.push({ kind: 'failed', workerId, incarnation: v.current });
    events.push({ kind: v.everAnnounced ? 'restarted' : 'joined', workerId, incarnation });
    if (incarnation > v.current) Object.assign(v, { current: incarnation, failedTold: false, overUpTo: Math.max(v.overUpTo, incarnation - 1) });
    Object.assign(v, { announced: true, everAnnounced: true });
    return events;
  }

  /**
   * The node of `incarnation` went away (and with it every earlier one). Returns the
   * `failed` event of the incarnation this master knew of, if this is news of its end.
   */
  failed(workerId: number, incarnation: number): RosterEvent[] {
    const v = this.views[workerId];
    if (v === undefined || incarnation <= v.overUpTo) return [];
    v.overUpTo = incarnation;
    if (v.current === 0 || v.current > incarnation || v.failedTold) return [];
    v.failedTold = true;
    return [{ kind: 'failed', workerId, incarnation: v.current }];
  }
}
