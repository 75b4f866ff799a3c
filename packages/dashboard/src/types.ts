import type { Coordinator, Logger } from '@taskgraph/api';

/**
 * Where per-task request rates come from. The store records none (nodes count
 * their requests in memory), so the dashboard shows rates only when given a source:
 * a metrics system, or the nodes' own counters when they run in the same process.
 */
export interface RequestRateSource {
  /** Says where the numbers come from, on the page ("Prometheus at ...", "node counters"). */
  readonly label?: string;
  /**
   * Starts reporting `job`: call `emit` with the tasks whose rate changed (requests
   * per second; undefined: no longer known), as often as new numbers come. Called
   * when the first page shows the job; the returned function is called when the last
   * page leaves it or the dashboard closes.
   */
  subscribe(job: string, emit: (rates: Iterable<readonly [task: number, perSecond: number | undefined]>) => void): () => void;
}

export interface DashboardOptions {
  /** The store the jobs are in. The dashboard only reads it, and does not close it. */
  readonly coordinator: Coordinator;
  /** The address to listen on. Default 127.0.0.1 (this machine only; see the README's Security). */
  readonly host?: string;
  /** The port; 0 (the default) takes any free one (see `Dashboard.port`). */
  readonly port?: number;
  /** Where warnings go (a store that fails, a page cut off). Default: nowhere. */
  readonly logger?: Logger;
  /** Per-task request rates; without one, the page says they are not available. */
  readonly requestRates?: RequestRateSource;
  /**
   * How often the list of jobs is read again while a page is open, in ms (0: only
   * when a page opens or asks). Default 10 000. Each read lists the whole store (the
   * SPI has no index of jobs), so keep it slow on a large store.
   */
  readonly jobsRefreshMs?: number;
  /** How long changes are gathered into one delta, in ms. Default 100. */
  readonly flushMs?: number;
  /** The most event streams open at once; more are refused with 503. Default 64. */
  readonly maxClients?: number;
}

export interface Dashboard {
  /** The page's address, e.g. `http://127.0.0.1:43121/`. */
  readonly url: string;
  /** The port listened on (the one taken when 0 was asked). */
  readonly port: number;
  /** The address listened on. */
  readonly host: string;
  /** Ends every store watch and every open stream, and stops listening. Idempotent. */
  close(): Promise<void>;
}

/** A job in the store, as the job list shows it. */
export interface JobSummary {
  readonly name: string;
  /** From its spec; absent when the spec is missing or unreadable. */
  readonly numTasks?: number;
  readonly state: 'running' | 'done' | 'failed' | 'unknown';
  readonly epoch?: number;
  /** False when the job has keys but no readable spec. */
  readonly readable: boolean;
}
