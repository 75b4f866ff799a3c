/**
 * The optional observability packages, imported only when a flag asks for them (the
 * command depends on none, as on no backend): `@taskgraph/metrics` for
 * `--metrics-port`, `@taskgraph/dashboard` for `taskgraph dashboard`.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Coordinator, Logger } from '@taskgraph/api';
import { importPackage } from '@taskgraph/core';
import type { Dashboard, startDashboard as StartDashboard } from '@taskgraph/dashboard';
import type { HealthPolicy, MetricsServer, startMetricsServer as StartMetricsServer } from '@taskgraph/metrics';
import { importFromCli } from './modules.js';

/** Where a process serves its metrics: `--metrics-port` / TASKGRAPH_METRICS_PORT, `--metrics-host`. */
export interface MetricsEndpoint {
  readonly port: number;
  readonly host?: string;
}

/** A port from a flag or the environment: an integer from 0 (any free port) to 65535. */
export function metricsPort(value: unknown, what: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value.trim()) || n > 65535) {
    throw new InvalidArgumentError(`${what} must be a port number from 0 to 65535 (0: any free port), got ${JSON.stringify(value)}`);
  }
  return n;
}

/** Starts a metrics server (`/metrics`, `/healthz`) for the nodes of this process. */
export async function startMetrics(endpoint: MetricsEndpoint, health: HealthPolicy): Promise<MetricsServer> {
  const mod = await importPackage('@taskgraph/metrics', 'metrics endpoint (--metrics-port)', importFromCli);
  const start = mod['startMetricsServer'] as typeof StartMetricsServer;
  return start({ port: endpoint.port, health, ...(endpoint.host !== undefined ? { host: endpoint.host } : {}) });
}

/** Starts the live dashboard on `coordinator`. */
export async function startDashboardOn(coordinator: Coordinator, logger: Logger, host: string | undefined, port: number): Promise<Dashboard> {
  const mod = await importPackage('@taskgraph/dashboard', 'dashboard', importFromCli);
  const start = mod['startDashboard'] as typeof StartDashboard;
  return start({ coordinator, logger, port, ...(host !== undefined ? { host } : {}) });
}
