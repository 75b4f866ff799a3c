/**
 * @taskgraph/metrics: Prometheus metrics and health endpoints for TaskGraph nodes,
 * node hosts and whole jobs run in one process. Core reports typed events
 * (`NodeEvent` of `@taskgraph/api`); this package maps them onto prom-client, one
 * registry per `TaskGraphMetrics`, and serves `/metrics` and `/healthz`.
 */
export { TaskGraphMetrics, DEFAULT_BUCKETS, METRICS, ROLES } from './metrics.js';
export type { HealthPolicy, HealthReport, NodeHealth, Registration, TaskGraphMetricsOptions } from './metrics.js';
export { startMetricsServer, DEFAULT_METRICS_HOST } from './server.js';
export type { MetricsServer, MetricsServerOptions } from './server.js';
