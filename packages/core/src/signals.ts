/**
 * Graceful shutdown on SIGTERM/SIGINT: the node leaves its task (so a standby takes
 * it at once, not after the TTL) and drains requests in flight. A second signal
 * exits at once.
 */
import type { Bootstrap, Logger } from '@taskgraph/api';

export function installSignalHandlers(
  node: Pick<Bootstrap, 'stop'>,
  options: { signals?: readonly NodeJS.Signals[]; logger?: Logger; exit?: (code: number) => void } = {},
): () => void {
  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      options.logger?.warn('second signal: exiting now', { signal });
      exit(130);
      return;
    }
    stopping = true;
    options.logger?.info('signal received: leaving gracefully', { signal });
    node.stop(signal).catch((err: unknown) => {
      options.logger?.error('graceful stop failed', { error: err instanceof Error ? err.message : String(err) });
      exit(1);
    });
  };
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}
