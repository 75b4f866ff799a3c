/**
 * Reports corrupt store values once per key: a node never dies of what someone wrote
 * into the store, and a value delivered again (every watch resumption re-lists) does
 * not flood the log. A key is reported again only after it was readable in between.
 */
import type { Logger } from '@taskgraph/api';

export class CorruptionLog {
  private readonly reported = new Set<string>();

  constructor(private readonly logger: () => Logger) {}

  /** Logs `message` for `key` unless it was already reported since it was last readable. */
  report(key: string, err: unknown, message = 'ignoring a corrupt value in the store'): void {
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.logger().error(message, { key, error: err instanceof Error ? err.message : String(err) });
  }

  /** `key` holds a readable value (or none) again. */
  readable(key: string): void {
    this.reported.delete(key);
  }
}
