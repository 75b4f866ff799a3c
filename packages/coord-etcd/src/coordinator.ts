/**
 * The etcd v3 coordinator: the Coordinator contract on etcd's KV, Watch and Lease
 * APIs, through the etcd3 client's low-level RPC clients.
 *
 * version = mod_revision; create/update/delete are transactions comparing the
 * key's create or mod revision; a failed compare reads the key in the same
 * transaction, so Conflict and NotFound are told apart from one snapshot.
 */
import { Etcd3 } from 'etcd3';
import type { IKeyValue, IOptions, IRangeResponse, IRequestOp, ITxnRequest, ITxnResponse } from 'etcd3';
import {
  AlreadyExistsError,
  ClosedError,
  ConflictError,
  ErrorCodes,
  InvalidArgumentError,
  LeaseLostError,
  NotFoundError,
  TaskGraphError,
  UnavailableError,
  abortError,
  assertValidKey,
  assertValidPrefix,
  assertValidTtl,
  assertValidValue,
  systemClock,
  utf8Length,
} from '@taskgraph/api';
import type {
  AcquireOptions,
  Clock,
  Coordinator,
  CoordinatorCaps,
  CreateOptions,
  Entry,
  ListResult,
  Lock,
  LockHolder,
  LockOptions,
  Logger,
  Session,
  SessionOptions,
  Version,
  WatchBatch,
  WatchEvent,
  WatchOptions,
} from '@taskgraph/api';
import { mapEtcdError, type CallKind } from './errors.js';
import { Keyspace } from './keys.js';
import { acquireLock, lockHolder, tryAcquireLock, type LockHost } from './lock.js';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_MIN_SESSION_TTL_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  MAX_NAMESPACE_BYTES,
  checkNamespace,
  type EtcdCoordinatorOptions,
} from './options.js';
import { EtcdSession, type SessionHost } from './session.js';
import { RawWatch, type RawWatchDeps } from './watch.js';

/** The longest key or lock name we accept, in bytes. */
export const MAX_KEY_BYTES = 3072;
/**
 * Room in a request for everything but the value: a create sends the stored key
 * (namespace + key) up to three times (compare, put, range) plus framing.
 */
const REQUEST_OVERHEAD_BYTES = 3 * (MAX_KEY_BYTES + MAX_NAMESPACE_BYTES + 64) + 1024;
export const MAX_SESSION_TTL_MS = 3_600_000;

const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
/** A fault-handling policy that just runs the call: retries are decided here, per call kind. */
// One signal that never aborts, shared: a new AbortController per call cost ~15 us.
const neverAborted = new AbortController().signal;
const passThrough = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    Promise.resolve().then(() => fn({ signal: neverAborted })),
} as unknown as Policy;

/** gRPC channel defaults: reconnect soon after etcd comes back, find dead connections, no receive limit on big lists. */
const GRPC_DEFAULTS = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2000,
  // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5000,
  'grpc.max_receive_message_length': -1,
};

function copyValue(b: Buffer): Uint8Array {
  return new Uint8Array(b);
}

function parseVersion(version: unknown, what: string): bigint | undefined {
  if (typeof version !== 'string' || version.length === 0) {
    throw new InvalidArgumentError(`${what}: version must be a non-empty string from get, list, create or update, got ${JSON.stringify(version)}`);
  }
  // Any other string is a version no etcd key can have: it fails the compare like a stale one.
  return /^[1-9][0-9]{0,18}$/.test(version) ? BigInt(version) : undefined;
}

function parseRevision(revision: unknown): bigint {
  if (typeof revision !== 'string' || !/^(0|[1-9][0-9]{0,18})$/.test(revision)) {
    throw new InvalidArgumentError(`revision ${JSON.stringify(revision)} is not an etcd revision (a decimal string from list or a watch batch)`);
  }
  return BigInt(revision);
}

function describeKey(key: string): string {
  return JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}...` : key);
}

export class EtcdCoordinator implements Coordinator {
  readonly caps: CoordinatorCaps;
  readonly namespace: string;
  readonly #client: Etcd3;
  readonly #keys: Keyspace;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #requestTimeoutMs: number;
  readonly #attempts: number;
  readonly #closeController = new AbortController();
  readonly #sessions = new Set<EtcdSession>();
  readonly #background = new Set<Promise<void>>();
  readonly #watchDeps: RawWatchDeps;
  readonly #sessionHost: SessionHost;
  readonly #lockHost: LockHost;
  #closing: Promise<void> | undefined;

  constructor(options: EtcdCoordinatorOptions) {
    const { namespace, requestTimeoutMs, maxRequestBytes, minSessionTtlMs, clock, logger, ...clientOptions } = options;
    checkNamespace(namespace);
    const hosts = typeof clientOptions.hosts === 'string' ? [clientOptions.hosts] : [...(clientOptions.hosts ?? [])];
    if (hosts.length === 0) throw new InvalidArgumentError('etcd coordinator options need hosts (e.g. ["http://127.0.0.1:2379"])');
    for (const [name, value] of Object.entries({ requestTimeoutMs, maxRequestBytes, minSessionTtlMs })) {
      if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
        throw new InvalidArgumentError(`etcd coordinator option ${name} must be a positive whole number, got ${String(value)}`);
      }
    }
    if ('faultHandling' in clientOptions) {
      throw new InvalidArgumentError('etcd coordinator options take no faultHandling: the coordinator decides which calls are safe to retry');
    }
    this.namespace = namespace;
    this.#keys = new Keyspace(namespace);
    this.#clock = clock ?? systemClock;
    this.#logger = (logger ?? silentLogger).child({ coordinator: 'etcd', namespace });
    this.#requestTimeoutMs = requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    // A request that never left may go to another endpoint at once; one endpoint gets one try.
    this.#attempts = hosts.length === 1 ? 1 : hosts.length + 1;
    const maxValueBytes = (maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES) - REQUEST_OVERHEAD_BYTES;
    if (maxValueBytes < 1024) throw new InvalidArgumentError(`etcd coordinator option maxRequestBytes ${String(maxRequestBytes)} is too small`);
    this.caps = Object.freeze({
      backend: 'etcd',
      watchCoalesces: false,
      ttlRangeMs: Object.freeze([minSessionTtlMs ?? DEFAULT_MIN_SESSION_TTL_MS, MAX_SESSION_TTL_MS]) as readonly [number, number],
      ttlGranularityMs: 1000,
      // etcd sweeps expired leases every 500 ms and a new leader extends every lease by
      // an election timeout (1 s by default): a lease can outlive its TTL by that much.
      expiryFactor: 1.5,
      maxValueBytes,
      maxKeyBytes: MAX_KEY_BYTES,
    });
    this.#client = new Etcd3({
      ...clientOptions,
      hosts,
      grpcOptions: { ...GRPC_DEFAULTS, ...clientOptions.grpcOptions },
      // One endpoint: no circuit breaker, so a restarted etcd is used again at once.
      // Several: the client's breaker steers calls away from a dead member.
      faultHandling: hosts.length === 1 ? { global: passThrough, host: () => passThrough } : { global: passThrough },
    });
    this.#watchDeps = {
      open: () => this.#client.watchClient.watch(),
      clock: this.#clock,
      logger: this.#logger,
      mapFailure: (err) => {
        const { error } = mapEtcdError(err, 'read', 'watch');
        return { error, retry: error.code === ErrorCodes.Unavailable };
      },
    };
    this.#sessionHost = {
      clock: this.#clock,
      logger: this.#logger,
      openKeepAlive: () => this.#client.leaseClient.leaseKeepAlive(),
      mapFailure: (err) => mapEtcdError(err, 'read', 'keepalive').error,
      revoke: (session) => this.#revoke(session),
      ended: (session, revoking) => {
        this.#sessions.delete(session);
        if (revoking) this.#track(revoking);
      },
    };
    this.#lockHost = {
      keys: this.#keys,
      logger: this.#logger,
      closed: this.#closeController.signal,
      txn: (request, kind, what) => this.#txn(request, kind, what),
      waitForDelete: (key, after, signals, what) => this.#waitForDelete(key, after, signals, what),
    };
  }

  get closed(): boolean {
    return this.#closeController.signal.aborted;
  }

  /** The etcd3 client underneath, for what the contract does not cover (tests use it to compact). */
  get client(): Etcd3 {
    return this.#client;
  }

  // ---- calls ------------------------------------------------------------------

  async #call<T>(kind: CallKind, what: string, run: (options: { deadline: number }) => Promise<T>): Promise<T> {
    if (this.closed) throw new ClosedError(`${what}: the etcd coordinator is closed`);
    for (let attempt = 1; ; attempt++) {
      try {
        return await run({ deadline: Date.now() + this.#requestTimeoutMs });
      } catch (err) {
        const mapped = mapEtcdError(err, kind, what);
        if (mapped.notSent && attempt < this.#attempts && !this.closed && mapped.error.code === ErrorCodes.Unavailable) continue;
        throw mapped.error;
      }
    }
  }

  #txn(request: ITxnRequest, kind: CallKind, what: string): Promise<ITxnResponse> {
    return this.#call(kind, what, (o) => this.#client.kv.txn(request, o));
  }

  #range(key: Buffer, end: Buffer | undefined, what: string): Promise<IRangeResponse> {
    return this.#call('read', what, (o) => this.#client.kv.range(end === undefined ? { key } : { key, range_end: end }, o));
  }

  #entry(kv: IKeyValue): Entry {
    return { key: this.#keys.userKey(kv.key), value: copyValue(kv.value), version: kv.mod_revision };
  }

  #ownSession(session: unknown, what: string): EtcdSession {
    if (!(session instanceof EtcdSession) || !this.#sessions.has(session)) {
      if (session instanceof EtcdSession && session.isLost()) {
        throw new LeaseLostError(`${what}: session ${session.id} is lost or closed`);
      }
      throw new InvalidArgumentError(`${what}: the session was not opened by this etcd coordinator`);
    }
    return session;
  }

  #owner(options: LockOptions, session: EtcdSession): string {
    const owner = options.owner ?? session.id;
    if (typeof owner !== 'string' || owner.length === 0) throw new InvalidArgumentError('lock owner must be a non-empty string');
    const n = utf8Length(owner);
    if (n > this.caps.maxKeyBytes) throw new InvalidArgumentError(`lock owner is ${n} bytes; the limit is ${this.caps.maxKeyBytes}`);
    return owner;
  }

  // ---- keys -------------------------------------------------------------------

  async get(key: string): Promise<Entry | undefined> {
    assertValidKey(key, this.caps.maxKeyBytes);
    const res = await this.#range(this.#keys.key(key), undefined, `get of ${describeKey(key)}`);
    const kv = res.kvs[0];
    return kv && this.#entry(kv);
  }

  async list(prefix: string): Promise<ListResult> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const range = this.#keys.prefix(prefix);
    const res = await this.#range(range.start, range.end, `list of ${describeKey(prefix)}`);
    const kvs = range.coversLocks ? res.kvs.filter((kv) => !this.#keys.isLockKey(kv.key)) : res.kvs;
    return { entries: kvs.map((kv) => this.#entry(kv)), revision: res.header.revision };
  }

  async create(key: string, value: Uint8Array, options: CreateOptions = {}): Promise<Version> {
    assertValidKey(key, this.caps.maxKeyBytes);
    assertValidValue(value, this.caps.maxValueBytes, key);
    const what = `create of ${describeKey(key)}`;
    const session = options.session === undefined ? undefined : this.#ownSession(options.session, what);
    const stored = this.#keys.key(key);
    if (session?.isLost()) throw new LeaseLostError(`${what}: session ${session.id} is lost`);
    let res: ITxnResponse;
    try {
      res = await this.#txn(
        {
          compare: [{ key: stored, target: 'Create', result: 'Equal', create_revision: 0 }],
          success: [{ request_put: { key: stored, value: Buffer.from(value), ...(session ? { lease: session.id } : {}) } }],
        },
        'write',
        what,
      );
    } catch (err) {
      if (session && TaskGraphError.is(err, ErrorCodes.LeaseLost)) session.markLost('etcd no longer has its lease');
      throw err;
    }
    if (!res.succeeded) throw new AlreadyExistsError(`${what}: the key already exists`);
    return res.header.revision;
  }

  async update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    assertValidKey(key, this.caps.maxKeyBytes);
    assertValidValue(value, this.caps.maxValueBytes, key);
    const what = `update of ${describeKey(key)}`;
    const expected = parseVersion(expect, what);
    const stored = this.#keys.key(key);
    // ignore_lease keeps the key's lease: an update must not detach a key from its session.
    const put: IRequestOp = { request_put: { key: stored, value: Buffer.from(value), ignore_lease: true } };
    const res = await this.#compareAndDo(stored, expected, put, 'write', what);
    return res.header.revision;
  }

  async delete(key: string, expect: Version): Promise<void> {
    assertValidKey(key, this.caps.maxKeyBytes);
    const what = `delete of ${describeKey(key)}`;
    const expected = parseVersion(expect, what);
    const stored = this.#keys.key(key);
    await this.#compareAndDo(stored, expected, { request_delete_range: { key: stored } }, 'write', what);
  }

  /** Runs `op` if the key's mod_revision is `expected`; else says whether it was missing or changed. */
  async #compareAndDo(stored: Buffer, expected: bigint | undefined, op: IRequestOp, kind: CallKind, what: string): Promise<ITxnResponse> {
    const probe: IRequestOp = { request_range: { key: stored, keys_only: true } };
    const res =
      expected === undefined
        ? { ...(await this.#txn({ success: [probe] }, 'read', what)), succeeded: false }
        : await this.#txn(
            { compare: [{ key: stored, target: 'Mod', result: 'Equal', mod_revision: expected.toString() }], success: [op], failure: [probe] },
            kind,
            what,
          );
    if (res.succeeded) return res;
    const current = res.responses[0]?.response_range?.kvs[0];
    if (!current) throw new NotFoundError(`${what}: the key does not exist`);
    throw new ConflictError(`${what}: the key's version is ${current.mod_revision}, not the expected one`);
  }

  async deletePrefix(prefix: string): Promise<void> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const range = this.#keys.prefix(prefix);
    const locks = this.#keys.locks;
    // Locks are not keys: a prefix that covers the lock subtree is deleted around it.
    const ops: IRequestOp[] = range.coversLocks
      ? [{ request_delete_range: { key: range.start, range_end: locks.start } }, { request_delete_range: { key: locks.end, range_end: range.end } }]
      : [{ request_delete_range: { key: range.start, range_end: range.end } }];
    await this.#txn({ success: ops }, 'write', `deletePrefix of ${describeKey(prefix)}`);
  }

  // ---- watch ------------------------------------------------------------------

  #rawWatch(start: Buffer, end: Buffer, after: bigint | undefined, signals: readonly AbortSignal[], what: string): RawWatch {
    return new RawWatch(this.#watchDeps, { start, end }, after, [...signals, this.#closeController.signal], what);
  }

  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    assertValidPrefix(prefix, this.caps.maxKeyBytes);
    const signal = (options as Partial<WatchOptions> | undefined)?.signal;
    if (!(signal instanceof AbortSignal)) throw new InvalidArgumentError('watch needs options.signal, an AbortSignal that ends it');
    const after = options.after === undefined ? undefined : parseRevision(options.after);
    const range = this.#keys.prefix(prefix);
    const what = `watch of ${describeKey(prefix)}`;
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<WatchBatch> => {
        if (this.closed && !signal.aborted) {
          return { next: () => Promise.reject(new ClosedError(`${what}: the etcd coordinator is closed`)) };
        }
        const raw = this.#rawWatch(range.start, range.end, after, [signal], what);
        return {
          next: async (): Promise<IteratorResult<WatchBatch>> => {
            for (;;) {
              const r = await raw.next();
              if (r.done) return { value: undefined, done: true };
              const events: WatchEvent[] = [];
              for (const e of r.value.events) {
                if (range.coversLocks && this.#keys.isLockKey(e.kv.key)) continue;
                const key = this.#keys.userKey(e.kv.key);
                events.push(e.type === 'Delete' ? { type: 'delete', key } : { type: 'put', key, value: copyValue(e.kv.value), version: e.kv.mod_revision });
              }
              // A revision that only touched locks is nothing to this watch.
              if (events.length > 0) return { value: { revision: r.value.revision.toString(), events }, done: false };
            }
          },
          return: async (): Promise<IteratorResult<WatchBatch>> => {
            await raw.return();
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  // ---- sessions ---------------------------------------------------------------

  async openSession(options: SessionOptions): Promise<EtcdSession> {
    const ttlMs = (options as Partial<SessionOptions> | undefined)?.ttlMs;
    assertValidTtl(ttlMs, this.caps.ttlRangeMs, this.caps.backend);
    const what = 'openSession';
    const sentAt = this.#clock.now();
    let res;
    try {
      res = await this.#call('write', what, (o) => this.#client.leaseClient.leaseGrant({ TTL: Math.ceil(ttlMs / 1000) }, o));
    } catch (err) {
      // A grant whose answer was lost leaves at most an unused lease that expires by itself: safe to retry.
      if (TaskGraphError.is(err, ErrorCodes.Indeterminate)) throw new UnavailableError(err.message, { cause: err });
      throw err;
    }
    if (res.error) throw new UnavailableError(`${what}: etcd refused the lease: ${res.error}`);
    if (this.closed) {
      void this.#client.leaseClient.leaseRevoke({ ID: res.ID }).catch(() => undefined);
      throw new ClosedError(`${what}: the etcd coordinator was closed meanwhile`);
    }
    const session = new EtcdSession(this.#sessionHost, res.ID, Number(res.TTL) * 1000, sentAt);
    this.#sessions.add(session);
    return session;
  }

  async #revoke(session: EtcdSession): Promise<void> {
    try {
      // Straight to the client: the coordinator may be closing, and revoking is part of that.
      await this.#client.leaseClient.leaseRevoke({ ID: session.id }, { deadline: Date.now() + this.#requestTimeoutMs });
    } catch (err) {
      const { error } = mapEtcdError(err, 'write', `revoke of session ${session.id}`);
      if (error.code !== ErrorCodes.LeaseLost) {
        this.#logger.warn('could not revoke an etcd lease; it expires at its TTL', { session: session.id, error: error.message });
      }
    }
  }

  #track(p: Promise<void>): void {
    this.#background.add(p);
    void p.finally(() => this.#background.delete(p));
  }

  // ---- locks ------------------------------------------------------------------

  /** Resolves when `key` is deleted after revision `after`, or when a signal aborts. */
  async #waitForDelete(key: Buffer, after: bigint, signals: readonly AbortSignal[], what: string): Promise<void> {
    const end = Buffer.concat([key, Buffer.from([0])]);
    const watch = this.#rawWatch(key, end, after, signals, `${what} (waiting for the waiter before us)`);
    try {
      for (;;) {
        const r = await watch.next();
        if (r.done) return;
        if (r.value.events.some((e) => e.type === 'Delete')) return;
      }
    } catch (err) {
      // The history we watch from is gone: the caller looks at the waiters again.
      if (TaskGraphError.is(err, ErrorCodes.Compacted)) return;
      throw err;
    } finally {
      await watch.return();
    }
  }

  async acquire(name: string, session: Session, options: AcquireOptions = {}): Promise<Lock> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const what = `acquire of lock ${describeKey(name)}`;
    const own = this.#ownSession(session, what);
    const owner = this.#owner(options, own);
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('acquire options.signal must be an AbortSignal');
    if (signal?.aborted) throw abortError(signal, what);
    if (this.closed) throw new ClosedError(`${what}: the etcd coordinator is closed`);
    if (own.isLost()) throw new LeaseLostError(`${what}: session ${own.id} is lost`);
    return acquireLock(this.#lockHost, name, own, owner, signal);
  }

  async tryAcquire(name: string, session: Session, options: LockOptions = {}): Promise<Lock | undefined> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    const what = `tryAcquire of lock ${describeKey(name)}`;
    const own = this.#ownSession(session, what);
    const owner = this.#owner(options, own);
    if (own.isLost()) throw new LeaseLostError(`${what}: session ${own.id} is lost`);
    try {
      return await tryAcquireLock(this.#lockHost, name, own, owner);
    } catch (err) {
      if (TaskGraphError.is(err, ErrorCodes.LeaseLost)) own.markLost('etcd no longer has its lease');
      throw err;
    }
  }

  async holder(name: string): Promise<LockHolder | undefined> {
    assertValidKey(name, this.caps.maxKeyBytes, 'lock name');
    return lockHolder(this.#lockHost, name);
  }

  // ---- lifecycle --------------------------------------------------------------

  /** Revokes open sessions (best effort), ends watches and lock waits, closes the client. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closeController.abort(new ClosedError('the etcd coordinator is closed'));
    this.#closing = (async () => {
      await Promise.all([...this.#sessions].map((s) => s.close()));
      await Promise.all([...this.#background]);
      this.#client.close();
    })();
    return this.#closing;
  }
}
