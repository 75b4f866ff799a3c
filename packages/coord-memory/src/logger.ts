import type { Logger } from '@taskgraph/api';

/** The default logger: memory coordination has nothing worth printing unless asked. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
