/**
 * A closed-loop load driver: `inFlight` workers, each issuing its next call as
 * soon as its previous one answers, for a fixed time or a fixed number of calls.
 * The same driver runs the framework and the raw client, so whatever it costs
 * (a promise and two clock reads per call) is paid by both sides alike.
 */
import { InvalidArgumentError } from '@taskgraph/api';

export interface LoadSpec {
  readonly inFlight: number;
  /** Stop starting calls once this much time has passed. */
  readonly durationMs?: number;
  /** Stop starting calls once this many have been started. */
  readonly calls?: number;
}

export interface LoadResult {
  /** Calls that completed. */
  readonly calls: number;
  /** From the first call's start to the last call's end. */
  readonly elapsedMs: number;
  /** Each completed call's latency, in microseconds, in completion order. */
  readonly latenciesUs: Float64Array;
  /**
   * CPU time this process spent meanwhile (user + system), in microseconds. Both
   * ends of every call run in this process, so per call it is the cost of a whole
   * round trip, and unlike wall time it hardly changes when other processes load
   * the machine.
   */
  readonly cpuUs: number;
}

export function checkLoadSpec(spec: LoadSpec): void {
  if (!Number.isInteger(spec.inFlight) || spec.inFlight < 1) {
    throw new InvalidArgumentError(`inFlight must be a positive integer, got ${String(spec.inFlight)}`);
  }
  if (spec.durationMs === undefined && spec.calls === undefined) {
    throw new InvalidArgumentError('a load needs durationMs or calls (or both)');
  }
  if (spec.durationMs !== undefined && !(Number.isFinite(spec.durationMs) && spec.durationMs > 0)) {
    throw new InvalidArgumentError(`durationMs must be a positive number, got ${String(spec.durationMs)}`);
  }
  if (spec.calls !== undefined && !(Number.isInteger(spec.calls) && spec.calls > 0)) {
    throw new InvalidArgumentError(`calls must be a positive integer, got ${String(spec.calls)}`);
  }
}

/**
 * Runs `call` under the load `spec` describes. The first failed call fails the
 * whole run (after the calls in flight settle): a benchmark that drops errors
 * would time something other than the calls it claims to time.
 */
export async function runLoad(call: () => Promise<unknown>, spec: LoadSpec): Promise<LoadResult> {
  checkLoadSpec(spec);
  const limit = spec.calls ?? Number.POSITIVE_INFINITY;
  // Preallocated so that recording a latency never allocates during the timed phase.
  let latencies = new Float64Array(Number.isFinite(limit) ? limit : 4096);
  let completed = 0;
  let started = 0;
  let failure: unknown;
  const t0 = performance.now();
  const deadline = spec.durationMs === undefined ? Number.POSITIVE_INFINITY : t0 + spec.durationMs;
  let lastEnd = t0;
  const cpu0 = process.cpuUsage();

  const worker = async (): Promise<void> => {
    while (failure === undefined && started < limit && performance.now() < deadline) {
      started++;
      const begin = performance.now();
      try {
        await call();
      } catch (err) {
        failure ??= err;
        return;
      }
      const end = performance.now();
      if (completed === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[completed++] = (end - begin) * 1000;
      lastEnd = end;
    }
  };

  await Promise.all(Array.from({ length: spec.inFlight }, worker));
  const cpu = process.cpuUsage(cpu0);
  if (failure !== undefined) throw failure;
  return { calls: completed, elapsedMs: lastEnd - t0, latenciesUs: latencies.subarray(0, completed), cpuUs: cpu.user + cpu.system };
}

/** Several runs of one side of one case, added up. */
export class LoadTotals {
  #calls = 0;
  #elapsedMs = 0;
  #cpuUs = 0;
  #parts: Float64Array[] = [];

  add(result: LoadResult): void {
    this.#calls += result.calls;
    this.#elapsedMs += result.elapsedMs;
    this.#cpuUs += result.cpuUs;
    this.#parts.push(result.latenciesUs);
  }

  get calls(): number {
    return this.#calls;
  }

  summary(): { calls: number; calls_per_s: number; p50_us: number; p99_us: number; cpu_us_per_call: number } {
    const all = new Float64Array(this.#calls);
    let at = 0;
    for (const part of this.#parts) {
      all.set(part, at);
      at += part.length;
    }
    all.sort();
    return {
      calls: this.#calls,
      calls_per_s: this.#elapsedMs > 0 ? round((this.#calls * 1000) / this.#elapsedMs, 1) : 0,
      p50_us: round(percentile(all, 0.5), 1),
      p99_us: round(percentile(all, 0.99), 1),
      cpu_us_per_call: this.#calls > 0 ? round(this.#cpuUs / this.#calls, 1) : 0,
    };
  }
}

/** The nearest-rank percentile of sorted values (0 when there are none). */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
