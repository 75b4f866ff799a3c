/**
 * The data-plane benchmark: `framework.dataRequest` over the gRPC transport
 * against bare grpc-js unary calls, in one process on one loopback, per payload
 * size and number of calls in flight. Each case warms both sides up, then runs
 * them in alternating rounds (A B, B A, ...) so that machine noise and drift land
 * on both alike. Produces one result per case and a summary against the targets.
 */
import { InternalError, InvalidArgumentError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { AcceptedConnections } from './connections.js';
import { startFrameworkEcho } from './framework-echo.js';
import type { FrameworkEcho } from './framework-echo.js';
import { LoadTotals, checkLoadSpec, round, runLoad } from './load.js';
import type { LoadResult, LoadSpec } from './load.js';
import { startRawGrpc } from './raw-grpc.js';
import type { RawGrpc } from './raw-grpc.js';

export const TARGETS = { throughput_ratio_min: 0.8, p50_added_us_max: 100, connections_per_peer: 1 } as const;

export const DEFAULT_PAYLOADS: readonly number[] = [64, 64 * 1024, 1024 * 1024];
export const DEFAULT_IN_FLIGHT: readonly number[] = [1, 16, 64];
// Many short rounds rather than a few long ones: a burst of load from elsewhere on
// the machine then spoils a round of each side, not a whole side of a case.
export const DEFAULT_ROUNDS = 6;
export const DEFAULT_ROUND: Omit<LoadSpec, 'inFlight'> = { durationMs: 800 };
export const DEFAULT_WARMUP: Omit<LoadSpec, 'inFlight'> = { durationMs: 300 };

export interface DataPlaneOptions {
  /** Payload sizes in bytes (request and answer alike). Default 64 B, 64 KiB, 1 MiB. */
  readonly payloads?: readonly number[];
  /** Calls in flight. Default 1, 16, 64. */
  readonly inFlight?: readonly number[];
  /** One timed round of one side (time and/or calls). Default 800 ms. */
  readonly round?: Omit<LoadSpec, 'inFlight'>;
  /** Timed rounds per side per case. Default 6. */
  readonly rounds?: number;
  /** The warm-up of each side before each case. Default 300 ms. */
  readonly warmup?: Omit<LoadSpec, 'inFlight'>;
  /** Applied to the transport and to the raw client and server. Default 16 MiB. */
  readonly maxMessageBytes?: number;
  /** The framework nodes' transport URL (grpc:// or grpcs://, with security options). Default grpc://127.0.0.1:0. */
  readonly transportUrl?: string;
  /** Progress lines (not results). */
  readonly progress?: (line: string) => void;
  /** The framework nodes' logger. Default silent. */
  readonly logger?: Logger;
}

export interface SideResult {
  readonly calls: number;
  readonly calls_per_s: number;
  readonly p50_us: number;
  readonly p99_us: number;
  /** CPU time of the whole process (both ends of the call) per call: robust to other load on the machine. */
  readonly cpu_us_per_call: number;
}

export interface CaseResult {
  readonly case: string;
  readonly payload_bytes: number;
  readonly in_flight: number;
  readonly framework: SideResult;
  readonly raw: SideResult;
  readonly throughput_ratio: number;
  readonly p50_added_us: number;
  /** framework.cpu_us_per_call / raw.cpu_us_per_call. */
  readonly cpu_ratio: number;
}

export interface Summary {
  readonly summary: true;
  readonly throughput_ratio_min: number;
  /** Over the cases with one call in flight; null when none ran. */
  readonly p50_added_us_max: number | null;
  readonly connections_per_peer: number;
  readonly targets: typeof TARGETS;
  readonly met: { readonly throughput_ratio_min: boolean; readonly p50_added_us_max: boolean; readonly connections_per_peer: boolean };
  /** Peers the framework's caller opened channels to (1: the serving task's node). */
  readonly framework_peers: number;
  /** TCP connections the raw server accepted during the run (the counting's own check: 1). */
  readonly raw_connections: number;
  /** The largest `cpu_ratio`: the framework's CPU cost per call over raw's, at its worst (no target; steadier than wall time). */
  readonly cpu_ratio_max: number;
  readonly elapsed_s: number;
}

/** "64B", "64KiB", "1MiB", or the byte count when it is no round unit. */
export function sizeLabel(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)}MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024}KiB`;
  return `${bytes}B`;
}

function checkOptions(o: DataPlaneOptions): void {
  const maxMessageBytes = o.maxMessageBytes ?? 16 * 1024 * 1024;
  if ((o.payloads ?? DEFAULT_PAYLOADS).length === 0) throw new InvalidArgumentError('give at least one payload size');
  if ((o.inFlight ?? DEFAULT_IN_FLIGHT).length === 0) throw new InvalidArgumentError('give at least one number of calls in flight');
  for (const p of o.payloads ?? DEFAULT_PAYLOADS) {
    if (!Number.isInteger(p) || p < 0 || p > maxMessageBytes) {
      throw new InvalidArgumentError(`payload sizes must be integers in [0, ${maxMessageBytes}], got ${String(p)}`);
    }
  }
  for (const n of o.inFlight ?? DEFAULT_IN_FLIGHT) checkLoadSpec({ inFlight: n, calls: 1 });
  const rounds = o.rounds ?? DEFAULT_ROUNDS;
  if (!Number.isInteger(rounds) || rounds < 1) throw new InvalidArgumentError(`rounds must be a positive integer, got ${String(rounds)}`);
  checkLoadSpec({ inFlight: 1, ...(o.round ?? DEFAULT_ROUND) });
  checkLoadSpec({ inFlight: 1, ...(o.warmup ?? DEFAULT_WARMUP) });
}

/** Runs every case; `onCase` gets each result as soon as it is known. */
export async function runDataPlane(
  options: DataPlaneOptions = {},
  onCase: (result: CaseResult) => void = () => undefined,
): Promise<{ cases: CaseResult[]; summary: Summary }> {
  checkOptions(options);
  const progress = options.progress ?? (() => undefined);
  const maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
  const payloads = options.payloads ?? DEFAULT_PAYLOADS;
  const inFlights = options.inFlight ?? DEFAULT_IN_FLIGHT;
  const roundSpec = options.round ?? DEFAULT_ROUND;
  const warmupSpec = options.warmup ?? DEFAULT_WARMUP;
  const rounds = options.rounds ?? DEFAULT_ROUNDS;
  const started = performance.now();

  // Opened before any server starts, so every connection of the run is seen.
  const accepted = new AcceptedConnections();
  let framework: FrameworkEcho | undefined;
  let raw: RawGrpc | undefined;
  try {
    progress('starting the two-task job (memory coordinator, gRPC transport on 127.0.0.1) and the raw gRPC server');
    framework = await startFrameworkEcho({
      maxMessageBytes,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.transportUrl ? { transportUrl: options.transportUrl } : {}),
    });
    raw = await startRawGrpc(maxMessageBytes);
    const fw = framework;
    const rw = raw;

    const cases: CaseResult[] = [];
    for (const size of payloads) {
      const payload = Buffer.alloc(size);
      for (let i = 0; i < size; i++) payload[i] = i & 0xff;
      const rawCall = async (): Promise<void> => {
        const out = await rw.call(payload);
        if (out.byteLength !== size) throw new InternalError(`the raw echo answered ${out.byteLength} bytes to ${size}`);
      };
      for (const inFlight of inFlights) {
        const label = `${sizeLabel(size)} x${inFlight}`;
        const sides = {
          framework: (spec: LoadSpec): Promise<LoadResult> => fw.run(payload, spec),
          raw: (spec: LoadSpec): Promise<LoadResult> => runLoad(rawCall, spec),
        };
        await sides.framework({ inFlight, ...warmupSpec });
        await sides.raw({ inFlight, ...warmupSpec });
        const totals = { framework: new LoadTotals(), raw: new LoadTotals() };
        for (let r = 0; r < rounds; r++) {
          const order = r % 2 === 0 ? (['framework', 'raw'] as const) : (['raw', 'framework'] as const);
          for (const side of order) totals[side].add(await sides[side]({ inFlight, ...roundSpec }));
        }
        const f = totals.framework.summary();
        const w = totals.raw.summary();
        const result: CaseResult = {
          case: label,
          payload_bytes: size,
          in_flight: inFlight,
          framework: f,
          raw: w,
          throughput_ratio: w.calls_per_s > 0 ? round(f.calls_per_s / w.calls_per_s, 3) : 0,
          p50_added_us: round(f.p50_us - w.p50_us, 1),
          cpu_ratio: w.cpu_us_per_call > 0 ? round(f.cpu_us_per_call / w.cpu_us_per_call, 3) : 0,
        };
        progress(
          `${label.padEnd(10)} framework ${f.calls_per_s.toFixed(0).padStart(6)}/s p50 ${f.p50_us.toFixed(0).padStart(6)} us | ` +
            `raw ${w.calls_per_s.toFixed(0).padStart(6)}/s p50 ${w.p50_us.toFixed(0).padStart(6)} us | ratio ${result.throughput_ratio.toFixed(2)} ` +
            `(cpu/call ${f.cpu_us_per_call.toFixed(0)} vs ${w.cpu_us_per_call.toFixed(0)} us)`,
        );
        cases.push(result);
        onCase(result);
      }
    }

    const ports = fw.peerPorts();
    if (ports.length === 0) throw new InternalError('the caller task opened no channel: no framework call was made');
    const connectionsPerPeer = Math.max(...ports.map((p) => accepted.on(p)));
    if (connectionsPerPeer === 0) throw new InternalError('no accepted connection was seen on the serving node: the connection count is broken');
    const singles = cases.filter((c) => c.in_flight === 1);
    const ratioMin = Math.min(...cases.map((c) => c.throughput_ratio));
    const addedMax = singles.length === 0 ? null : Math.max(...singles.map((c) => c.p50_added_us));
    const summary: Summary = {
      summary: true,
      throughput_ratio_min: ratioMin,
      p50_added_us_max: addedMax,
      connections_per_peer: connectionsPerPeer,
      targets: TARGETS,
      met: {
        throughput_ratio_min: ratioMin >= TARGETS.throughput_ratio_min,
        p50_added_us_max: addedMax !== null && addedMax <= TARGETS.p50_added_us_max,
        connections_per_peer: connectionsPerPeer <= TARGETS.connections_per_peer,
      },
      framework_peers: ports.length,
      raw_connections: accepted.on(rw.port),
      cpu_ratio_max: Math.max(...cases.map((c) => c.cpu_ratio)),
      elapsed_s: round((performance.now() - started) / 1000, 1),
    };
    return { cases, summary };
  } finally {
    progress('closing');
    await Promise.allSettled([framework?.close(), raw?.close()]);
    accepted.close();
  }
}
