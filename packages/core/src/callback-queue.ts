/**
 * Runs a task's callbacks one at a time, in order. Each callback is guarded: it
 * is dropped when, at its turn, its epoch is over or the node is leaving.
 */
export class CallbackQueue {
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly onError: (err: unknown) => void) {}

  push(run: () => void | Promise<void>, stillWanted: () => boolean): void {
    if (this.closed) return;
    this.tail = this.tail.then(async () => {
      if (this.closed || !stillWanted()) return;
      try {
        await run();
      } catch (err) {
        this.onError(err);
      }
    });
  }

  /** Drops what has not started; resolves when the running callback (if any) is over. */
  close(): Promise<void> {
    this.closed = true;
    return this.tail;
  }
}
