/**
 * The Consul coordinator: the contract's keys in Consul's KV store, versions as
 * ModifyIndex, compare-and-set through `/v1/txn`, sessions as Consul sessions
 * (behavior "delete"), watches as blocking queries, fair locks with `acquire`.
 */
import { hostname } from 'node:os';
import { AlreadyExistsError, ConflictError, NotFoundError, UnavailableError } from '@taskgraph/api';
import type { CoordinatorCaps, Entry, ListResult, Lock, LockHolder, Version, WatchBatch } from '@taskgraph/api';
import { CoordinatorBase, describeKey, pause, silentLogger } from '@taskgraph/backend-kit';
import { ConsulHttp, consulIndex, parseIndex, statusError } from './http.js';
import type { HttpAnswer, HttpCall } from './http.js';
import { Keyspace, kvPath } from './keys.js';
import { acquireLock, lockDelayPollMs } from './lock.js';
import type { LockHost } from './lock.js';
import { resolveOptions } from './options.js';
import type { ConsulCoordinatorOptions, ResolvedOptions } from './options.js';
import { ConsulSession, refusedSession } from './session.js';
import type { ConsulSessionHost } from './session.js';
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

const CONSUL_CAPS: CoordinatorCaps = Object.freeze({
  backend: 'consul',
  watchCoalesces: true,
  ttlRangeMs: SESSION_TTL_RANGE_MS,
  ttlGranularityMs: 1000,
  // Consul arms the invalidation timer at TTL x 2 (structs.SessionTTLMultiplier).
  expiryFactor: 2,
  maxValueBytes: MAX_VALUE_BYTES,
  maxKeyBytes: MAX_KEY_BYTES,
});

const WRITE_VERBS: ReadonlySet<string> = new Set(['set', 'cas', 'lock', 'unlock', 'delete', 'delete-cas', 'delete-tree']);
const decoder = new TextDecoder();

const encoder = new TextEncoder();
function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(encoder.encode(a)), Buffer.from(encoder.encode(b)));
}

export class ConsulCoordinator extends CoordinatorBase<ConsulSession> {
  readonly namespace: string;
  readonly #options: ResolvedOptions;
  readonly #http: ConsulHttp;
  readonly #keys: Keyspace;
  readonly #cache = new StateCache();
  readonly #sessionHost: ConsulSessionHost;
  readonly #lockHost: LockHost;
  readonly #watchHost: WatchHost;
  #tickets = 0;

  constructor(options: ConsulCoordinatorOptions) {
    const resolved = resolveOptions(options);
    super({
      caps: CONSUL_CAPS,
      label: 'Consul coordinator',
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      logger: (options.logger ?? silentLogger).child({ backend: 'consul', namespace: resolved.namespace }),
    });
    this.#options = resolved;
    this.namespace = resolved.namespace;
    this.#keys = new Keyspace(this.namespace);
    this.#http = new ConsulHttp({
      base: resolved.base,
      tls: resolved.tls,
      token: resolved.token,
      datacenter: resolved.datacenter,
      clock: this.clock,
      requestTimeoutMs: resolved.requestTimeoutMs,
    });
    this.#sessionHost = {
      renew: (id, timeoutMs) => this.#renew(id, timeoutMs),
      destroy: (id) => this.#destroy(id),
    };
    this.#lockHost = {
      keys: this.#keys,
      clock: this.clock,
      logger: this.logger,
      closed: this.closedSignal,
      txn: (ops, what, signal) => this.#txn(ops, what, signal),
      readKey: (key, what, opts) => this.#readKey(key, what, opts ?? {}),
      readPrefix: async (prefix, what, signal) => {
        const read = await this.#readPrefix(prefix, what, signal === undefined ? {} : { signal });
        return { index: read.index, pairs: read.pairs };
      },
      nextTicket: (session) => `${session.id}-${++this.#tickets}`,
      holdsLock: (session, name) => this.holdsLock(session, name),
    };
    this.#watchHost = {
      clock: this.clock,
      logger: this.logger,
      cache: this.#cache,
      read: (prefix, opts) => this.#readState(prefix, opts),
    };
  }

  // ---- plumbing ----------------------------------------------------------------

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

  /** Reads one key, or with `recurse` every key under a prefix; with `index`, as a blocking query that waits for a change past it. */
  async #readKv(
    consulKey: string,
    what: string,
    options: { readonly index?: number; readonly signal?: AbortSignal; readonly consistent?: boolean; readonly recurse?: boolean },
  ): Promise<{ index: number; pairs: KvPair[] }> {
    const timeoutMs = this.#readTimeout(options.index);
    const answer = await this.#call(
      {
        method: 'GET',
        path: kvPath(consulKey),
        query: { ...(options.recurse ? { recurse: true } : {}), ...this.#readQuery(options.index, options.consistent ?? true) },
        write: false,
        what,
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
      [200, 404],
    );
    return { index: consulIndex(answer), pairs: answer.status === 404 ? [] : parsePairs(answer.body, what) };
  }

  async #readKey(
    consulKey: string,
    what: string,
    options: { readonly index?: number; readonly signal?: AbortSignal; readonly consistent?: boolean },
  ): Promise<{ index: number; pair: KvPair | undefined }> {
    const { index, pairs } = await this.#readKv(consulKey, what, options);
    return { index, pair: pairs[0] };
  }

  #readPrefix(consulPrefix: string, what: string, options: { readonly index?: number; readonly signal?: AbortSignal }): Promise<{ index: number; pairs: KvPair[] }> {
    return this.#readKv(consulPrefix, what, { ...options, recurse: true });
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
        this.logger.warn('skipping a Consul key this backend cannot read', { key: pair.Key, error: String(err) });
      }
    }
    return out.sort((a, b) => compareBytes(a.key, b.key));
  }

  async #readState(prefix: string, options: { readonly index?: number; readonly signal: AbortSignal }): Promise<PrefixState> {
    const read = await this.#readPrefix(this.#keys.prefix(prefix), `watch of ${describeKey(prefix)}`, options);
    return { index: read.index, entries: new Map(this.#entries(read.pairs).map((e) => [e.key, e])) };
  }

  /** Why a compare-and-set failed, from a fresh read: the key is gone, or its version moved. */
  async #explainFailure(key: string, expect: Version, what: string): Promise<never> {
    const { pair } = await this.#readKey(this.#keys.key(key), what, {});
    if (!pair) throw new NotFoundError(`${what}: no key ${describeKey(key)}`);
    throw new ConflictError(`${what}: ${describeKey(key)} is at version ${pair.ModifyIndex}, not ${expect}`, {
      details: { key, expected: expect, actual: String(pair.ModifyIndex) },
    });
  }

  // ---- keys ----------------------------------------------------------------------

  protected async doGet(key: string): Promise<Entry | undefined> {
    const { pair } = await this.#readKey(this.#keys.key(key), `get of ${describeKey(key)}`, {});
    return pair && this.#entry(key, pair);
  }

  protected async doList(prefix: string): Promise<ListResult> {
    const read = await this.#readPrefix(this.#keys.prefix(prefix), `list of ${describeKey(prefix)}`, {});
    const entries = this.#entries(read.pairs);
    this.#cache.remember(prefix, { index: read.index, entries: new Map(entries.map((e) => [e.key, e])) });
    return { entries, revision: String(read.index) };
  }

  protected async doCreate(key: string, value: Uint8Array, session: ConsulSession | undefined): Promise<Version> {
    const what = `create of ${describeKey(key)}`;
    const consulKey = this.#keys.key(key);
    const encoded = toBase64(value);
    // An ephemeral key is created already held by the session (behavior "delete" removes it with the session).
    const ops: TxnOp[] = session
      ? [
          { Verb: 'check-not-exists', Key: consulKey },
          { Verb: 'lock', Key: consulKey, Value: encoded, Session: session.id },
        ]
      : [{ Verb: 'cas', Key: consulKey, Value: encoded, Index: 0 }];
    const giveUpAt = this.clock.now() + this.#options.lockDelayMs + 60_000;
    for (;;) {
      const outcome = await this.#txn(ops, what);
      if (outcome.ok) {
        const pair = outcome.results[outcome.results.length - 1];
        if (!pair) throw new UnavailableError(`${what}: Consul's answer lacks the new entry`);
        return String(pair.ModifyIndex);
      }
      const text = outcome.errors.map((e) => e.What).join('; ');
      const gone = session && refusedSession(session, text, what);
      if (gone) throw gone;
      if (text.includes('lock delay')) {
        // The key was held by a session that ended; Consul keeps it unlockable for that session's lock-delay.
        if (this.clock.now() >= giveUpAt) throw new UnavailableError(`${what}: Consul kept refusing the key because of a lock-delay (${text})`);
        await pause(this.clock, lockDelayPollMs(this.#options.lockDelayMs), this.closedSignal);
        this.assertOpen(what);
        if (session) this.assertLive(session, what);
        continue;
      }
      throw new AlreadyExistsError(`${what}: the key exists`, { details: { key } });
    }
  }

  protected async doUpdate(key: string, value: Uint8Array, expect: Version): Promise<Version> {
    const what = `update of ${describeKey(key)}`;
    const index = parseIndex(expect);
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

  protected async doDelete(key: string, expect: Version): Promise<void> {
    const what = `delete of ${describeKey(key)}`;
    const index = parseIndex(expect);
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

  protected async doDeletePrefix(prefix: string): Promise<void> {
    await this.#call({ method: 'DELETE', path: kvPath(this.#keys.prefix(prefix)), query: { recurse: true }, write: true, what: `deletePrefix of ${describeKey(prefix)}` }, [200]);
  }

  protected doWatch(prefix: string, after: string | undefined, signal: AbortSignal): AsyncIterable<WatchBatch> {
    // Checked at the call; the first read, which takes "now" when there is no `after`, is made by the first next().
    if (after !== undefined) parseRevision(after);
    return watchPrefix(this.#watchHost, prefix, after, AbortSignal.any([signal, this.closedSignal]));
  }

  // ---- sessions ----------------------------------------------------------------

  protected async doOpenSession(ttlMs: number): Promise<ConsulSession> {
    const body = {
      Name: `taskgraph ${hostname()} pid ${process.pid}`,
      TTL: `${ttlMs / 1000}s`,
      Behavior: 'delete',
      LockDelay: `${Math.round(this.#options.lockDelayMs)}ms`,
      // No health checks: the TTL alone decides, whichever agent the client talks to.
      NodeChecks: [],
    };
    const sentAt = this.clock.now();
    const answer = await this.#call({ method: 'PUT', path: '/v1/session/create', body: JSON.stringify(body), write: true, what: 'openSession' }, [200]);
    let id: unknown;
    try {
      id = (JSON.parse(answer.body.toString('utf8')) as { ID?: unknown }).ID;
    } catch {
      id = undefined;
    }
    if (typeof id !== 'string' || id === '') throw new UnavailableError('openSession: Consul did not answer a session ID');
    return new ConsulSession(this.sessionContext, this.#sessionHost, id, ttlMs, sentAt);
  }

  async #renew(id: string, timeoutMs: number): Promise<boolean> {
    const answer = await this.#call(
      { method: 'PUT', path: `/v1/session/renew/${encodeURIComponent(id)}`, write: false, what: `renewal of session ${id}`, timeoutMs: Math.min(timeoutMs, this.#options.requestTimeoutMs) },
      [200, 404],
    );
    return answer.status === 200;
  }

  /**
   * A destroy: Consul deletes the session's keys (behavior "delete") and frees its
   * lock keys, starting their lock-delay if one is configured (the default is none).
   * Destroying an id Consul does not know is answered 200 too. The owner hears of it
   * at its next renewal (404).
   */
  protected async doEndSession(id: string): Promise<void> {
    // Consul's session ids are UUIDs: anything else is no session of Consul's, so already ended.
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return;
    await this.#destroy(id);
  }

  async #destroy(id: string): Promise<void> {
    await this.#call({ method: 'PUT', path: `/v1/session/destroy/${encodeURIComponent(id)}`, write: true, what: `destroy of session ${id}` }, [200]);
  }

  // ---- locks ---------------------------------------------------------------------

  protected async doAcquire(name: string, session: ConsulSession, owner: string, signal: AbortSignal | undefined): Promise<Lock> {
    const what = `acquire of lock ${describeKey(name)}`;
    const stops = this.acquireStops(what, session, signal);
    const lock = await acquireLock(this.#lockHost, session, name, owner, { wait: true, stops, what, lockDelayMs: this.#options.lockDelayMs });
    if (!lock) throw new UnavailableError(`${what}: gave up waiting`);
    return lock;
  }

  protected async doTryAcquire(name: string, session: ConsulSession, owner: string): Promise<Lock | undefined> {
    const what = `tryAcquire of lock ${describeKey(name)}`;
    const stops = this.acquireStops(what, session, undefined);
    return acquireLock(this.#lockHost, session, name, owner, { wait: false, stops, what, lockDelayMs: this.#options.lockDelayMs });
  }

  protected async doHolder(name: string): Promise<LockHolder | undefined> {
    const { pair } = await this.#readKey(this.#keys.lock(name), `holder of lock ${describeKey(name)}`, {});
    if (!pair?.Session) return undefined;
    return { owner: decoder.decode(fromBase64(pair.Value)), token: lockToken(pair) };
  }

  // ---- lifecycle -------------------------------------------------------------------

  protected override async doClose(): Promise<void> {
    this.#http.close();
  }
}
