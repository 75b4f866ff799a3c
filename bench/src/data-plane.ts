/**
 * The data-plane benchmark: `framework.dataRequest` over the gRPC transport
 * against bare grpc-js unary calls and against a peer framework (Moleculer over
 * its TCP transporter), in one process on one loopback, per payload size and
 * number of calls in flight. Each case warms every side up, then runs them in
 * rotating rounds (A B C, B C A, ...) so that machine noise and drift land on all
 * alike. Produces one result per case and a summary against the targets.
 */
import { InternalError, InvalidArgumentError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { AcceptedConnections } from './connections.js';
import { startFrameworkEcho } from './framework-echo.js';
import type { FrameworkEcho } from './framework-echo.js';
import { LoadTotals, checkLoadSpec, round, runLoad } from './load.js';
import type { LoadResult, LoadSpec } from './load.js';
import { startMoleculerEcho } from './moleculer-echo.js';
import type { MoleculerEcho } from './moleculer-echo.js';
import { startRawGrpc } from './raw-grpc.js';
import type { RawGrpc } from './raw-grpc.js';

export const TARGETS = { throughput_ratio_min: 0.8, p50_added_us_max: 100, connections_per_peer: 1, stream_ratio_min: 3, peer_ratio_min: 1 } as const;

/** The cases `stream_ratio_min` and `peer_ratio_min` are taken over: 64 B and 64 KiB at 16 and 64 in flight. */
export const RATIO_CASES = { payloads: [64, 64 * 1024], inFlight: [16, 64] } as const;

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
  /** Run Moleculer beside the framework and raw grpc-js. Default true. */
  readonly peer?: boolean;
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
  /** Moleculer, the peer framework (absent when the run was asked to leave it out). */
  readonly peer?: SideResult;
  readonly throughput_ratio: number;
  /** framework.calls_per_s / peer.calls_per_s. */
  readonly peer_ratio?: number;
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
  /** The least throughput_ratio over RATIO_CASES (framework over bare grpc-js unary); null when none ran. */
  readonly stream_ratio_min: number | null;
  /** The least peer_ratio over RATIO_CASES (framework over Moleculer); null when none ran. */
  readonly peer_ratio_min: number | null;
  readonly met: {
    readonly throughput_ratio_min: boolean;
    readonly p50_added_us_max: boolean;
    readonly connections_per_peer: boolean;
    readonly stream_ratio_min: boolean;
    readonly peer_ratio_min: boolean;
  };
  /** Peers the framework's caller opened channels to (1: the serving task's node). */
  readonly framework_peers: number;
  /** TCP connections the raw server accepted during the run (the counting's own check: 1). */
  readonly raw_connections: number;
  /** The largest `cpu_ratio`: the framework's CPU cost per call over raw's, at its worst (no target; steadier than wall time). */
  readonly cpu_ratio_max: number;
  readonly elapsed_s: number;
}

type Side = 'framework' | 'raw' | 'peer';

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
  let peer: MoleculerEcho | undefined;
  try {
    progress('starting the two-task job (memory coordinator, gRPC transport on 127.0.0.1) and the raw gRPC server');
    framework = await startFrameworkEcho({
      maxMessageBytes,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.transportUrl ? { transportUrl: options.transportUrl } : {}),
    });
    raw = await startRawGrpc(maxMessageBytes);
    if (options.peer ?? true) {
      progress('starting the Moleculer peer (two ServiceBrokers, TCP transporter on 127.0.0.1)');
      peer = await startMoleculerEcho();
    }
    const fw = framework;
    const rw = raw;
    const pr = peer;

    const cases: CaseResult[] = [];
    for (const size of payloads) {
      const payload = Buffer.alloc(size);
      for (let i = 0; i < size; i++) payload[i] = i & 0xff;
      const rawCall = async (): Promise<void> => {
        const out = await rw.call(payload);
        if (out.byteLength !== size) throw new InternalError(`the raw echo answered ${out.byteLength} bytes to ${size}`);
      };
      // The peer's payload is a string of the same byte length (see moleculer-echo.ts).
      const text = 'x'.repeat(size);
      const peerCall = async (): Promise<void> => {
        const out = await pr!.call(text);
        if (out.length !== size) throw new InternalError(`the Moleculer echo answered ${out.length} bytes to ${size}`);
      };
      for (const inFlight of inFlights) {
        const label = `${sizeLabel(size)} x${inFlight}`;
        const sides: Record<Side, (spec: LoadSpec) => Promise<LoadResult>> = {
          framework: (spec) => fw.run(payload, spec),
          raw: (spec) => runLoad(rawCall, spec),
          peer: (spec) => runLoad(peerCall, spec),
        };
        const names: readonly Side[] = pr === undefined ? ['framework', 'raw'] : ['framework', 'raw', 'peer'];
        for (const side of names) await sides[side]({ inFlight, ...warmupSpec });
        const totals = { framework: new LoadTotals(), raw: new LoadTotals(), peer: new LoadTotals() };
        for (let r = 0; r < rounds; r++) {
          // Rotated each round, so that each side follows each other side as often.
          const order = names.map((_, i) => names[(i + r) % names.length]!);
          for (const side of order) totals[side].add(await sides[side]({ inFlight, ...roundSpec }));
        }
        const f = totals.framework.summary();
        const w = totals.raw.summary();
        const p = pr === undefined ? undefined : totals.peer.summary();
        const result: CaseResult = {
          case: label,
          payload_bytes: size,
          in_flight: inFlight,
          framework: f,
          raw: w,
          ...(p === undefined ? {} : { peer: p }),
          throughput_ratio: w.calls_per_s > 0 ? round(f.calls_per_s / w.calls_per_s, 3) : 0,
          ...(p === undefined ? {} : { peer_ratio: p.calls_per_s > 0 ? round(f.calls_per_s / p.calls_per_s, 3) : 0 }),
          p50_added_us: round(f.p50_us - w.p50_us, 1),
          cpu_ratio: w.cpu_us_per_call > 0 ? round(f.cpu_us_per_call / w.cpu_us_per_call, 3) : 0,
        };
        progress(
          `${label.padEnd(10)} framework ${f.calls_per_s.toFixed(0).padStart(6)}/s p50 ${f.p50_us.toFixed(0).padStart(6)} us | ` +
            `raw ${w.calls_per_s.toFixed(0).padStart(6)}/s p50 ${w.p50_us.toFixed(0).padStart(6)} us | ratio ${result.throughput_ratio.toFixed(2)} ` +
            `(cpu/call ${f.cpu_us_per_call.toFixed(0)} vs ${w.cpu_us_per_call.toFixed(0)} us)` +
            (p === undefined ? '' : ` | moleculer ${p.calls_per_s.toFixed(0).padStart(6)}/s p50 ${p.p50_us.toFixed(0).padStart(6)} us | ratio ${(result.peer_ratio ?? 0).toFixed(2)}`),
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
    const ratioCases = cases.filter(
      (c) => (RATIO_CASES.payloads as readonly number[]).includes(c.payload_bytes) && (RATIO_CASES.inFlight as readonly number[]).includes(c.in_flight),
    );
    const streamRatioMin = ratioCases.length === 0 ? null : Math.min(...ratioCases.map((c) => c.throughput_ratio));
    const peerRatios = ratioCases.flatMap((c) => (c.peer_ratio === undefined ? [] : [c.peer_ratio]));
    const peerRatioMin = peerRatios.length === 0 ? null : Math.min(...peerRatios);
    const summary: Summary = {
      summary: true,
      throughput_ratio_min: ratioMin,
      p50_added_us_max: addedMax,
      connections_per_peer: connectionsPerPeer,
      stream_ratio_min: streamRatioMin,
      peer_ratio_min: peerRatioMin,
      targets: TARGETS,
      met: {
        throughput_ratio_min: ratioMin >= TARGETS.throughput_ratio_min,
        p50_added_us_max: addedMax !== null && addedMax <= TARGETS.p50_added_us_max,
        connections_per_peer: connectionsPerPeer <= TARGETS.connections_per_peer,
        stream_ratio_min: streamRatioMin !== null && streamRatioMin >= TARGETS.stream_ratio_min,
        peer_ratio_min: peerRatioMin !== null && peerRatioMin >= TARGETS.peer_ratio_min,
      },
      framework_peers: ports.length,
      raw_connections: accepted.on(rw.port),
      cpu_ratio_max: Math.max(...cases.map((c) => c.cpu_ratio)),
      elapsed_s: round((performance.now() - started) / 1000, 1),
    };
    return { cases, summary };
  } finally {
    progress('closing');
    await Promise.allSettled([framework?.close(), raw?.close(), peer?.close()]);
    accepted.close();
  }
}
