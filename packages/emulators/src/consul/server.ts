/**
 * The HTTP face of the emulator: Consul's `/v1/kv`, `/v1/txn`, `/v1/session/*`
 * and `/v1/status/*` endpoints over node:http, with Consul's status codes, bodies
 * and headers, blocking queries, and the fault switches tests turn on and off.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { realClock } from './clock.js';
import type { EmulatorClock, EmulatorTimerHandle } from './clock.js';
import { parseGoDuration } from './durations.js';
import { hasUnprintable, kvKeyProblem } from './key-rules.js';
import type { KeyRules } from './key-rules.js';
import { ConsulStore, SERF_HEALTH, StoreRequestError, isWriteVerb } from './store.js';
import type { ConsulSnapshot, KvEntry, ServiceCheckRef, SessionRecord, StoreChange, TxnKvOp } from './store.js';

export interface ConsulEmulatorOptions {
  /** Default 0: a free port. `stop()`/`start()` keep the port once chosen. */
  readonly port?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Drives session TTLs, lock-delays and blocking-query waits. Default: the real clock. */
  readonly clock?: EmulatorClock;
  /** The jitter source for blocking-query timeouts; default Math.random. */
  readonly random?: () => number;
  readonly datacenter?: string;
  readonly nodeName?: string;
  /** When set, every request must carry this ACL token (X-Consul-Token, Bearer or ?token). */
  readonly aclToken?: string;
  /** `/v1/kv` key checks: Consul >= 1.21.5 ('strict', the default) or older servers ('permissive'). */
  readonly keyRules?: KeyRules;
  /** kv_max_value_size, default 512 KiB. */
  readonly kvMaxValueSize?: number;
  /** txn_max_req_len, default 512 KiB (the larger of this and kvMaxValueSize applies). */
  readonly txnMaxReqLen?: number;
  /** session_ttl_min, default 10 s. */
  readonly sessionTtlMinMs?: number;
  /** Real Consul invalidates a session TTL x 2 after its last renewal. Default 2. */
  readonly sessionTtlMultiplier?: number;
  /** max_query_time, default 10 min. */
  readonly maxQueryTimeMs?: number;
  /** default_query_time, default 5 min. */
  readonly defaultQueryTimeMs?: number;
  /** The Raft index before the first write. Default 10. */
  readonly initialIndex?: number;
  /** Serve HTTPS (Consul's `https` port); with `ca` and `requireClientCert`, verify client certificates too. */
  readonly tls?: ConsulEmulatorTls;
}

export interface ConsulEmulatorTls {
  readonly key: string | Buffer;
  readonly cert: string | Buffer;
  readonly ca?: string | Buffer;
  /** Consul's verify_incoming: refuse clients without a certificate signed by `ca`. */
  readonly requireClientCert?: boolean;
}

/** What the emulator does wrong on purpose. Change the fields at any time. */
export interface ConsulFaults {
  /**
   * 'no-leader': every request gets 500 "No cluster leader" (Consul without a quorum);
   * 'service-unavailable': 503, as from a load balancer or a rate limiter; false: normal.
   */
  unavailable: false | 'no-leader' | 'service-unavailable';
  /** Each request waits this long (real time) before it is handled: a slow network or server. */
  delayMs: number;
  /** Each request is handled (writes applied) and then its answer waits this long. */
  delayAnswerMs: number;
  /** The next N requests are handled (writes applied) and their connection is cut without an answer. */
  dropAnswers: number;
  /** Like dropAnswers, for the requests this picks (by method and path, e.g. the second PUT /v1/txn). */
  dropAnswerWhen: ((request: { readonly method: string; readonly path: string }) => boolean) | undefined;
}

interface Reply {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array;
}

type Scope = { readonly kind: 'key'; readonly key: string } | { readonly kind: 'prefix'; readonly prefix: string } | { readonly kind: 'sessions' };

interface QueryOptions {
  readonly minIndex: number;
  readonly waitMs: number;
  readonly consistency: string;
}

const SESSION_TTL_MAX_MS = 24 * 3_600_000;
const MAX_TXN_OPS = 64;
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** Consul turns a numeric LockDelay below this many nanoseconds into seconds. */
const LOCK_DELAY_SECONDS_THRESHOLD = 1000;

const EMPTY_HEADERS: Readonly<Record<string, string>> = {};

function text(status: number, body: string, headers: Readonly<Record<string, string>> = EMPTY_HEADERS): Reply {
  return { status, headers: { 'Content-Type': 'text/plain; charset=utf-8', ...headers }, body };
}

function json(body: string, headers: Readonly<Record<string, string>> = EMPTY_HEADERS, status = 200): Reply {
  return { status, headers: { 'Content-Type': 'application/json', ...headers }, body };
}

export function entryJson(e: KvEntry): string {
  const value = e.value === null || e.value.length === 0 ? 'null' : JSON.stringify(Buffer.from(e.value).toString('base64'));
  const session = e.session === '' ? '' : `,"Session":${JSON.stringify(e.session)}`;
  return `{"LockIndex":${e.lockIndex},"Key":${JSON.stringify(e.key)},"Flags":${e.flags.toString()},"Value":${value}${session},"CreateIndex":${e.createIndex},"ModifyIndex":${e.modifyIndex}}`;
}

function sessionJson(s: SessionRecord): unknown {
  return {
    ID: s.id,
    Name: s.name,
    Node: s.node,
    LockDelay: Math.round(s.lockDelayMs * 1e6),
    Behavior: s.behavior,
    TTL: s.ttl,
    NodeChecks: s.nodeChecks.length > 0 ? s.nodeChecks : null,
    ServiceChecks: s.serviceChecks.length > 0 ? s.serviceChecks : null,
    CreateIndex: s.createIndex,
    ModifyIndex: s.modifyIndex,
  };
}

/** Go's JSON decoding matches field names case-insensitively. */
function field(obj: Record<string, unknown>, name: string): unknown {
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(obj)) if (k.toLowerCase() === lower) return v;
  return undefined;
}

function hasField(obj: Record<string, unknown>, name: string): boolean {
  const lower = name.toLowerCase();
  return Object.keys(obj).some((k) => k.toLowerCase() === lower);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class BadRequest extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

function parseUint(raw: string, what: string): bigint {
  if (!/^\d+$/.test(raw)) throw new BadRequest(`strconv.ParseUint: parsing ${JSON.stringify(raw)}: invalid syntax`, what === 'index' ? 400 : 500);
  const n = BigInt(raw);
  if (n > 0xffff_ffff_ffff_ffffn) throw new BadRequest(`strconv.ParseUint: parsing ${JSON.stringify(raw)}: value out of range`, 500);
  return n;
}

function decodeBase64(value: unknown): Uint8Array | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string') throw new BadRequest(`Failed to parse body: failed to decode value: unexpected value type: ${typeof value}`);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
    throw new BadRequest('Failed to parse body: failed to decode value: illegal base64 data');
  }
  return new Uint8Array(Buffer.from(value, 'base64'));
}

function uintField(obj: Record<string, unknown>, name: string): number {
  const v = field(obj, name);
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new BadRequest(`Failed to parse body: ${name} must be an unsigned integer`);
  return v;
}

function stringField(obj: Record<string, unknown>, name: string): string {
  const v = field(obj, name);
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new BadRequest(`Failed to parse body: ${name} must be a string`);
  return v;
}

/** One blocking query waiting for a change in its scope. */
interface Waiter {
  readonly scope: Scope;
  wake(change: StoreChange): void;
}

function concerns(scope: Scope, change: StoreChange): boolean {
  switch (change.kind) {
    case 'abandon':
      return true;
    case 'sessions':
      return scope.kind === 'sessions';
    case 'kv':
      if (scope.kind === 'key') return change.keys.includes(scope.key);
      if (scope.kind === 'prefix') return change.keys.some((k) => k.startsWith(scope.prefix));
      return false;
  }
}

export class ConsulEmulator {
  readonly faults: ConsulFaults = { unavailable: false, delayMs: 0, delayAnswerMs: 0, dropAnswers: 0, dropAnswerWhen: undefined };
  /** The state behind the HTTP API, for tests that inspect it directly. */
  readonly store: ConsulStore;
  readonly #options: Required<Omit<ConsulEmulatorOptions, 'aclToken' | 'port' | 'tls'>> & { aclToken: string | undefined };
  readonly #tls: ConsulEmulatorTls | undefined;
  readonly #clock: EmulatorClock;
  readonly #waiters = new Set<Waiter>();
  readonly #sockets = new Set<Socket>();
  readonly #pendingTimers = new Set<ReturnType<typeof setTimeout>>();
  #server: Server | undefined;
  #port: number;
  #closed = false;
  #requests = 0;
  readonly #requestListeners = new Set<(request: { readonly method: string; readonly path: string }) => void>();

  /** Use {@link startConsulEmulator}. */
  constructor(options: ConsulEmulatorOptions = {}) {
    this.#clock = options.clock ?? realClock;
    this.#port = options.port ?? 0;
    this.#tls = options.tls;
    this.#options = {
      host: options.host ?? '127.0.0.1',
      clock: this.#clock,
      random: options.random ?? Math.random,
      datacenter: options.datacenter ?? 'dc1',
      nodeName: options.nodeName ?? 'consul-emulator',
      aclToken: options.aclToken,
      keyRules: options.keyRules ?? 'strict',
      kvMaxValueSize: options.kvMaxValueSize ?? 512 * 1024,
      txnMaxReqLen: options.txnMaxReqLen ?? 512 * 1024,
      sessionTtlMinMs: options.sessionTtlMinMs ?? 10_000,
      sessionTtlMultiplier: options.sessionTtlMultiplier ?? 2,
      maxQueryTimeMs: options.maxQueryTimeMs ?? 600_000,
      defaultQueryTimeMs: options.defaultQueryTimeMs ?? 300_000,
      initialIndex: options.initialIndex ?? 10,
    };
    this.store = new ConsulStore({
      clock: this.#clock,
      initialIndex: this.#options.initialIndex,
      nodeName: this.#options.nodeName,
      sessionTtlMultiplier: this.#options.sessionTtlMultiplier,
      sessionTtlMinMs: this.#options.sessionTtlMinMs,
      sessionTtlMaxMs: SESSION_TTL_MAX_MS,
    });
    this.store.onChange((change) => {
      for (const waiter of [...this.#waiters]) if (concerns(waiter.scope, change)) waiter.wake(change);
    });
  }

  get host(): string {
    return this.#options.host;
  }

  get port(): number {
    return this.#port;
  }

  /** `http://host:port`, usable as soon as the emulator has started. */
  get url(): string {
    const host = this.#options.host.includes(':') ? `[${this.#options.host}]` : this.#options.host;
    return `${this.#tls ? 'https' : 'http'}://${host}:${this.#port}`;
  }

  /** Whether it is listening now. */
  get running(): boolean {
    return this.#server !== undefined;
  }

  /** Requests received so far (every one, answered or not). */
  get requestCount(): number {
    return this.#requests;
  }

  /**
   * Calls `listener` with the method and URL path of every request received from now
   * on (answered or not), until the returned function is called. Lets a test count
   * only its own client's requests when others share the emulator.
   */
  onRequest(listener: (request: { readonly method: string; readonly path: string }) => void): () => void {
    this.#requestListeners.add(listener);
    return () => this.#requestListeners.delete(listener);
  }

  /** Blocking queries waiting right now. */
  get blockingQueries(): number {
    return this.#waiters.size;
  }

  /** Starts listening (again, on the same port after a stop). Session timers restart at full length. */
  async start(): Promise<void> {
    if (this.#closed) throw new Error('the Consul emulator was closed');
    if (this.#server) return;
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.#handle(req, res);
    const tls = this.#tls;
    const server: Server = tls
      ? createTlsServer(
          {
            key: tls.key,
            cert: tls.cert,
            ...(tls.ca === undefined ? {} : { ca: tls.ca }),
            requestCert: tls.requireClientCert === true,
            rejectUnauthorized: tls.requireClientCert === true,
          },
          handler,
        )
      : createServer(handler);
    server.keepAliveTimeout = 30_000;
    // The raw TCP socket, also under TLS: destroying it ends a handshake in progress too.
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#port, this.#options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
    this.store.resumeTimers();
  }

  /**
   * Stops listening (new connections are refused) and cuts every open connection,
   * keeping all state. Sessions do not expire while stopped.
   */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    this.store.pauseTimers();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    for (const waiter of [...this.#waiters]) waiter.wake({ kind: 'abandon' });
    for (const t of this.#pendingTimers) clearTimeout(t);
    this.#pendingTimers.clear();
    await closed;
  }

  /** Stops for good and releases every timer and socket. */
  async close(): Promise<void> {
    await this.stop();
    this.#closed = true;
    this.store.close();
  }

  /** The state as `consul snapshot save` would keep it. */
  snapshot(): ConsulSnapshot {
    return this.store.snapshot();
  }

  /**
   * Restores a snapshot: queried indexes go back to the snapshot's and blocking
   * queries return at once. With `rewindIndex` the Raft index goes back too (a
   * cluster rebuilt from a backup), so later writes reuse indexes already seen.
   */
  restore(snapshot: ConsulSnapshot, options: { rewindIndex?: boolean } = {}): void {
    this.store.restore(snapshot, options);
  }

  /** Invalidates a session now, as its TTL running out would. */
  expireSession(id: string): boolean {
    return this.store.destroySession(id);
  }

  // ---- request pipeline ------------------------------------------------------

  #handle(req: IncomingMessage, res: ServerResponse): void {
    this.#requests += 1;
    if (this.#requestListeners.size > 0) {
      const request = { method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://emulator').pathname };
      for (const listener of this.#requestListeners) listener(request);
    }
    void this.#respond(req, res).catch((err: unknown) => {
      if (!res.headersSent && !res.destroyed) this.#send(res, text(500, String(err)));
    });
  }

  async #respond(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.faults.delayMs > 0) await this.#sleep(this.faults.delayMs, res);
    if (res.destroyed || !this.#server) return;
    let reply: Reply;
    try {
      reply = await this.#route(req, res);
    } catch (err) {
      if (err instanceof BadRequest) reply = text(err.status, err.message);
      else if (err instanceof StoreRequestError) reply = text(500, err.message);
      else throw err;
    }
    const picked = this.faults.dropAnswerWhen?.({ method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://emulator').pathname }) === true;
    if (picked || this.faults.dropAnswers > 0) {
      if (!picked) this.faults.dropAnswers -= 1;
      req.socket.destroy();
      return;
    }
    if (this.faults.delayAnswerMs > 0) await this.#sleep(this.faults.delayAnswerMs, res);
    if (res.destroyed) return;
    this.#send(res, reply);
  }

  #send(res: ServerResponse, reply: Reply): void {
    const body = reply.body ?? '';
    res.writeHead(reply.status, { ...reply.headers, 'Content-Length': String(Buffer.byteLength(body)) });
    res.end(body);
  }

  #sleep(ms: number, res: ServerResponse): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#pendingTimers.delete(t);
        res.off('close', done);
        resolve();
      }, ms);
      this.#pendingTimers.add(t);
      const done = (): void => {
        clearTimeout(t);
        this.#pendingTimers.delete(t);
        resolve();
      };
      res.once('close', done);
    });
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<Reply> {
    const url = new URL(req.url ?? '/', 'http://emulator');
    let path: string;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      throw new BadRequest('Invalid URL path: malformed escape');
    }
    if (hasUnprintable(path)) throw new BadRequest(`Invalid URL path: ${JSON.stringify(path)} contains unprintable characters`);
    const params = url.searchParams;
    const method = req.method ?? 'GET';

    const denied = this.#checkToken(req, params);
    if (denied) return denied;
    const dc = params.get('dc');
    if (dc !== null && dc !== '' && dc !== this.#options.datacenter) return text(500, 'No path to datacenter');
    if (this.faults.unavailable === 'no-leader') return text(500, 'No cluster leader');
    if (this.faults.unavailable === 'service-unavailable') return text(503, 'Service Unavailable');

    if (path === '/v1/kv' || path.startsWith('/v1/kv/')) {
      const key = path === '/v1/kv' ? '' : path.slice('/v1/kv/'.length);
      return this.#kv(method, key, params, req, res);
    }
    if (path === '/v1/txn') {
      if (method !== 'PUT') return this.#methodNotAllowed(method, ['PUT']);
      return this.#txn(req, params);
    }
    if (path.startsWith('/v1/session/')) return this.#session(method, path.slice('/v1/session/'.length), params, req, res);
    if (path === '/v1/status/leader') return json(JSON.stringify(`${this.#options.host}:8300`));
    if (path === '/v1/status/peers') return json(JSON.stringify([`${this.#options.host}:8300`]));
    if (path.includes('/v1/')) return text(404, 'Invalid URL path: not a recognized HTTP API endpoint\n');
    return text(404, "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n");
  }

  #checkToken(req: IncomingMessage, params: URLSearchParams): Reply | undefined {
    const expected = this.#options.aclToken;
    if (expected === undefined) return undefined;
    let token = params.get('token') ?? '';
    if (token === '') token = String(req.headers['x-consul-token'] ?? '');
    if (token === '') {
      const auth = String(req.headers.authorization ?? '');
      const [scheme, value] = auth.split(/\s+/, 2);
      if (scheme?.toLowerCase() === 'bearer' && value) token = value;
    }
    if (token === '') return text(403, 'Permission denied: anonymous token lacks permission');
    if (token !== expected) return text(403, 'ACL not found');
    return undefined;
  }

  #methodNotAllowed(method: string, allowed: readonly string[]): Reply {
    return text(405, `method ${method} not allowed`, { Allow: ['OPTIONS', ...allowed].join(',') });
  }

  #queryOptions(params: URLSearchParams): QueryOptions {
    let waitMs = 0;
    const wait = params.get('wait');
    if (wait !== null && wait !== '') {
      const parsed = parseGoDuration(wait);
      if (parsed === undefined) throw new BadRequest('Invalid wait time');
      waitMs = parsed;
    }
    let minIndex = 0;
    const index = params.get('index');
    if (index !== null && index !== '') {
      if (!/^\d+$/.test(index)) throw new BadRequest('Invalid index');
      minIndex = Number(index);
    }
    const stale = params.has('stale');
    const consistent = params.has('consistent');
    if (stale && consistent) throw new BadRequest('Cannot specify ?stale with ?consistent, conflicting semantics.');
    return { minIndex, waitMs, consistency: stale ? 'stale' : consistent ? 'consistent' : 'leader' };
  }

  #readHeaders(index: number, consistency: string): Record<string, string> {
    // Consul never sends index 0: a client blocking on 0 would spin.
    return {
      'X-Consul-Index': String(index === 0 ? 1 : index),
      'X-Consul-KnownLeader': 'true',
      'X-Consul-LastContact': '0',
      'X-Consul-Effective-Consistency': consistency,
    };
  }

  /**
   * Runs a query; with `?index=N` holds it until the query's index exceeds N, the
   * state is replaced, or the wait (capped at max_query_time, plus up to 1/16 of it
   * as jitter) runs out, and then answers with the current result.
   */
  async #blocking(
    options: QueryOptions,
    scope: Scope,
    res: ServerResponse,
    query: () => { readonly index: number; readonly reply: (headers: Record<string, string>) => Reply },
  ): Promise<Reply> {
    const answer = (): Reply => {
      const q = query();
      return q.reply(this.#readHeaders(q.index, options.consistency));
    };
    if (options.minIndex === 0 || query().index > options.minIndex) return answer();
    let timeout = options.waitMs;
    if (timeout > this.#options.maxQueryTimeMs) timeout = this.#options.maxQueryTimeMs;
    else if (timeout <= 0) timeout = this.#options.defaultQueryTimeMs;
    timeout += this.#options.random() * (timeout / 16);

    await new Promise<void>((resolve) => {
      const state: { timer?: EmulatorTimerHandle } = {};
      const finish = (): void => {
        this.#waiters.delete(waiter);
        if (state.timer !== undefined) this.#clock.clearTimeout(state.timer);
        res.off('close', finish);
        resolve();
      };
      const waiter: Waiter = {
        scope,
        wake: (change) => {
          if (change.kind === 'abandon' || query().index > options.minIndex) finish();
        },
      };
      this.#waiters.add(waiter);
      state.timer = this.#clock.setTimeout(finish, timeout);
      state.timer.unref?.();
      res.once('close', finish);
    });
    return answer();
  }

  // ---- /v1/kv ------------------------------------------------------------------

  async #kv(method: string, key: string, params: URLSearchParams, req: IncomingMessage, res: ServerResponse): Promise<Reply> {
    if (method !== 'GET' && method !== 'PUT' && method !== 'DELETE') return this.#methodNotAllowed(method, ['GET', 'PUT', 'DELETE']);
    if (key !== '') {
      const problem = kvKeyProblem(key, this.#options.keyRules);
      if (problem) throw new BadRequest(problem);
    }
    if (method === 'GET') return this.#kvGet(key, params, res);
    if (method === 'PUT') return this.#kvPut(key, params, req);
    return this.#kvDelete(key, params);
  }

  async #kvGet(key: string, params: URLSearchParams, res: ServerResponse): Promise<Reply> {
    const options = this.#queryOptions(params);
    if (params.has('keys')) {
      const separator = params.get('separator') ?? params.get('seperator') ?? '';
      return this.#blocking(options, { kind: 'prefix', prefix: key }, res, () => {
        const entries = this.store.listKeys(key);
        const keys: string[] = [];
        const seen = new Set<string>();
        for (const e of entries) {
          if (separator === '') {
            keys.push(e.key);
            continue;
          }
          const at = e.key.indexOf(separator, key.length);
          const k = at >= 0 ? e.key.slice(0, at + separator.length) : e.key;
          if (!seen.has(k)) {
            seen.add(k);
            keys.push(k);
          }
        }
        return {
          index: this.store.prefixIndex(key),
          reply: (headers) => (keys.length === 0 && key !== '' ? { status: 404, headers } : json(JSON.stringify(keys), headers)),
        };
      });
    }
    if (params.has('recurse')) {
      return this.#blocking(options, { kind: 'prefix', prefix: key }, res, () => {
        const entries = this.store.listKeys(key);
        return {
          index: this.store.prefixIndex(key),
          reply: (headers) => (entries.length === 0 ? { status: 404, headers } : json(`[${entries.map(entryJson).join(',')}]`, headers)),
        };
      });
    }
    if (key === '') throw new BadRequest('Missing key name');
    return this.#blocking(options, { kind: 'key', key }, res, () => {
      const entry = this.store.getKey(key);
      return {
        index: this.store.keyIndex(key),
        reply: (headers) => {
          if (!entry) return { status: 404, headers };
          if (params.has('raw')) {
            return {
              status: 200,
              headers: { ...headers, 'Content-Type': 'text/plain', 'X-Content-Type-Options': 'nosniff', 'Content-Security-Policy': 'sandbox' },
              body: entry.value ?? new Uint8Array(0),
            };
          }
          return json(`[${entryJson(entry)}]`, headers);
        },
      };
    });
  }

  #conflicting(params: URLSearchParams, ...flags: string[]): boolean {
    return flags.filter((f) => params.has(f)).length > 1;
  }

  async #kvPut(key: string, params: URLSearchParams, req: IncomingMessage): Promise<Reply> {
    if (key === '') throw new BadRequest('Missing key name');
    if (this.#conflicting(params, 'cas', 'acquire', 'release')) return text(400, `Conflicting flags: ${params.toString()}\n`);
    let verb = 'set';
    let flags = 0n;
    let index = 0;
    let session = '';
    const flagsRaw = params.get('flags');
    if (flagsRaw !== null) flags = parseUint(flagsRaw, 'flags');
    const cas = params.get('cas');
    if (cas !== null) {
      index = Number(parseUint(cas, 'cas'));
      verb = 'cas';
    }
    if (params.has('acquire')) {
      session = params.get('acquire') ?? '';
      verb = 'lock';
    }
    if (params.has('release')) {
      session = params.get('release') ?? '';
      verb = 'unlock';
    }
    const declared = Number(req.headers['content-length'] ?? '-1');
    const max = this.#options.kvMaxValueSize;
    if (declared > max) {
      throw new BadRequest(
        `Request body(${declared} bytes) too large, max size: ${max} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.`,
        413,
      );
    }
    const body = await readBody(req, MAX_BODY_BYTES);
    const applied = this.store.put({ verb, key, value: body.length === 0 ? null : body, flags, index, session });
    // A plain set always answers true; the conditional forms answer whether they applied.
    return json(verb === 'set' ? 'true' : String(applied));
  }

  #kvDelete(key: string, params: URLSearchParams): Reply {
    if (this.#conflicting(params, 'recurse', 'cas')) return text(400, `Conflicting flags: ${params.toString()}\n`);
    let verb = 'delete';
    let index = 0;
    if (params.has('recurse')) verb = 'delete-tree';
    else if (key === '') throw new BadRequest('Missing key name');
    const cas = params.get('cas');
    if (cas !== null) {
      index = Number(parseUint(cas, 'cas'));
      verb = 'delete-cas';
    }
    const outcome = this.store.transact([{ verb, key, value: null, flags: 0n, index, session: '' }]);
    return json(verb === 'delete-cas' ? String(outcome.ok) : 'true');
  }

  // ---- /v1/txn -----------------------------------------------------------------

  async #txn(req: IncomingMessage, params: URLSearchParams): Promise<Reply> {
    const maxLen = Math.max(this.#options.txnMaxReqLen, this.#options.kvMaxValueSize);
    const tooLarge = text(413, `Request body too large, max size: ${maxLen} bytes`);
    const declared = Number(req.headers['content-length'] ?? '-1');
    if (declared > maxLen) return tooLarge;
    const body = await readBody(req, maxLen);
    if (body.length > maxLen) return tooLarge;
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(body).toString('utf8'));
    } catch (err) {
      return text(400, `Failed to parse body: ${(err as Error).message}`);
    }
    if (!Array.isArray(raw)) return text(400, 'Failed to parse body: json: cannot unmarshal object into Go value of type api.TxnOps');
    if (raw.length > MAX_TXN_OPS) return text(413, `Transaction contains too many operations (${raw.length} > ${MAX_TXN_OPS})`);
    const ops: TxnKvOp[] = [];
    for (const item of raw) {
      if (!isRecord(item)) throw new BadRequest('Failed to parse body: an operation must be an object');
      const kv = field(item, 'KV');
      if (!isRecord(kv)) {
        const kind = ['Node', 'Service', 'Check', 'Session'].find((k) => hasField(item, k)) ?? 'unknown';
        throw new BadRequest(`the Consul emulator supports only KV operations in /v1/txn, not ${kind}`);
      }
      const value = decodeBase64(field(kv, 'Value'));
      const key = stringField(kv, 'Key');
      if (value !== null && value.length > this.#options.kvMaxValueSize) {
        return text(413, `Value for key ${JSON.stringify(key)} is too large (${value.length} > ${this.#options.kvMaxValueSize} bytes)`);
      }
      ops.push({
        verb: stringField(kv, 'Verb'),
        key,
        value,
        flags: BigInt(uintField(kv, 'Flags')),
        index: uintField(kv, 'Index'),
        session: stringField(kv, 'Session'),
      });
    }
    const readOnly = !ops.some((op) => isWriteVerb(op.verb));
    let headers: Record<string, string> = {};
    if (readOnly) {
      const options = this.#queryOptions(params);
      headers = { 'X-Consul-KnownLeader': 'true', 'X-Consul-LastContact': '0', 'X-Consul-Effective-Consistency': options.consistency };
    }
    const outcome = this.store.transact(ops);
    if (!outcome.ok) {
      const errors = outcome.errors.map((e) => ({ OpIndex: e.opIndex, What: e.what }));
      return json(`{"Results":null,"Errors":${JSON.stringify(errors)}}`, headers, 409);
    }
    return json(`{"Results":[${outcome.results.map((e) => `{"KV":${entryJson(e)}}`).join(',')}],"Errors":null}`, headers);
  }

  // ---- /v1/session -------------------------------------------------------------

  async #session(method: string, rest: string, params: URLSearchParams, req: IncomingMessage, res: ServerResponse): Promise<Reply> {
    const [action, ...idParts] = rest.split('/');
    const id = idParts.join('/');
    switch (action) {
      case 'create':
        if (method !== 'PUT') return this.#methodNotAllowed(method, ['PUT']);
        return this.#sessionCreate(req);
      case 'destroy':
        if (method !== 'PUT') return this.#methodNotAllowed(method, ['PUT']);
        if (id === '') return text(400, 'Missing session');
        this.store.destroySession(id);
        return json('true');
      case 'renew': {
        if (method !== 'PUT') return this.#methodNotAllowed(method, ['PUT']);
        if (id === '') return text(400, 'Missing session');
        const record = this.store.renewSession(id);
        if (!record) return text(404, `Session id '${id}' not found`);
        return json(JSON.stringify([sessionJson(record)]));
      }
      case 'info': {
        if (method !== 'GET') return this.#methodNotAllowed(method, ['GET']);
        if (id === '') return text(400, 'Missing session');
        const options = this.#queryOptions(params);
        return this.#blocking(options, { kind: 'sessions' }, res, () => {
          const record = this.store.getSession(id);
          return { index: this.store.sessionsTableIndex, reply: (h) => json(JSON.stringify(record ? [sessionJson(record)] : []), h) };
        });
      }
      case 'list':
      case 'node': {
        if (method !== 'GET') return this.#methodNotAllowed(method, ['GET']);
        if (action === 'node' && id === '') return text(400, 'Missing node name');
        const options = this.#queryOptions(params);
        return this.#blocking(options, { kind: 'sessions' }, res, () => {
          const all = this.store.listSessions().filter((s) => action === 'list' || s.node === id);
          return { index: this.store.sessionsTableIndex, reply: (h) => json(JSON.stringify(all.map(sessionJson)), h) };
        });
      }
      default:
        return text(404, 'Invalid URL path: not a recognized HTTP API endpoint\n');
    }
  }

  async #sessionCreate(req: IncomingMessage): Promise<Reply> {
    const body = await readBody(req, MAX_BODY_BYTES);
    let input: Record<string, unknown> = {};
    if (body.length > 0) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.from(body).toString('utf8'));
      } catch (err) {
        return text(400, `Request decode failed: ${(err as Error).message}`);
      }
      if (!isRecord(parsed)) return text(400, 'Request decode failed: the body must be a JSON object');
      input = parsed;
    }
    let lockDelayMs = 15_000;
    if (hasField(input, 'LockDelay')) {
      const raw = field(input, 'LockDelay');
      let ns: number;
      if (typeof raw === 'string') {
        const ms = parseGoDuration(raw);
        if (ms === undefined) return text(400, `Request decode failed: time: invalid duration ${JSON.stringify(raw)}`);
        ns = ms * 1e6;
      } else if (typeof raw === 'number') {
        ns = raw;
      } else {
        return text(400, 'Request decode failed: LockDelay must be a duration string or a number');
      }
      if (ns < LOCK_DELAY_SECONDS_THRESHOLD) ns *= 1e9;
      lockDelayMs = ns / 1e6;
    }
    const ttl = hasField(input, 'TTL') ? String(field(input, 'TTL') ?? '') : '';
    const explicitChecks = ['Checks', 'NodeChecks', 'ServiceChecks'].some((f) => hasField(input, f));
    const strings = (name: string): string[] => {
      const v = field(input, name);
      return Array.isArray(v) ? v.map((x) => String(x)) : [];
    };
    const serviceChecks: ServiceCheckRef[] = [];
    const rawService = field(input, 'ServiceChecks');
    if (Array.isArray(rawService)) {
      for (const c of rawService) serviceChecks.push({ ID: isRecord(c) ? String(field(c, 'ID') ?? '') : '', Namespace: '' });
    }
    const nodeChecks = explicitChecks ? [...new Set([...strings('Checks'), ...strings('NodeChecks')])] : [SERF_HEALTH];
    const record = this.store.createSession({
      name: stringField(input, 'Name'),
      node: hasField(input, 'Node') && stringField(input, 'Node') !== '' ? stringField(input, 'Node') : this.#options.nodeName,
      lockDelayMs,
      behavior: hasField(input, 'Behavior') && stringField(input, 'Behavior') !== '' ? stringField(input, 'Behavior') : 'release',
      ttl,
      ttlMs: ttl === '' ? undefined : parseGoDuration(ttl),
      nodeChecks,
      serviceChecks,
    });
    return json(JSON.stringify({ ID: record.id }));
  }
}

async function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    // Keep one byte past the limit so the caller can tell the body was too large.
    if (size > limit + 1) continue;
    chunks.push(buf);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/** Starts an emulator on a free loopback port (or the one given). */
export async function startConsulEmulator(options: ConsulEmulatorOptions = {}): Promise<ConsulEmulator> {
  const emulator = new ConsulEmulator(options);
  await emulator.start();
  return emulator;
}
