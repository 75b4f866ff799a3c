/**
 * The dashboard's HTTP server: one page (and the scripts it needs), the job list
 * as JSON, and one event stream per page (`/events?job=NAME`) that carries the job
 * list, then the chosen job's snapshot and deltas.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { InvalidArgumentError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { AssetCache, resolveAssets } from './assets.js';
import { JobFeed } from './feed.js';
import { scanJobs } from './jobs.js';
import { isJobName } from './records.js';
import { SSE_KEEPALIVE, SseClient, sseFrame } from './sse.js';
import type { Dashboard, DashboardOptions, JobSummary } from './types.js';

const KEEPALIVE_MS = 15_000;
/** What a stream may leave unsent before it is cut off (its page reconnects). */
const MAX_BUFFERED = 8 * 1024 * 1024;
/** A job list younger than this is reused rather than read again. */
const JOBS_FRESH_MS = 1000;

const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};

/**
 * What every answer carries: scripts from this server only, no framing, no
 * sniffing, no referrer. Styles may be inline (cytoscape sets its own).
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
} as const;

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return LOOPBACK_NAMES.has(h) || (isIP(h) === 4 && h.startsWith('127.'));
}

/** The host part of a Host header (without the port), lower case; undefined when malformed. */
function hostName(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end > 0 ? h.slice(0, end + 1) : undefined;
  }
  const colon = h.indexOf(':');
  return colon >= 0 ? h.slice(0, colon) : h;
}

function checkOptions(o: DashboardOptions): void {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError('startDashboard needs an options object: { coordinator, host?, port?, logger? }');
  const c = o.coordinator as Partial<DashboardOptions['coordinator']> | undefined;
  if (typeof c !== 'object' || c === null || typeof c.list !== 'function' || typeof c.watch !== 'function') {
    throw new InvalidArgumentError('startDashboard: coordinator must be a Coordinator (resolveCoordinator(url) from @taskgraph/core makes one)');
  }
  if (o.host !== undefined && (typeof o.host !== 'string' || o.host.trim() === '' || /[\s/]/.test(o.host))) {
    throw new InvalidArgumentError(`startDashboard: host ${JSON.stringify(o.host)} is not a host name or address`);
  }
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)) {
    throw new InvalidArgumentError(`startDashboard: port must be an integer from 0 to 65535 (0: any free port), got ${String(o.port)}`);
  }
  const nonNegative = (v: unknown, what: string): void => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) throw new InvalidArgumentError(`startDashboard: ${what} must be a number >= 0, got ${String(v)}`);
  };
  nonNegative(o.jobsRefreshMs, 'jobsRefreshMs');
  nonNegative(o.flushMs, 'flushMs');
  if (o.maxClients !== undefined && (!Number.isInteger(o.maxClients) || o.maxClients < 1)) {
    throw new InvalidArgumentError(`startDashboard: maxClients must be an integer >= 1, got ${String(o.maxClients)}`);
  }
  const r = o.requestRates as { subscribe?: unknown } | undefined;
  if (r !== undefined && (typeof r !== 'object' || r === null || typeof r.subscribe !== 'function')) {
    throw new InvalidArgumentError('startDashboard: requestRates must be a RequestRateSource ({ subscribe(job, emit) })');
  }
}

/** An address for a URL: IPv6 in brackets; an unspecified address as this machine's loopback. */
function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return isIP(host) === 6 ? `[${host}]` : host;
}

/**
 * Starts the dashboard: a web server on `host:port` (127.0.0.1 and any free port by
 * default) that shows the jobs in `coordinator`'s store. Rejects with an
 * InvalidArgumentError for bad options or an address that cannot be listened on
 * (its message names EADDRINUSE, EACCES or EADDRNOTAVAIL), and a
 * BackendNotInstalledError when a package the page needs is missing.
 */
export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  checkOptions(options);
  const coordinator = options.coordinator;
  const host = options.host ?? '127.0.0.1';
  const logger = options.logger ?? silentLogger;
  const flushMs = options.flushMs ?? 100;
  const jobsRefreshMs = options.jobsRefreshMs ?? 10_000;
  const maxClients = options.maxClients ?? 64;
  const assets = new AssetCache(resolveAssets());
  const loopbackOnly = isLoopback(host);

  const clients = new Set<SseClient>();
  const feeds = new Map<string, JobFeed>();
  const feedOf = new Map<SseClient, JobFeed>();
  let closed = false;

  // ---- the job list ----------------------------------------------------------------
  let jobs: { list: readonly JobSummary[]; json: string; at: number } | undefined;
  let scanning: Promise<readonly JobSummary[]> | undefined;
  let jobsTimer: ReturnType<typeof setInterval> | undefined;

  const refreshJobs = (): Promise<readonly JobSummary[]> => {
    if (jobs && performance.now() - jobs.at < JOBS_FRESH_MS) return Promise.resolve(jobs.list);
    scanning ??= scanJobs(coordinator)
      .then((list) => {
        const json = JSON.stringify(list);
        const changed = jobs?.json !== json;
        jobs = { list, json, at: performance.now() };
        if (changed && !closed) {
          const frame = sseFrame('jobs', json);
          for (const c of clients) c.send(frame);
        }
        return list;
      })
      .finally(() => {
        scanning = undefined;
      });
    return scanning;
  };
  const refreshJobsQuietly = (): void => {
    refreshJobs().catch((err: unknown) => logger.warn('could not list the jobs', { error: String(err) }));
  };

  // ---- requests ---------------------------------------------------------------------
  const answer = (res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void => {
    res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...extra });
    res.end(`${text}\n`);
  };

  const openStream = (res: ServerResponse, query: string): void => {
    const params = new URLSearchParams(query);
    for (const key of new Set(params.keys())) {
      if (key !== 'job') return answer(res, 400, `unknown parameter ${JSON.stringify(key.slice(0, 40))}: /events takes only job=NAME`);
    }
    const all = params.getAll('job');
    if (all.length > 1) return answer(res, 400, 'job is given more than once');
    const job = all[0];
    if (job !== undefined && !isJobName(job)) {
      return answer(res, 400, 'job must be a job name: 1-63 lower-case letters, digits and "-", starting and ending with a letter or digit');
    }
    if (clients.size >= maxClients) return answer(res, 503, `too many open streams (${maxClients}); close a page and try again`, { 'retry-after': '5' });
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    const client = new SseClient(res, MAX_BUFFERED, (c) => {
      clients.delete(c);
      const feed = feedOf.get(c);
      feedOf.delete(c);
      feed?.remove(c);
      if (clients.size === 0 && jobsTimer !== undefined) {
        clearInterval(jobsTimer);
        jobsTimer = undefined;
      }
    });
    clients.add(client);
    // The stream's end (the page went, the server closes) comes as the response's 'close'.
    res.socket?.setNoDelay(true);
    if (jobs) client.send(sseFrame('jobs', jobs.json));
    refreshJobsQuietly();
    if (jobsRefreshMs > 0 && jobsTimer === undefined) {
      jobsTimer = setInterval(refreshJobsQuietly, jobsRefreshMs);
      jobsTimer.unref();
    }
    if (job === undefined) return;
    let feed = feeds.get(job);
    if (!feed || feed.stopped) {
      feed = new JobFeed(job, {
        coordinator,
        logger,
        flushMs,
        ...(options.requestRates ? { rates: options.requestRates } : {}),
        onStopped: (f) => {
          if (feeds.get(job) === f) feeds.delete(job);
        },
      });
      feeds.set(job, feed);
    }
    feedOf.set(client, feed);
    feed.add(client);
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    if (closed) return answer(res, 503, 'the dashboard is closing');
    if (loopbackOnly) {
      // A page of another site that rebinds its name to 127.0.0.1 still sends its own name.
      const name = hostName(req.headers.host);
      if (name === undefined || !(isLoopback(name) || name === host.toLowerCase())) return answer(res, 403, 'this dashboard answers only to a loopback host name (localhost, 127.0.0.1, [::1])');
    }
    const url = req.url ?? '';
    if (!url.startsWith('/') || url.startsWith('//')) return answer(res, 400, 'bad request target');
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405, 'only GET and HEAD', { allow: 'GET, HEAD' });
    if (path === '/events') {
      if (req.method === 'HEAD') return answer(res, 405, '/events is a GET event stream', { allow: 'GET' });
      return openStream(res, query);
    }
    if (path === '/api/jobs') {
      if (query !== '') return answer(res, 400, '/api/jobs takes no parameters');
      refreshJobs().then(
        (list) => {
          res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : JSON.stringify(list));
        },
        (err: unknown) => {
          logger.warn('could not list the jobs', { error: String(err) });
          answer(res, 502, `could not list the jobs: ${err instanceof Error ? err.message : String(err)}`);
        },
      );
      return;
    }
    const found = assets.get(path === '/index.html' ? '/' : path);
    if (!found) return answer(res, 404, 'not found');
    found.body.then(
      (body) => {
        res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': found.asset.type, 'content-length': String(body.length), 'cache-control': 'no-cache' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        logger.error('could not read a file of the page', { file: found.asset.file, error: String(err) });
        answer(res, 500, 'could not read a file of the page');
      },
    );
  };

  const server: Server = createServer((req, res) => {
    try {
      handle(req, res);
    } catch (err) {
      logger.error('request failed', { error: String(err) });
      if (!res.headersSent) answer(res, 500, 'internal error');
      else res.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const hint =
        err.code === 'EADDRINUSE'
          ? 'the port is in use: choose another, or 0 for any free port'
          : err.code === 'EACCES'
            ? 'not allowed (a port below 1024 needs privileges)'
            : err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND'
              ? 'that address is not one of this machine\'s'
              : err.message;
      reject(new InvalidArgumentError(`the dashboard cannot listen on ${host}:${options.port ?? 0}: ${err.code ?? 'error'} (${hint})`, { cause: err, details: { host, port: options.port ?? 0, code: err.code } }));
    };
    server.once('error', onError);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => logger.error('dashboard server error', { error: String(err) }));

  const keepalive = setInterval(() => {
    for (const c of clients) c.send(SSE_KEEPALIVE);
  }, KEEPALIVE_MS);
  keepalive.unref();

  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : (options.port ?? 0);
  let closing: Promise<void> | undefined;

  return {
    url: `http://${urlHost(host)}:${port}/`,
    port,
    host,
    close: () =>
      (closing ??= (async () => {
        closed = true;
        clearInterval(keepalive);
        if (jobsTimer !== undefined) clearInterval(jobsTimer);
        jobsTimer = undefined;
        for (const c of [...clients]) c.end();
        await Promise.all([...feeds.values()].map((f) => f.stop()));
        // A job-list read in flight is not waited for (a store that does not answer
        // must not hold close()); its result is dropped.
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      })()),
  };
}
