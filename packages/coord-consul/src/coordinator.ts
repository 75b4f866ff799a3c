/**
 * The Consul coordinator: the contract's keys in Consul's KV store, versions as
 * ModifyIndex, compare-and-set through `/v1/txn`, sessions as Consul sessions
 * (behavior "delete"), watches as blocking queries, fair locks with `acquire`.
 */
import { hostname } from 'node:os';
import {
  AlreadyExistsError,
  ClosedError,
  ConflictError,
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
  WatchOptions,
} from '@taskgraph/api';
import { ConsulHttp, consulIndex, statusError } from './http.js';
import type { HttpAnswer, HttpCall } from './http.js';
import { Keyspace, kvPath } from './keys.js';
import { acquireLock, checkOwner } from './lock.js';
import type { LockHost } from './lock.js';
import { resolveOptions } from './options.js';
import type { ConsulCoordinatorOptions, ResolvedOptions } from './options.js';
import { ConsulSession } from './session.js';
import type { SessionHost } from './session.js';
import { pause } from './timing.js';
import { StateCache, parseRevision, watchPrefix } from './watch.js';
import type { PrefixState, WatchHost } from './watch.js';
import { fromBase64, lockToken, parsePairs, parseTxn, toBase64 } from './wire.js';
import type { KvPair, TxnOp, TxnOutcome } from './wire.js';

/** Consul's session TTL bounds (session_ttl_min default, structs.SessionTTLMax). */
export const SESSION_TTL_RANGE_MS: readonly [number, number] = [10_000, 86_400_000];
/** The longest key or lock name accepted, in UTF-8 bytes (escaped, it can triple). */
export const MAX_KEY_BYTES = 512;
/**
 * The largest value. Consul's own limit is 512 KiB, but writes go through
 * `/v1/txn`, whose whole body (values in base64, so 4/3 larger) is capped by
 * txn_max_req_len, 512 KiB by default; 378 KiB leaves 8 KiB for the rest.
 */
export const MAX_VALUE_BYTES = 378 * 1024;

const WRITE_VERBS: ReadonlySet<string> = new Set(['set', 'cas', 'lock', 'unlock', 'delete', 'delete-cas', 'delete-tree']);
const decoder = new TextDecoder();

const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};

function describe(key: string): string {
  return JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}...` : key);
}

/** The Consul index in a version this backend handed out, or undefined when it cannot be one. */
function versionIndex(version: Version): number | undefined {
  return typeof version === 'string' && /^[1-9]\d{0,15}$/.test(version) ? Number(version) : undefined;
}

const encoder = new TextEncoder();
function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(encoder.encode(a)), Buffer.from(encoder.encode(b)));
}

export class ConsulCoordinator implements Coordinator {
  readonly caps: CoordinatorCaps;
  readonly namespace: string;
  readonly #options: ResolvedOptions;
  readonly #http: ConsulHttp;
  readonly #keys: Keyspace;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #closeController = new AbortController();
  readonly #sessions = new Set<ConsulSession>();
  readonly #background = new Set<Promise<void>>();
  readonly #cache = new StateCache();
  readonly #sessionHost: SessionHost;
  readonly #lockHost: LockHost;
  readonly #watchHost: WatchHost;
  #tickets = 0;
  #closing: Promise<void> | undefined;

  constructor(options: ConsulCoordinatorOptions) {
    this.#options = resolveOptions(options);
    this.namespace = this.#options.namespace;
    this.#clock = options.clock ?? systemClock;
    this.#logger = (options.logger ?? silentLogger).child({ backend: 'consul', namespace: this.namespace });
    this.#keys = new Keyspace(this.namespace);
    this.#http = new ConsulHttp({
      base: this.#options.base,
      tls: this.#options.tls,
      token: this.#options.token,
      datacenter: this.#options.datacenter,
      clock: this.#clock,
      requestTimeoutMs: this.#options.requestTimeoutMs,
    });
    this.caps = Object.freeze({
      backend: 'consul',
      watchCoalesces: true,
      ttlRangeMs: SESSION_TTL_RANGE_MS,
      ttlGranularityMs: 1000,
      // Consul arms the invalidation timer at TTL x 2 (structs.SessionTTLMultiplier).
      expiryFactor: 2,
      maxValueBytes: MAX_VALUE_BYTES,
      maxKeyBytes: MAX_KEY_BYTES,
    });
    this.#sessionHost = {
      clock: this.#clock,
      logger: this.#logger,
      renew: (id, timeoutMs) => this.#renew(id, timeoutMs),
      destroy: (session) => this.#destroy(session),
      abandon: (session) => this.#track(this.#destroy(session).catch(() => undefined)),
      forget: (session) => this.#sessions.delete(session),
    };
    this.#lockHost = {
      keys: this.#keys,
      clock: this.#clock,
      logger: this.#logger,
      closed: this.#closeController.signal,
      txn: (ops, what, signal) => this.#txn(ops, what, signal),
      readKey: (key, what, opts) => this.#readKey(key, what, opts ?? {}),
      readPrefix: async (prefix, what, signal) => {
        const read = await this.#readPrefix(prefix, what, signal === undefined ? {} : { signal });
        return { index: read.index, pairs: read.pairs };
      },
      nextTicket: (session) => `${session.id}-${++this.#tickets}`,
    };
    this.#watchHost = {
      clock: this.#clock,
      logger: this.#logger,
      cache: this.#cache,
      read: (prefix, opts) => this.#readState(prefix, opts),
    };
  }

  // ---- plumbing ----------------------------------------------------------------

  #open(what: string): void {
    if (this.#closeController.signal.aborted) throw new ClosedError(`${what}: the Consul coordinator is closed`);
  }

  #track(work: Promise<void>): void {
    this.#background.add(work);
    void work.finally(() => this.#background.delete(work));
  }

  async #call(call: HttpCall, accept: readonly number[]): Promise<HttpAnswer> {
    const answer = await this.#http.request(call);
    if (!accept.includes(answer.status)) throw statusError(answer, call);
    return answer;
  }

  async #txn(ops: readonly TxnOp[], what: string, signal?: AbortSignal): Promise<TxnOutcome> {
    const answer = await this.#call(
      {
        method: 'PUT',
        path: '/v1/txn',
        body: JSON.stringify(ops.map((KV) => ({ KV }))),
        write: ops.some((op) => WRITE_VERBS.has(op.Verb)),
        what,
        ...(signal === undefined ? {} : { signal }),
      },
      [200, 409],
    );
    return parseTxn(answer.body, answer.status, what);
  }

  /** Query parameters for a read: consistent, or blocking on `index`. */
  #readQuery(index: number | undefined, consistent: boolean): Record<string, string | true> {
    if (index !== undefined) return { index: String(index), wait: `${Math.round(this.#options.blockingWaitMs)}ms` };
    return consistent && this.#options.consistentReads ? { consistent: true } : {};
  }

  /** A blocking query may legitimately take the wait plus Consul's jitter (wait/16). */
  #readTimeout(index: number | undefined): number | undefined {
    if (index === undefined) return undefined;
    const wait = this.#options.blockingWaitMs;
    return wait + wait / 16 + this.#options.requestTimeoutMs;
  }

  async #readKey(
    consulKey: string,
    what: string,
    options: { readonly index?: number; readonly signal?: AbortSignal; readonly consistent?: boolean },
  ): Promise<{ index: number; pair: KvPair | undefined }> {
    const timeoutMs = this.#readTimeout(options.index);
    const answer = await this.#call(
      {
        method: 'GET',
        path: kvPath(consulKey),
        query: this.#readQuery(options.index, options.consistent ?? true),
        write: false,
        what,
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
      [200, 404],
    );
    const index = consulIndex(answer);
    if (answer.status === 404) return { index, pair: undefined };
    return { index, pair: parsePairs(answer.body, what)[0] };
  }

  async #readPrefix(
    consulPrefix: string,
    what: string,
    options: { readonly index?: number; readonly signal?: AbortSignal },
  ): Promise<{ index: number; pairs: KvPair[] }> {
    const timeoutMs = this.#readTimeout(options.index);
    const answer = await this.#call(
      {
        method: 'GET',
        path: kvPath(consulPrefix),
        query: { recurse: true, ...this.#readQuery(options.index, true) },
        write: false,
        what,
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
      [200, 404],
    );
    const index = consulIndex(answer);
    return { index, pairs: answer.status === 404 ? [] : parsePairs(answer.body, what) };
  }

  #entry(key: string, pair: KvPair): Entry {
    return { key, value: fromBase64(pair.Value), version: String(pair.ModifyIndex) };
  }

  /** The contract's entries of a prefix read, sorted by key; keys this backend did not write are skipped. */
  #entries(pairs: readonly KvPair[]): Entry[] {
    const out: Entry[] = [];
    for (const pair of pairs) {
      try {
        out.push(this.#entry(this.#keys.contractKey(pair.Key), pair));
      } catch (err) {
        this.#logger.warn('skipping a Consul key this backend cannot read', { key: pair.Key, error: String(err) });
      }
    }
    return out.sort((a, b) => compareBytes(a.key, b.key));
  }

  async #readState(prefix: string, options: { readonly index?: number; readonly signal: AbortSignal }): Promise<PrefixState> {
    const read = await this.#readPrefix(this.#keys.prefix(prefix), `watch of ${describe(prefix)}`, options);
    return { index: read.index, entries: new Map(this.#entries(read.pairs).map((e) => [e.key, e])) };
  }

  /** Why a compare-and-set failed, from a fresh read: the key is gone, or its version moved. */
  async #explainFailure(key: string, expect: Version, what: string): Promise<never> {
    const { pair } = await this.#readKey(this.#keys.key(key), what, {});
    if (!pair) throw new NotFoundError(`${what}: no key ${describe(key)}`);
    throw new ConflictError(`${what}: ${describe(key)} is at version ${pair.ModifyIndex}, not ${expect}`, {
      details: { key, expected: expect, actual: String(pair.ModifyIndex) },
    });
  }

  #ownSession(session: Session, what: string): ConsulSession {
    if (!(session instanceof ConsulSession) || session.host !== this.#sessionHost) {
      throw new InvalidArgumentError(`${what}: the session was not opened by this Consul coordinator`);
    }
    if (session.isLost()) {
      const reason: unknown = session.lost.reason;
      const why = TaskGraphError.is(reason, 'CLOSED') ? 'was closed' : 'is lost';
      throw new LeaseLostError(`${what}: session ${session.id} ${why}`, { cause: reason });
    }
    return session;
  }

  // ---- keys ----------------------------------------------------------------------

  async get(key: string): Promise<Entry | undefined> {
    this.#open('get');
    assertValidKey(key, MAX_KEY_BYTES);
    const { pair } = await this.#readKey(this.#keys.key(key), `get of ${describe(key)}`, {});
    return pair && this.#entry(key, pair);
  }

  async list(prefix: string): Promise<ListResult> {
    this.#open('list');
    assertValidPrefix(prefix, MAX_KEY_BYTES);
    const read = await this.#readPrefix(this.#keys.prefix(prefix), `list of ${describe(prefix)}`, {});
    const entries = this.#entries(read.pairs);
    this.#cache.remember(prefix, { index: read.index, entries: new Map(entries.map((e) => [e.key, e])) });
    return { entries, revision: String(read.index) };
  }

  async create(key: string, value: Uint8Array, options: CreateOptions = {}): Promise<Version> {
    this.#open('create');
    assertValidKey(key, MAX_KEY_BYTES);
    assertValidValue(value, MAX_VALUE_BYTES, key);
    const what = `create of ${describe(key)}`;
    const session = options.session === undefined ? undefined : this.#ownSession(options.session, what);
    const consulKey = this.#keys.key(key);
    const encoded = toBase64(value);
    // An ephemeral key is created already held by the session (behavior "delete" removes it with the session).
    const ops: TxnOp[] = session
      ? [
          { Verb: 'check-not-exists', Key: consulKey },
          { Verb: 'lock', Key: consulKey, Value: encoded, Session: session.id },
        ]
      : [{ Verb: 'cas', Key: consulKey, Value: encoded, Index: 0 }];
    const giveUpAt = this.#clock.now() + this.#options.lockDelayMs + 60_000;
    for (;;) {
      const outcome = await this.#txn(ops, what);
      if (outcome.ok) {
        const pair = outcome.results[outcome.results.length - 1];
        if (!pair) throw new UnavailableError(`${what}: Consul's answer lacks the new entry`);
        return String(pair.ModifyIndex);
      }
      const text = outcome.errors.map((e) => e.What).join('; ');
      if (/invalid session|missing session/.test(text) && session) {
        const err = new LeaseLostError(`${what}: Consul no longer knows session ${session.id}`);
        session.lose(err);
        throw err;
      }
      if (text.includes('lock delay')) {
        // The key was held by a session that ended; Consul keeps it unlockable for that session's lock-delay.
        if (this.#clock.now() >= giveUpAt) throw new UnavailableError(`${what}: Consul kept refusing the key because of a lock-delay (${text})`);
        await pause(this.#clock, Math.max(100, Math.min(this.#options.lockDelayMs || 1000, 1000)), this.#closeController.signal);
        this.#open(what);
        if (session?.isLost()) throw new LeaseLostError(`${what}: session ${session.id} was lost while waiting out a lock-delay`, { cause: session.lost.reason });
        continue;
      }
      throw new AlreadyExistsError(`${what}: the key exists`, { details: { key } });
    }
  }

  async update(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    this.#open('update');
    assertValidKey(key, MAX_KEY_BYTES);
    assertValidValue(value, MAX_VALUE_BYTES, key);
    const what = `update of ${describe(key)}`;
    const index = versionIndex(expect);
    if (index === undefined) return this.#explainFailure(key, expect, what);
    // Flags carry the replaced version: the entry then always differs, so every
    // update moves ModifyIndex (Consul skips writes that change nothing). A CAS
    // keeps the key's session, so an ephemeral key stays ephemeral.
    const outcome = await this.#txn([{ Verb: 'cas', Key: this.#keys.key(key), Value: toBase64(value), Index: index, Flags: index }], what);
    if (!outcome.ok) return this.#explainFailure(key, expect, what);
    const pair = outcome.results[0];
    if (!pair) throw new UnavailableError(`${what}: Consul's answer lacks the new entry`);
    return String(pair.ModifyIndex);
  }

  async delete(key: string, expect: Version): Promise<void> {
    this.#open('delete');
    assertValidKey(key, MAX_KEY_BYTES);
    const what = `delete of ${describe(key)}`;
    const index = versionIndex(expect);
    if (index === undefined) return this.#explainFailure(key, expect, what);
    const consulKey = this.#keys.key(key);
    // delete-cas alone would report success for a missing key; check-index fails then.
    const outcome = await this.#txn(
      [
        { Verb: 'check-index', Key: consulKey, Index: index },
        { Verb: 'delete', Key: consulKey },
      ],
      what,
    );
    if (!outcome.ok) await this.#explainFailure(key, expect, what);
  }

  async deletePrefix(prefix: string): Promise<void> {
    this.#open('deletePrefix');
    assertValidPrefix(prefix, MAX_KEY_BYTES);
    await this.#call({ method: 'DELETE', path: kvPath(this.#keys.prefix(prefix)), query: { recurse: true }, write: true, what: `deletePrefix of ${describe(prefix)}` }, [200]);
  }

  watch(prefix: string, options: WatchOptions): AsyncIterable<WatchBatch> {
    this.#open('watch');
    assertValidPrefix(prefix, MAX_KEY_BYTES);
    if (!(options?.signal instanceof AbortSignal)) throw new InvalidArgumentError('watch needs options.signal to end it');
    if (options.after !== undefined) parseRevision(options.after);
    const signal = AbortSignal.any([options.signal, this.#closeController.signal]);
    return watchPrefix(this.#watchHost, prefix, options.after, signal);
  }

  // ---- sessions ----------------------------------------------------------------

  async openSession(options: SessionOptions): Promise<Session> {
    this.#open('openSession');
    assertValidTtl(options?.ttlMs, this.caps.ttlRangeMs, 'consul');
    const seconds = Math.ceil(options.ttlMs / 1000);
    const body = {
      Name: `taskgraph ${hostname()} pid ${process.pid}`,
      TTL: `${seconds}s`,
      Behavior: 'delete',
      LockDelay: `${Math.round(this.#options.lockDelayMs)}ms`,
      // No health checks: the TTL alone decides, whichever agent the client talks to.
      NodeChecks: [],
    };
    const sentAt = this.#clock.now();
    const answer = await this.#call({ method: 'PUT', path: '/v1/session/create', body: JSON.stringify(body), write: true, what: 'openSession' }, [200]);
    let id: unknown;
    try {
      id = (JSON.parse(answer.body.toString('utf8')) as { ID?: unknown }).ID;
    } catch {
      id = undefined;
    }
    if (typeof id !== 'string' || id === '') throw new UnavailableError('openSession: Consul did not answer a session ID');
    if (this.#closeController.signal.aborted) {
      this.#track(this.#destroyId(id).catch(() => undefined));
      throw new ClosedError('openSession: the Consul coordinator was closed meanwhile');
    }
    const session = new ConsulSession(this.#sessionHost, id, seconds * 1000, sentAt);
    this.#sessions.add(session);
    return session;
  }

  async #renew(id: string, timeoutMs: number): Promise<boolean> {
    const answer = await this.#call(
      { method: 'PUT', path: `/v1/session/renew/${encodeURIComponent(id)}`, write: false, what: `renewal of session ${id}`, timeoutMs: Math.min(timeoutMs, this.#options.requestTimeoutMs) },
      [200, 404],
    );
    return answer.status === 200;
  }

  async #destroy(session: ConsulSession): Promise<void> {
    // Released locks start no lock-delay; locks that go with the session would.
    await Promise.allSettled([...session.locks].map((lock) => lock.releaseForClose()));
    await this.#destroyId(session.id);
  }

  async #destroyId(id: string): Promise<void> {
    await this.#call({ method: 'PUT', path: `/v1/session/destroy/${encodeURIComponent(id)}`, write: true, what: `destroy of session ${id}` }, [200]);
  }

  // ---- locks ---------------------------------------------------------------------

  async acquire(name: string, session: Session, options: AcquireOptions = {}): Promise<Lock> {
    this.#open('acquire');
    assertValidKey(name, MAX_KEY_BYTES, 'lock name');
    const what = `acquire of ${describe(name)}`;
    const s = this.#ownSession(session, what);
    const owner = checkOwner(options.owner ?? s.id, MAX_KEY_BYTES);
    if (options.signal?.aborted) throw abortError(options.signal, what);
    const lock = await acquireLock(this.#lockHost, s, name, owner, {
      wait: true,
      lockDelayMs: this.#options.lockDelayMs,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    if (!lock) throw new UnavailableError(`${what}: gave up waiting`);
    return lock;
  }

  async tryAcquire(name: string, session: Session, options: LockOptions = {}): Promise<Lock | undefined> {
    this.#open('tryAcquire');
    assertValidKey(name, MAX_KEY_BYTES, 'lock name');
    const what = `tryAcquire of ${describe(name)}`;
    const s = this.#ownSession(session, what);
    const owner = checkOwner(options.owner ?? s.id, MAX_KEY_BYTES);
    return acquireLock(this.#lockHost, s, name, owner, { wait: false, lockDelayMs: this.#options.lockDelayMs });
  }

  async holder(name: string): Promise<LockHolder | undefined> {
    this.#open('holder');
    assertValidKey(name, MAX_KEY_BYTES, 'lock name');
    const { pair } = await this.#readKey(this.#keys.lock(name), `holder of ${describe(name)}`, {});
    if (!pair?.Session) return undefined;
    return { owner: decoder.decode(fromBase64(pair.Value)), token: lockToken(pair) };
  }

  // ---- lifecycle -------------------------------------------------------------------

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closeController.abort(new ClosedError('the Consul coordinator was closed'));
    await Promise.allSettled([...this.#sessions].map((s) => s.close()));
    while (this.#background.size > 0) await Promise.allSettled([...this.#background]);
    this.#http.close();
  }

  /** @internal For tests: sessions this coordinator keeps alive. */
  get openSessions(): number {
    return this.#sessions.size;
  }
}

/** True when `err` says the operation did not happen and may be retried as is. */
export function isRetryable(err: unknown): boolean {
  return TaskGraphError.is(err) && err.retryable;
}
