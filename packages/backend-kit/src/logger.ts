import type { Logger } from '@taskgraph/api';

/** The default logger of a backend: nothing is printed unless the caller gives a logger. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
