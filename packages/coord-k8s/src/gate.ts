/**
 * At most `limit` tasks at a time, the rest waiting in order. The janitor and the
 * Lease observer run their requests through one gate per client: that work is
 * maintenance, and when the API server is slow it must queue behind itself rather
 * than multiply (every expiry check and clean-up of every session at once, each
 * timing out and retrying) and crowd out the session renewals that keep nodes alive.
 */
export class Gate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.running--;
    }
  }

  /** Tasks running and waiting. */
  get load(): number {
    return this.running + this.waiting.length;
  }
}
