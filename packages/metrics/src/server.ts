/**
 * `/metrics` (the Prometheus text exposition of a `TaskGraphMetrics` registry) and
 * `/healthz` (its nodes' health) over `node:http`, on a port the caller gives.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InvalidArgumentError, UnavailableError } from '@taskgraph/api';
import type { Instrumentable } from '@taskgraph/api';
import { TaskGraphMetrics } from './metrics.js';
import type { Registration, TaskGraphMetricsOptions } from './metrics.js';

/** Where the server listens unless told otherwise: loopback only. */
export const DEFAULT_METRICS_HOST = '127.0.0.1';

export interface MetricsServerOptions extends TaskGraphMetricsOptions {
  /** The port to listen on; 0 picks a free one (see `MetricsServer.port`). */
  readonly port: number;
  /** The interface to listen on. Default `127.0.0.1`; `0.0.0.0` (or `::`) for every interface. */
  readonly host?: string;
  /** The metrics to serve. Default: new ones, made with the other options. */
  readonly metrics?: TaskGraphMetrics;
}

export interface MetricsServer {
  /** The port the server is bound to (the one picked when `port` was 0). */
  readonly port: number;
  readonly host: string;
  /** `http://<host>:<port>`, to scrape. */
  readonly url: string;
  readonly metrics: TaskGraphMetrics;
  /** Shorthands for `metrics.registerNode` and `metrics.registerHost`. */
  registerNode(node: Instrumentable): Registration;
  registerHost(host: Instrumentable): Registration;
  /** Stops serving (open connections are closed). The registrations stay: the metrics still count. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` and `GET /healthz` (HEAD too) until `close()`:
 * - `/metrics`: 200, the registry in the Prometheus text format;
 * - `/healthz`: 200 while `metrics.health().healthy`, else 503; the body is the
 *   health report as JSON (`{ status: "ok" | "unavailable", policy, nodes }`);
 * - any other path 404, any other method 405.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { port, host = DEFAULT_METRICS_HOST } = options ?? ({} as MetricsServerOptions);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`the metrics port must be an integer from 0 to 65535, got ${String(port)}`);
  if (typeof host !== 'string' || host === '') throw new InvalidArgumentError('the metrics host must be a non-empty string');
  const metrics = options.metrics ?? new TaskGraphMetrics(options);
  const server = createServer((req, res) => void answer(metrics, req, res));
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(new UnavailableError(`cannot serve metrics on ${host}:${port}: ${err.message}`, { cause: err, details: { host, port } }));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port: bound,
    host,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}`,
    metrics,
    registerNode: (node) => metrics.registerNode(node),
    registerHost: (h) => metrics.registerHost(h),
    close: () => (closing ??= close(server)),
  };
}

function close(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

async function answer(metrics: TaskGraphMetrics, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (path !== '/metrics' && path !== '/healthz') {
    send(res, req, 404, 'text/plain; charset=utf-8', 'not found: try /metrics or /healthz\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }
  if (path === '/healthz') {
    const report = metrics.health();
    send(res, req, report.healthy ? 200 : 503, 'application/json; charset=utf-8', `${JSON.stringify({ status: report.healthy ? 'ok' : 'unavailable', ...report })}\n`);
    return;
  }
  try {
    send(res, req, 200, metrics.contentType, await metrics.metrics());
  } catch (err) {
    send(res, req, 500, 'text/plain; charset=utf-8', `cannot collect the metrics: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

function send(res: ServerResponse, req: IncomingMessage, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(req.method === 'HEAD' ? undefined : body);
}
