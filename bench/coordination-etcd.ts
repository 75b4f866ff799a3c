/**
 * What the coordination benchmark reads from etcd itself, beside the framework:
 * bare etcd3 clients (the raw figures), the events on one key as a bare watch
 * sees them, etcd's request counters (/metrics), the CPU time of the etcd
 * process, and small statistics shared by the three parts (and by the
 * hot-standby benchmark, which runs on etcd too).
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { Etcd3 } from 'etcd3';
import type { Watcher } from 'etcd3';
import { InternalError } from '@taskgraph/api';
import { percentile, round } from './src/load.js';

/** A bare etcd3 client with the library's defaults: what an application would write by hand. */
export function bareClient(endpoints: readonly string[]): Etcd3 {
  return new Etcd3({ hosts: [...endpoints] });
}

/** Events on one key, with the time this process saw them. */
export class KeyEvents {
  readonly events: Array<{ at: number; type: 'put' | 'delete'; value: string }> = [];
  #notify: (() => void) | undefined;

  constructor(readonly watcher: Watcher) {
    watcher.on('put', (kv) => this.#push('put', kv.value.toString()));
    watcher.on('delete', () => this.#push('delete', ''));
  }

  #push(type: 'put' | 'delete', value: string): void {
    this.events.push({ at: performance.now(), type, value });
    this.#notify?.();
  }

  /** The first event after index `from` that matches, waiting for it up to `timeoutMs`. */
  async next(from: number, match: (e: { type: string; value: string }) => boolean, timeoutMs: number, what: string): Promise<{ at: number; index: number }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.events.length; i++) {
        const e = this.events[i]!;
        if (match(e)) return { at: e.at, index: i };
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new InternalError(`timed out after ${timeoutMs} ms waiting for ${what}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#notify = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#notify = undefined;
    }
  }
}

/** The fencing token in an address record (`<job>/tasks/<id>/addr`), if it has one. */
export function tokenOf(value: string): string | undefined {
  try {
    const v = JSON.parse(value) as { token?: unknown };
    return typeof v.token === 'string' ? v.token : undefined;
  } catch {
    return undefined;
  }
}

/** The store revision now (the header of a read). */
export async function currentRevision(client: Etcd3): Promise<bigint> {
  const res = await client.kv.range({ key: Buffer.from('\0') });
  return BigInt(res.header.revision);
}

export interface Spread {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Nearest-rank p50/p99, max and mean of samples, rounded to `digits`. */
export function spread(samples: readonly number[], digits = 2): Spread {
  const sorted = Float64Array.from(samples).sort();
  const mean = samples.length === 0 ? 0 : samples.reduce((a, b) => a + b, 0) / samples.length;
  return {
    n: samples.length,
    p50: round(percentile(sorted, 0.5), digits),
    p99: round(percentile(sorted, 0.99), digits),
    max: round(sorted.length === 0 ? 0 : sorted[sorted.length - 1]!, digits),
    mean: round(mean, digits),
  };
}

/** Requests etcd handled, by gRPC method (unary calls), and its raft and disk work. */
export interface EtcdCounters {
  readonly requests: Readonly<Record<string, number>>;
  readonly proposals: number;
  readonly fsyncs: number;
}

const HANDLED = /^grpc_server_handled_total\{([^}]*)\} ([0-9.e+]+)$/;

/** Parses the Prometheus text etcd serves on /metrics. */
export function parseCounters(text: string): EtcdCounters {
  const requests: Record<string, number> = {};
  let proposals = 0;
  let fsyncs = 0;
  for (const line of text.split('\n')) {
    const m = HANDLED.exec(line);
    if (m) {
      const labels = m[1]!;
      if (!labels.includes('grpc_type="unary"')) continue;
      const method = /grpc_method="([^"]+)"/.exec(labels)?.[1];
      const value = Number(m[2]);
      if (method !== undefined && value > 0) requests[method] = (requests[method] ?? 0) + value;
    } else if (line.startsWith('etcd_server_proposals_committed_total ')) {
      proposals = Number(line.slice(line.indexOf(' ') + 1));
    } else if (line.startsWith('etcd_disk_wal_fsync_duration_seconds_count ')) {
      fsyncs = Number(line.slice(line.indexOf(' ') + 1));
    }
  }
  return { requests, proposals, fsyncs };
}

/** GETs a path of etcd's client URL (one request, no pooled connection left behind). */
function httpGet(clientUrl: string, path: string): Promise<string> {
  const url = new URL(path, clientUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'GET', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new InternalError(`etcd ${path} answered ${String(res.statusCode)}`));
        else resolve(body);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new InternalError(`etcd ${path} did not answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Reads etcd's counters from /metrics. */
export async function readCounters(clientUrl: string): Promise<EtcdCounters> {
  return parseCounters(await readMetricsText(clientUrl));
}

/** The Prometheus text etcd serves on /metrics. */
export function readMetricsText(clientUrl: string): Promise<string> {
  return httpGet(clientUrl, '/metrics');
}

/** etcd's server version, from /version. */
export async function readEtcdVersion(clientUrl: string): Promise<string> {
  const v = JSON.parse(await httpGet(clientUrl, '/version')) as { etcdserver?: unknown };
  return typeof v.etcdserver === 'string' ? v.etcdserver : 'unknown';
}

/** `after - before`, per counter. */
export function counterDelta(before: EtcdCounters, after: EtcdCounters): EtcdCounters {
  const requests: Record<string, number> = {};
  for (const [method, n] of Object.entries(after.requests)) {
    const d = n - (before.requests[method] ?? 0);
    if (d > 0) requests[method] = d;
  }
  return { requests, proposals: after.proposals - before.proposals, fsyncs: after.fsyncs - before.fsyncs };
}

/** Adds counter deltas up. */
export function counterSum(parts: readonly EtcdCounters[]): EtcdCounters {
  const requests: Record<string, number> = {};
  let proposals = 0;
  let fsyncs = 0;
  for (const p of parts) {
    for (const [method, n] of Object.entries(p.requests)) requests[method] = (requests[method] ?? 0) + n;
    proposals += p.proposals;
    fsyncs += p.fsyncs;
  }
  return { requests, proposals, fsyncs };
}

/** Counters divided by `by` (per epoch, per task...), rounded. */
export function counterPer(c: EtcdCounters, by: number): { requests: Record<string, number>; proposals: number; fsyncs: number } {
  const requests: Record<string, number> = {};
  for (const [method, n] of Object.entries(c.requests)) requests[method] = round(n / by, 2);
  return { requests, proposals: round(c.proposals / by, 2), fsyncs: round(c.fsyncs / by, 2) };
}

const CLOCK_TICKS_PER_S = 100;

function statCpuMs(path: string): number | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    // The command name (field 2) may hold spaces; the fields after it are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
    return ((utime + stime) * 1000) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/**
 * CPU time (user + system) a process has used, in ms, from /proc (Linux); undefined
 * elsewhere or when the process is gone. Resolution: 10 ms, fine over many epochs.
 */
export function processCpuMs(pid: number | undefined): number | undefined {
  return pid === undefined ? undefined : statCpuMs(`/proc/${pid}/stat`);
}

/**
 * CPU time of this process's main thread (the event loop every in-process node
 * runs on), in ms. Unlike `process.cpuUsage()` it leaves out V8's background
 * compiler and GC threads, whose work lands wherever JIT warm-up happens to fall.
 * Falls back to the whole process where /proc is missing.
 */
export function ownCpuMs(): number {
  const main = statCpuMs(`/proc/self/task/${process.pid}/stat`);
  if (main !== undefined) return main;
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves when `check` is true, polling every `everyMs`; rejects with `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 20): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new InternalError(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepMs(everyMs);
  }
}

/** A unique suffix for namespaces, so runs never see each other's keys. */
export function runId(): string {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}
