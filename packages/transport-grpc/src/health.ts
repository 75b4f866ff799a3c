/**
 * The standard gRPC health service, `grpc.health.v1.Health` (its definition from the
 * `grpc-health-check` package), on every server of this transport, answering for the
 * nodes behind the server. Each node reports whether it serves (`setServingStatus`:
 * it holds a task slot, as a primary or a backup) or not (starting, a standby, left).
 *
 * The names it answers for:
 * - `""` (the whole server) and the data service's own name (`taskgraph.v1.Task` by
 *   default): SERVING while at least one node behind the server serves, NOT_SERVING
 *   otherwise (none has reported yet, all are standbys, all left, the server closes);
 * - `node/<nodeId>`: SERVING while that node serves, NOT_SERVING once it stopped (a node
 *   that left stays NOT_SERVING while the server lives); unknown before it reported.
 *
 * A server that closes turns every name NOT_SERVING, tells its watchers, and ends their
 * streams (so they do not hold up its drain).
 */
import { status as Status } from '@grpc/grpc-js';
import type { Server, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js';

/** The prefix of a node's own name in the health service. */
export const NODE_HEALTH_PREFIX = 'node/';

export type HealthStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

interface HealthRequest {
  readonly service?: string;
}

interface HealthResponse {
  readonly status: HealthStatus;
}

let definition: Promise<ServiceDefinition> | undefined;

/** The health service's definition, loaded once, when the first server starts (it parses a .proto). */
function healthDefinition(): Promise<ServiceDefinition> {
  definition ??= import('grpc-health-check').then((m) => {
    const service = (m as { service?: unknown; default?: { service?: unknown } }).service ?? (m as { default?: { service?: unknown } }).default?.service;
    if (service === undefined) throw new Error('grpc-health-check exports no service definition');
    return service as ServiceDefinition;
  });
  return definition;
}

interface Watcher {
  readonly call: ServerWritableStream<HealthRequest, HealthResponse>;
  last: HealthStatus | undefined;
}

export class HealthService {
  /** Each node's report: true while it serves. */
  readonly #nodes = new Map<string, boolean>();
  readonly #watchers = new Map<string, Set<Watcher>>();
  #closed = false;

  private constructor(private readonly dataService: string) {}

  /** Adds the health service to `server` (before or after it is bound). */
  static async addTo(server: Server, dataService: string): Promise<HealthService> {
    const health = new HealthService(dataService);
    server.addService(await healthDefinition(), health.#implementation());
    return health;
  }

  /** What `name` is now: undefined for a name this server does not know. */
  status(name: string): HealthStatus | undefined {
    if (name === '' || name === this.dataService) return this.serving ? 'SERVING' : 'NOT_SERVING';
    if (!name.startsWith(NODE_HEALTH_PREFIX)) return undefined;
    const node = this.#nodes.get(name.slice(NODE_HEALTH_PREFIX.length));
    return node === undefined ? undefined : node ? 'SERVING' : 'NOT_SERVING';
  }

  /** True while at least one node behind the server serves. */
  get serving(): boolean {
    if (this.#closed) return false;
    for (const s of this.#nodes.values()) if (s) return true;
    return false;
  }

  /** Each node's report (true: serving). */
  get nodes(): Readonly<Record<string, boolean>> {
    return Object.fromEntries(this.#nodes);
  }

  /** A node's report. */
  set(node: string, serving: boolean): void {
    if (this.#closed || typeof node !== 'string' || node === '') return;
    this.#nodes.set(node, serving === true);
    this.#notify();
  }

  /** The server closes: every name is NOT_SERVING from now on; watchers hear it and their streams end. */
  close(): void {
    if (this.#closed) return;
    for (const node of this.#nodes.keys()) this.#nodes.set(node, false);
    this.#closed = true;
    this.#notify();
    for (const set of this.#watchers.values()) for (const w of set) w.call.end();
    this.#watchers.clear();
  }

  #notify(): void {
    for (const [name, set] of this.#watchers) {
      const now = this.status(name) ?? 'SERVICE_UNKNOWN';
      for (const w of set) this.#send(w, now);
    }
  }

  #send(w: Watcher, status: HealthStatus): void {
    if (w.last === status) return;
    w.last = status;
    w.call.write({ status });
  }

  #implementation(): UntypedServiceImplementation {
    return {
      check: (call: ServerUnaryCall<HealthRequest, HealthResponse>, callback: sendUnaryData<HealthResponse>) => {
        const name = call.request.service ?? '';
        const status = this.status(name);
        if (status === undefined) callback({ code: Status.NOT_FOUND, details: `health status unknown for service ${JSON.stringify(name)}` });
        else callback(null, { status });
      },
      watch: (call: ServerWritableStream<HealthRequest, HealthResponse>) => {
        const name = call.request.service ?? '';
        const w: Watcher = { call, last: undefined };
        this.#send(w, this.status(name) ?? 'SERVICE_UNKNOWN');
        if (this.#closed) {
          call.end();
          return;
        }
        let set = this.#watchers.get(name);
        if (set === undefined) this.#watchers.set(name, (set = new Set()));
        set.add(w);
        const forget = () => {
          set.delete(w);
          if (set.size === 0 && this.#watchers.get(name) === set) this.#watchers.delete(name);
        };
        call.on('cancelled', forget);
        call.on('close', forget);
      },
      list: (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<{ statuses: Record<string, HealthResponse> }>) => {
        const statuses: Record<string, HealthResponse> = {};
        for (const name of ['', this.dataService, ...[...this.#nodes.keys()].map((n) => NODE_HEALTH_PREFIX + n)]) {
          statuses[name] = { status: this.status(name) ?? 'SERVICE_UNKNOWN' };
        }
        callback(null, { statuses });
      },
    };
  }
}
