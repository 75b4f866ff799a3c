/**
 * `taskgraph dashboard`: the live view of the store's jobs, until SIGINT or SIGTERM.
 */
import { resolveCoordinator } from '@taskgraph/core';
import type { CliConfig } from '../config.js';
import { startDashboardOn } from '../observability.js';
import { loadPlugins } from '../plugins.js';
import { redactor, scrubbedLogger } from '../secrets.js';

export async function runDashboard(config: CliConfig, host: string | undefined, port: number, out: (line: string) => void, stop?: AbortSignal): Promise<number> {
  const logger = scrubbedLogger(config.logLevel ?? 'warn', redactor(config));
  await loadPlugins(config.plugins);
  const coordinator = await resolveCoordinator(config.coordinator!, { logger });
  try {
    const dashboard = await startDashboardOn(coordinator, logger, host, port);
    out(`dashboard: ${dashboard.url} (the jobs of ${config.coordinator}); Ctrl-C stops it`);
    const signal = stop ?? signalOnce();
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
    await dashboard.close();
    out('dashboard stopped');
    return 0;
  } finally {
    await coordinator.close();
  }
}

/** Aborted by the first SIGINT or SIGTERM. */
function signalOnce(): AbortSignal {
  const ac = new AbortController();
  const on = (): void => {
    process.off('SIGINT', on);
    process.off('SIGTERM', on);
    ac.abort();
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return ac.signal;
}
