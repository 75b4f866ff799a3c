/**
 * LocalTransport: a Transport whose "wire" is a LocalNetwork in this process. It
 * behaves like a network transport in everything a caller can observe: payloads
 * are copied, errors travel in their serialised form, handlers run on a later
 * turn of the event loop, and deadlines, aborts and closes fail calls with the
 * same typed errors the gRPC transport uses.
 */
import type { CallOptions, Clock, ListenOptions, RequestMeta, TaskGraphError, Transport } from '@taskgraph/api';
import {
  ClosedError,
  DeadlineExceededError,
  InvalidArgumentError,
  abortError,
  assertValidMethodName,
  systemClock,
  traceContextOf,
} from '@taskgraph/api';
import { addressOf, assertValidName, parseAddress, parseTransportUrl } from './address.js';
import { LocalNetwork, switchboardOf } from './network.js';
import type { Switchboard } from './network.js';
import { LocalServer, checkMethods } from './server.js';
import type { ServerContext } from './server.js';
import type { Exchange, WireAnswer } from './wire.js';
import { copyBytes, decodeError } from './wire.js';

/** The default limit on a request or response payload: 16 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LocalTransportOptions {
  /** The network to join (default: the process-wide `LocalNetwork.default`). Pass a new one to isolate a test. */
  readonly network?: LocalNetwork;
  /** The name servers of this transport listen under (`local://<name>`); default: a fresh generated name per server. */
  readonly name?: string;
  /** The largest request or response payload, in bytes (default 16 MiB). */
  readonly maxMessageBytes?: number;
  /** The clock that times deadlines and grace periods (default: the system clock). */
  readonly clock?: Clock;
}

export interface LocalListenOptions extends ListenOptions {
  /** Listen under this name instead of the transport's (or a generated one). */
  readonly name?: string;
}

export class LocalTransport implements Transport {
  readonly kind = 'local';
  readonly maxMessageBytes: number;
  readonly network: LocalNetwork;
  readonly #name: string | undefined;
  readonly #clock: Clock;
  readonly #board: Switchboard;
  readonly #servers = new Set<LocalServer>();
  readonly #pending = new Set<OutboundCall>();
  #closing: Promise<void> | undefined;

  constructor(options: LocalTransportOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('LocalTransport options must be an object');
    const max = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 1) {
      throw new InvalidArgumentError(`maxMessageBytes must be a positive integer, got ${String(max)}`);
    }
    if (options.name !== undefined) assertValidName(options.name);
    if (options.network !== undefined && !(options.network instanceof LocalNetwork)) {
      throw new InvalidArgumentError('network must be a LocalNetwork from @taskgraph/transport-local');
    }
    this.maxMessageBytes = max;
    this.network = options.network ?? LocalNetwork.default;
    this.#board = switchboardOf(this.network);
    this.#name = options.name;
    this.#clock = options.clock ?? systemClock;
  }

  /** True once `close` has been called. */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** The calls this transport has made that have no answer yet. */
  get pendingCalls(): number {
    return this.#pending.size;
  }

  /** The servers of this transport that are open or closing. */
  get servers(): readonly LocalServer[] {
    return [...this.#servers];
  }

  /**
   * Starts a server under `options.name`, else the transport's name, else a
   * generated one. AlreadyExistsError when an open server holds that name.
   */
  async listen(options: LocalListenOptions): Promise<LocalServer> {
    if (this.closed) throw new ClosedError('the local transport is closed; it cannot listen');
    if (typeof options !== 'object' || options === null || typeof options.handler !== 'function') {
      throw new InvalidArgumentError('listen needs options with a handler function');
    }
    const methods = checkMethods(options.methods ?? []);
    const name = options.name ?? this.#name;
    if (name !== undefined) assertValidName(name);
    const context: ServerContext = {
      board: this.#board,
      clock: this.#clock,
      maxMessageBytes: this.maxMessageBytes,
      onClosed: (server) => this.#servers.delete(server),
    };
    const server = new LocalServer(context, name, options.handler, methods);
    this.#servers.add(server);
    return server;
  }

  async call(address: string, method: string, meta: RequestMeta, payload: Uint8Array, options: CallOptions): Promise<Uint8Array> {
    if (this.closed) throw new ClosedError(`the local transport is closed; cannot call "${String(method)}" at ${String(address)}`);
    const name = parseAddress(address);
    assertValidMethodName(method);
    const cleanMeta = checkMeta(meta);
    if (!(payload instanceof Uint8Array)) throw new InvalidArgumentError('payload must be a Uint8Array');
    if (payload.length > this.maxMessageBytes) {
      throw new InvalidArgumentError(`the request to "${method}" is ${payload.length} bytes; the limit is ${this.maxMessageBytes}`);
    }
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('call options must be an object with timeoutMs');
    const { timeoutMs, signal } = options;
    if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs <= 0) {
      throw new InvalidArgumentError(`timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`);
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal');
    const what = `call to "${method}" at ${address}`;
    if (signal?.aborted) throw abortError(signal, what);

    const call = new OutboundCall(address, name, method, this.#name === undefined ? undefined : addressOf(this.#name), this.#clock, cleanMeta, copyBytes(payload), this.maxMessageBytes, (c) => this.#pending.delete(c));
    this.#pending.add(call);
    // Node fires longer timers at once, and such a deadline means "none" anyway.
    if (timeoutMs <= MAX_TIMER_MS) {
      const timer = this.#clock.setTimeout(
        () => call.giveUp(new DeadlineExceededError(`${what} got no answer within ${timeoutMs} ms`, { details: { address, method } })),
        timeoutMs,
      );
      call.hold(() => this.#clock.clearTimeout(timer));
    }
    if (signal !== undefined) {
      const onAbort = (): void => call.giveUp(abortError(signal, what));
      signal.addEventListener('abort', onAbort, { once: true });
      call.hold(() => signal.removeEventListener('abort', onAbort));
    }
    this.#board.send(call);
    return call.promise;
  }

  /** There is no connection to drop: every call looks its address up afresh. */
  forget(_address: string): void {}

  /**
   * Closes the transport: calls it has made that have no answer yet fail at once
   * with ClosedError (their handlers' signals abort), later `call`/`listen` fail
   * with ClosedError, and every server it opened closes with `graceMs` (default 0:
   * calls in flight there are cut, their callers get UnavailableError; a server
   * already closing ends its grace period now). Resolves once every server is closed.
   * Idempotent.
   */
  close(options: { readonly graceMs?: number } = {}): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    const graceMs = options.graceMs ?? 0;
    if (typeof graceMs !== 'number' || !(graceMs >= 0)) {
      return Promise.reject(new InvalidArgumentError(`graceMs must be a non-negative number, got ${String(graceMs)}`));
    }
    for (const call of [...this.#pending]) call.giveUp(new ClosedError(`the local transport was closed while the ${call.what} was pending`));
    const servers = [...this.#servers];
    this.#closing = Promise.all(servers.map((s) => (graceMs === 0 || s.closing ? s.abort() : s.close({ graceMs })))).then(() => undefined);
    return this.#closing;
  }
}

function checkMeta(meta: unknown): RequestMeta {
  if (typeof meta !== 'object' || meta === null) throw new InvalidArgumentError('meta must be an object');
  const m = meta as Record<string, unknown>;
  for (const key of ['job', 'token', 'requestId'] as const) {
    if (typeof m[key] !== 'string') throw new InvalidArgumentError(`meta.${key} must be a string, got ${typeof m[key]}`);
  }
  for (const key of ['from', 'to', 'epoch'] as const) {
    if (!Number.isSafeInteger(m[key])) throw new InvalidArgumentError(`meta.${key} must be an integer, got ${String(m[key])}`);
  }
  // A copy with exactly the wire's fields, as a network transport would rebuild it. The
  // trace context is optional and advisory: carried when well formed, else dropped.
  return Object.freeze({
    job: m['job'] as string,
    from: m['from'] as number,
    to: m['to'] as number,
    epoch: m['epoch'] as number,
    token: m['token'] as string,
    requestId: m['requestId'] as string,
    ...(m['traceparent'] === undefined ? undefined : traceContextOf(m)),
  });
}

class OutboundCall implements Exchange {
  readonly address: string;
  readonly name: string;
  readonly method: string;
  readonly source: string | undefined;
  readonly clock: Clock;
  readonly meta: RequestMeta;
  readonly payload: Uint8Array;
  readonly promise: Promise<Uint8Array>;
  readonly #maxMessageBytes: number;
  readonly #onDone: (call: OutboundCall) => void;
  readonly #holds = new Set<() => void>();
  readonly #giveUpListeners: ((reason: TaskGraphError) => void)[] = [];
  #resolve!: (value: Uint8Array) => void;
  #reject!: (reason: TaskGraphError) => void;
  #done = false;

  constructor(
    address: string,
    name: string,
    method: string,
    source: string | undefined,
    clock: Clock,
    meta: RequestMeta,
    payload: Uint8Array,
    maxMessageBytes: number,
    onDone: (call: OutboundCall) => void,
  ) {
    this.address = address;
    this.name = name;
    this.method = method;
    this.source = source;
    this.clock = clock;
    this.meta = meta;
    this.payload = payload;
    this.#maxMessageBytes = maxMessageBytes;
    this.#onDone = onDone;
    this.promise = new Promise<Uint8Array>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  get done(): boolean {
    return this.#done;
  }

  get what(): string {
    return `call to "${this.method}" at ${this.address}`;
  }

  hold(cancel: () => void): () => void {
    if (this.#done) {
      cancel();
      return () => undefined;
    }
    this.#holds.add(cancel);
    return () => this.#holds.delete(cancel);
  }

  onGiveUp(listener: (reason: TaskGraphError) => void): void {
    if (!this.#done) this.#giveUpListeners.push(listener);
  }

  answer(answer: WireAnswer): boolean {
    if (this.#done) return false;
    this.#settle();
    if (!answer.ok) {
      this.#reject(decodeError(answer.error));
    } else if (answer.payload.length > this.#maxMessageBytes) {
      this.#reject(
        new InvalidArgumentError(`the response of "${this.method}" is ${answer.payload.length} bytes; this transport accepts at most ${this.#maxMessageBytes}`),
      );
    } else {
      this.#resolve(copyBytes(answer.payload));
    }
    return true;
  }

  /** The caller stops waiting: deadline, abort or close. The server's handler is told. */
  giveUp(reason: TaskGraphError): void {
    if (this.#done) return;
    const listeners = this.#settle();
    this.#reject(reason);
    for (const listener of listeners) listener(reason);
  }

  /** Marks the call done, cancels what it holds, and hands back the give-up listeners. */
  #settle(): ((reason: TaskGraphError) => void)[] {
    this.#done = true;
    for (const cancel of this.#holds) cancel();
    this.#holds.clear();
    const listeners = this.#giveUpListeners.splice(0);
    this.#onDone(this);
    return listeners;
  }
}

/**
 * Creates a local transport from a URL (`local://`, `local://<name>`,
 * `local://<name>?maxMessageBytes=<n>`, all on the process-wide default network)
 * or from options.
 */
export async function createLocalTransport(urlOrOptions: string | URL | LocalTransportOptions = {}): Promise<LocalTransport> {
  if (typeof urlOrOptions === 'string' || urlOrOptions instanceof URL) {
    return new LocalTransport(parseTransportUrl(urlOrOptions));
  }
  return new LocalTransport(urlOrOptions);
}
