/**
 * The etcd v3 coordinator: the Coordinator contract on etcd's KV, Watch and Lease
 * APIs, through the etcd3 client's low-level RPC clients.
 *
 * version = mod_revision; create/update/delete are transactions comparing the
 * key's create or mod revision; a failed compare reads the key in the same
 * transaction, so Conflict and NotFound are told apart from one snapshot.
 *
 * The contract's input checks, the closed guard and session ownership and liveness
 * are CoordinatorBase's (the backend kit): each hook here gets checked input on an
 * open coordinator and only says how etcd does the operation.
 */
import { Etcd3 } from 'etcd3';
import type { IKeyValue, IOptions, IRangeResponse, IRequestOp, ITxnRequest, ITxnResponse } from 'etcd3';
import {
  AlreadyExistsError,
  ConflictError,
  ErrorCodes,
  InvalidArgumentError,
  LeaseLostError,
  NotFoundError,
  TaskGraphError,
  UnavailableError,
} from '@taskgraph/api';
import type { CoordinatorCaps, Entry, ListResult, Lock, LockHolder, Version, WatchBatch, WatchEvent } from '@taskgraph/api';
import { CoordinatorBase, describeKey, silentLogger } from '@taskgraph/backend-kit';
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
import { KeepAlivePool } from './keepalive.js';
import { EtcdSession, type EtcdSessionHost } from './session.js';
import { RawWatch, type RawWatchDeps } from './watch.js';

/** The longest key or lock name we accept, in bytes. */
export const MAX_KEY_BYTES = 3072;
/**
 * Room in a request for everything but the value: a create sends the stored key
 * (namespace + key) up to three times (compare, put, range) plus framing.
 */
const REQUEST_OVERHEAD_BYTES = 3 * (MAX_KEY_BYTES + MAX_NAMESPACE_BYTES + 64) + 1024;
export const MAX_SESSION_TTL_MS = 3_600_000;

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

/** A version as etcd's mod_revision; any other string is one no etcd key can have: it fails the compare like a stale one. */
function parseVersion(version: string): bigint | undefined {
  return /^[1-9][0-9]{0,18}$/.test(version) ? BigInt(version) : undefined;
}

function parseRevision(revision: string): bigint {
  if (!/^(0|[1-9][0-9]{0,18})$/.test(revision)) {
    throw new InvalidArgumentError(`revision ${JSON.stringify(revision)} is not an etcd revision (a decimal string from list or a watch batch)`);
  }
  return BigInt(revision);
}

/** The options that are numbers, checked, and the capabilities that follow from them. */
function etcdCaps(numbers: { readonly requestTimeoutMs: number | undefined; readonly maxRequestBytes: number | undefined; readonly minSessionTtlMs: number | undefined }): CoordinatorCaps {
  const { maxRequestBytes, minSessionTtlMs } = numbers;
  for (const [name, value] of Object.entries(numbers)) {
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
      throw new InvalidArgumentError(`etcd coordinator option ${name} must be a positive whole number, got ${String(value)}`);
    }
  }
  const maxValueBytes = (maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES) - REQUEST_OVERHEAD_BYTES;
  if (maxValueBytes < 1024) throw new InvalidArgumentError(`etcd coordinator option maxRequestBytes ${String(maxRequestBytes)} is too small`);
  return Object.freeze({
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
}

export class EtcdCoordinator extends CoordinatorBase<EtcdSession> {
  readonly namespace: string;
  readonly #client: Etcd3;
  readonly #keys: Keyspace;
  readonly #requestTimeoutMs: number;
  readonly #attempts: number;
  readonly #watchDeps: RawWatchDeps;
  readonly #sessionHost: EtcdSessionHost;
  readonly #lockHost: LockHost;

  constructor(options: EtcdCoordinatorOptions) {
    const { namespace, requestTimeoutMs, maxRequestBytes, minSessionTtlMs, clock, logger, ...clientOptions } = options;
    checkNamespace(namespace);
    const hosts = typeof clientOptions.hosts === 'string' ? [clientOptions.hosts] : [...(clientOptions.hosts ?? [])];
    if (hosts.length === 0) throw new InvalidArgumentError('etcd coordinator options need hosts (e.g. ["http://127.0.0.1:2379"])');
    const caps = etcdCaps({ requestTimeoutMs, maxRequestBytes, minSessionTtlMs });
    if ('faultHandling' in clientOptions) {
      throw new InvalidArgumentError('etcd coordinator options take no faultHandling: the coordinator decides which calls are safe to retry');
    }
    super({
      caps,
      label: 'etcd coordinator',
      ...(clock ? { clock } : {}),
      logger: (logger ?? silentLogger).child({ coordinator: 'etcd', namespace }),
    });
    this.namespace = namespace;
    this.#keys = new Keyspace(namespace);
    this.#requestTimeoutMs = requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    // A request that never left may go to another endpoint at once; one endpoint gets one try.
    this.#attempts = hosts.length === 1 ? 1 : hosts.length + 1;
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
      clock: this.clock,
      logger: this.logger,
      mapFailure: (err) => {
        const { error } = mapEtcdError(err, 'read', 'watch');
        return { error, retry: error.code === ErrorCodes.Unavailable };
      },
    };
    this.#sessionHost = {
      keepAlives: new KeepAlivePool(() => this.#client.leaseClient.leaseKeepAlive(), this.clock),
      mapFailure: (err) => mapEtcdError(err, 'read', 'keepalive').error,
      revoke: (id) => this.#revoke(id),
    };
    this.#lockHost = {
      keys: this.#keys,
      logger: this.logger,
      clock: this.clock,
      txn: (request, kind, what) => this.#txn(request, kind, what),
      waitForDelete: (key, after, signals, what) => this.#waitForDelete(key, after, signals, what),
      holdsLock: (session, name) => this.holdsLock(session, name),
    };
  }

  /** The etcd3 client underneath, for what the contract does not cover (tests use it to compact). */
  get client(): Etcd3 {
    return this.#client;
  }

  // ---- calls ------------------------------------------------------------------

  async #call<T>(kind: CallKind, what: string, run: (options: { deadline: number }) => Promise<T>): Promise<T> {
    // Lock waits call again after waiting: the coordinator may have closed meanwhile.
    this.assertOpen(what);
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

  // ---- keys -------------------------------------------------------------------

  protected async doGet(key: string): Promise<Entry | undefined> {
    const res = await this.#range(this.#keys.key(key), undefined, `get of ${describeKey(key)}`);
    const kv = res.kvs[0];
    return kv && this.#entry(kv);
  }

  protected async doList(prefix: string): Promise<ListResult> {
    const range = this.#keys.prefix(prefix);
    const res = await this.#range(range.start, range.end, `list of ${describeKey(prefix)}`);
    const kvs = range.coversLocks ? res.kvs.filter((kv) => !this.#keys.isLockKey(kv.key)) : res.kvs;
    return { entries: kvs.map((kv) => this.#entry(kv)), revision: res.header.revision };
  }

  protected async doCreate(key: string, value: Uint8Array, session: EtcdSession | undefined): Promise<Version> {
    const what = `create of ${describeKey(key)}`;
    const stored = this.#keys.key(key);
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
      if (session && TaskGraphError.is(err, ErrorCodes.LeaseLost)) session.lose(new LeaseLostError(`session ${session.id}: etcd no longer has its lease`, { cause: err }));
      throw err;
    }
    if (!res.succeeded) throw new AlreadyExistsError(`${what}: the key already exists`);
    return res.header.revision;
  }

  protected async doUpdate(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    const what = `update of ${describeKey(key)}`;
    const stored = this.#keys.key(key);
    // ignore_lease keeps the key's lease: an update must not detach a key from its session.
    const put: IRequestOp = { request_put: { key: stored, value: Buffer.from(value), ignore_lease: true } };
    const res = await this.#compareAndDo(stored, parseVersion(expect), put, 'write', what);
    return res.header.revision;
  }

  protected async doDelete(key: string, expect: Version): Promise<void> {
    const what = `delete of ${describeKey(key)}`;
    const stored = this.#keys.key(key);
    await this.#compareAndDo(stored, parseVersion(expect), { request_delete_range: { key: stored } }, 'write', what);
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

  protected async doDeletePrefix(prefix: string): Promise<void> {
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
    return new RawWatch(this.#watchDeps, { start, end }, after, [...signals, this.closedSignal], what);
  }

  /** Without `after`, the watch starts where etcd is when its stream is created: at the first `next()`. */
  protected doWatch(prefix: string, after: string | undefined, signal: AbortSignal): AsyncIterable<WatchBatch> {
    const from = after === undefined ? undefined : parseRevision(after);
    const range = this.#keys.prefix(prefix);
    const what = `watch of ${describeKey(prefix)}`;
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<WatchBatch> => {
        const raw = this.#rawWatch(range.start, range.end, from, [signal], what);
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

  protected async doOpenSession(ttlMs: number): Promise<EtcdSession> {
    const what = 'openSession';
    const sentAt = this.clock.now();
    let res;
    try {
      // The base rounded the TTL up to whole seconds, as etcd grants them.
      res = await this.#call('write', what, (o) => this.#client.leaseClient.leaseGrant({ TTL: ttlMs / 1000 }, o));
    } catch (err) {
      // A grant whose answer was lost leaves at most an unused lease that expires by itself: safe to retry.
      if (TaskGraphError.is(err, ErrorCodes.Indeterminate)) throw new UnavailableError(err.message, { cause: err });
      throw err;
    }
    if (res.error) throw new UnavailableError(`${what}: etcd refused the lease: ${res.error}`);
    return new EtcdSession(this.sessionContext, this.#sessionHost, res.ID, Number(res.TTL) * 1000, sentAt);
  }

  /**
   * A revoke: etcd deletes the lease's keys (and so its locks' waiter keys) in one
   * revision. The owner hears of it at its next keepalive (TTL 0) or write.
   */
  protected async doEndSession(id: string): Promise<void> {
    // Lease ids are decimal int64s: anything else is no lease of etcd's, so already ended.
    if (!/^[0-9]{1,19}$/.test(id)) return;
    this.assertOpen(`endSession of ${id}`);
    await this.#revoke(id);
  }

  /** Revokes a lease; a lease etcd no longer has is already what a revoke wants. */
  async #revoke(id: string): Promise<void> {
    try {
      // Straight to the client: the coordinator may be closing, and revoking is part of that.
      await this.#client.leaseClient.leaseRevoke({ ID: id }, { deadline: Date.now() + this.#requestTimeoutMs });
    } catch (err) {
      const { error } = mapEtcdError(err, 'write', `revoke of session ${id}`);
      if (error.code !== ErrorCodes.LeaseLost) throw error;
    }
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

  protected doAcquire(name: string, session: EtcdSession, owner: string, signal: AbortSignal | undefined): Promise<Lock> {
    const what = `acquire of lock ${describeKey(name)}`;
    return acquireLock(this.#lockHost, name, session, owner, this.acquireStops(what, session, signal), what);
  }

  protected async doTryAcquire(name: string, session: EtcdSession, owner: string): Promise<Lock | undefined> {
    try {
      return await tryAcquireLock(this.#lockHost, name, session, owner, `tryAcquire of lock ${describeKey(name)}`);
    } catch (err) {
      if (TaskGraphError.is(err, ErrorCodes.LeaseLost)) session.lose(new LeaseLostError(`session ${session.id}: etcd no longer has its lease`, { cause: err }));
      throw err;
    }
  }

  protected doHolder(name: string): Promise<LockHolder | undefined> {
    return lockHolder(this.#lockHost, name, `holder of lock ${describeKey(name)}`);
  }

  // ---- lifecycle --------------------------------------------------------------

  /** Runs after every session was revoked and every watch and lock wait ended. */
  protected override async doClose(): Promise<void> {
    this.#sessionHost.keepAlives.close();
    this.#client.close();
  }
}
