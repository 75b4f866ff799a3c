/**
 * One listening gRPC server. Each method a task serves is a unary method at
 * `/<service>/<method>` whose (de)serializers pass the bytes through untouched, so
 * the payload on the wire is exactly what the codec produced and any gRPC client
 * can call it. grpc-js looks handlers up per call in a map that `addService` and
 * `removeService` edit, also after the server is bound, so `serve()` really
 * (un)registers methods and grpc-js itself answers UNIMPLEMENTED for the rest.
 * Beside them, one bidirectional streaming method carries TaskGraph's own calls, many
 * to a stream (stream-session.ts); every call on it passes the same checks, in the same
 * order, as a unary one.
 */
import {
  AbortedError,
  ClosedError,
  DeadlineExceededError,
  InternalError,
  InvalidArgumentError,
  MethodNotFoundError,
  UnauthenticatedError,
  UnavailableError,
  assertValidMethodName,
} from '@taskgraph/api';
import type { InboundRequest, ListenOptions, RequestHandler, TransportServer } from '@taskgraph/api';
import { Metadata, Server, status as Status } from '@grpc/grpc-js';
import type { ServerDuplexStream, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js';
import { serverConnections } from './channelz.js';
import type { ConnectionInfo } from './channelz.js';
import { PROOF_KEY } from './auth.js';
import { STREAM_LIMIT_SLACK } from './frames.js';
import type { CallFrame } from './frames.js';
import { metaFromEnvelope, metaFromMetadata } from './metadata.js';
import { STREAM_METHOD } from './peer-stream.js';
import { StreamSession } from './stream-session.js';
import type { Answer, Prover, StreamHost, StreamedCall } from './stream-session.js';
import { ADVERTISE_HOST_ENV, isWildcardHost, joinHostPort, splitHostPort } from './options.js';
import type { ResolvedOptions } from './options.js';
import { statusFromError } from './status.js';
import { HealthService } from './health.js';

/** How long answers to cut-off calls get to reach their callers before the sessions are destroyed. */
const FLUSH_MS = 1_000;

export interface GrpcServerStats {
  readonly address: string;
  readonly methods: readonly string[];
  readonly callsInFlight: number;
  /** Multiplexed streams open from callers. */
  readonly streams: number;
  /** The TCP connections open to this server now, from channelz. */
  readonly connections: readonly ConnectionInfo[];
  /** The health service: SERVING while some node behind the server serves; each node's report. */
  readonly health: { readonly serving: boolean; readonly nodes: Readonly<Record<string, boolean>> };
}

/** Bytes in, bytes out: grpc-js hands us Buffers; the handler sees a plain Uint8Array view. */
export function bytesView(buf: Buffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

const identity = (b: Buffer): Buffer => b;

export function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * One call being served, and the request its handler sees. One object per call
 * rather than a closure per concern: at small payloads a call's allocations are a
 * good part of its cost. The handler's signal is made only if the handler reads it:
 * an AbortSignal is the most expensive object of a call, and most handlers never
 * look at it.
 */
class InboundCall implements InboundRequest, StreamedCall {
  #controller: AbortController | undefined;
  #abortReason: Error | undefined;
  #open = true;

  constructor(
    readonly method: string,
    readonly meta: InboundRequest['meta'],
    readonly payload: Uint8Array,
    /** When the caller's deadline passes (ms since the epoch), or Infinity. */
    readonly deadlineAt: number,
    private readonly callback: Answer,
    private readonly inFlight: Set<InboundCall>,
    private readonly maxMessageBytes: number,
    readonly authenticated: boolean,
  ) {}

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#abortReason !== undefined) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }

  /** Tells the handler its deadline passed (its caller has been answered by grpc-js). */
  expire(): void {
    if (this.#finish()) this.#abort(new DeadlineExceededError(`the deadline of ${this.method} passed`));
  }

  cancelled(): void {
    if (this.#finish()) this.#abort(new AbortedError(`the caller cancelled ${this.method}`));
  }

  /** Aborts the handler with `reason`, answers the call (if still open) with `answer`, and forgets it. */
  cutOff(reason: Error, answer: Error): void {
    this.#abort(reason);
    if (this.#finish()) this.callback(statusFromError(answer, Status.UNAVAILABLE));
  }

  fail(err: unknown): void {
    if (this.#finish()) this.callback(statusFromError(err));
  }

  succeed(out: unknown): void {
    if (!(out instanceof Uint8Array)) {
      this.fail(new InternalError(`the handler of ${this.method} resolved with ${typeof out}, not a Uint8Array`));
    } else if (out.byteLength > this.maxMessageBytes) {
      this.fail(
        new InvalidArgumentError(`the response of ${this.method} is ${out.byteLength} bytes; the limit is ${this.maxMessageBytes}`, {
          details: { size: out.byteLength, limit: this.maxMessageBytes },
        }),
      );
    } else if (this.#finish()) {
      this.callback(null, bufferView(out));
    }
  }

  #abort(reason: Error): void {
    if (this.#abortReason !== undefined) return;
    this.#abortReason = reason;
    this.#controller?.abort(reason);
  }

  #finish(): boolean {
    if (!this.#open) return false;
    this.#open = false;
    this.inFlight.delete(this);
    return true;
  }
}

/** The one answer to a request without a valid job credential: it names nothing of the job. */
const REFUSED = new UnauthenticatedError('request refused: it carries no valid job credential');

/**
 * Answers through `answer` with the server's proof attached: in the response
 * headers of a success (sent with the message), in the trailers of an error.
 */
function provenAnswer(
  answer: sendUnaryData<Buffer>,
  call: ServerUnaryCall<Uint8Array, Buffer>,
  prove: (outcome: string, body: Uint8Array | undefined) => string,
): sendUnaryData<Buffer> {
  return (err, value) => {
    if (err !== null) {
      const code = typeof err.code === 'number' ? err.code : Status.UNKNOWN;
      const trailers = err.metadata ?? new Metadata();
      trailers.set(PROOF_KEY, prove(String(code), undefined));
      answer({ ...err, code, metadata: trailers });
      return;
    }
    const headers = new Metadata();
    headers.set(PROOF_KEY, prove('OK', value ?? undefined));
    call.sendMetadata(headers);
    answer(null, value);
  };
}

/** How often the server looks for calls whose deadline passed (one sweep, not a timer per call). */
const DEADLINE_SWEEP_MS = 100;

export function methodPath(service: string, method: string): string {
  return `/${service}/${method}`;
}

/** The address other nodes dial: see GrpcTransportOptions.advertise. */
function advertisedAddress(config: ResolvedOptions, boundPort: number): string {
  let advertise = config.advertise;
  if (advertise === undefined && isWildcardHost(config.host)) {
    const env = process.env[ADVERTISE_HOST_ENV];
    advertise = env === undefined || env === '' ? '127.0.0.1' : env;
  }
  if (advertise === undefined) return joinHostPort(config.host, boundPort);
  const split = splitHostPort(advertise);
  if (split === undefined || /[\s/]/.test(advertise)) {
    throw new InvalidArgumentError(`${ADVERTISE_HOST_ENV}=${JSON.stringify(advertise)} must be a host or host:port other nodes can dial`);
  }
  return joinHostPort(split.host, split.port ?? boundPort);
}

const NO_PROOF: Prover = () => '';

export class GrpcTransportServer implements TransportServer, StreamHost {
  readonly address: string;
  readonly #server: Server;
  readonly #config: ResolvedOptions;
  readonly #handler: RequestHandler;
  readonly #onClosed: (server: GrpcTransportServer) => void;
  readonly #served = new Map<string, ServiceDefinition>();
  readonly #inFlight = new Set<InboundCall>();
  readonly #sessions = new Set<StreamSession>();
  /** Method name -> its gRPC path, for checking the stream's per-call authenticators. */
  readonly #paths = new Map<string, string>();
  /** Every call that reaches a handler proved its caller a member of the job (a job certificate or the job secret). */
  readonly #authenticates: boolean;
  /** `grpc.health.v1.Health`, answering for the nodes behind this server (see health.ts). */
  readonly #health: HealthService;
  #closing: Promise<void> | undefined;

  private constructor(
    server: Server,
    address: string,
    config: ResolvedOptions,
    handler: RequestHandler,
    onClosed: (server: GrpcTransportServer) => void,
    health: HealthService,
  ) {
    this.#server = server;
    this.#health = health;
    this.address = address;
    this.#config = config;
    this.#handler = handler;
    this.#onClosed = onClosed;
    this.#authenticates = config.mutualTls || config.credential !== undefined;
  }

  /** Binds a server on the configured host and port and serves `options.methods`. */
  static async start(
    config: ResolvedOptions,
    options: ListenOptions,
    onClosed: (server: GrpcTransportServer) => void,
  ): Promise<GrpcTransportServer> {
    if (typeof options !== 'object' || options === null || typeof options.handler !== 'function') {
      throw new InvalidArgumentError('listen options must have a handler function');
    }
    const methods = checkMethods(options.methods ?? []);
    // Room for a stream message beyond the largest payload; a unary request or answer is
    // held to maxMessageBytes by #onCall and InboundCall.succeed.
    const grpcLimit = Math.min(config.maxMessageBytes + STREAM_LIMIT_SLACK, 2 ** 31 - 1);
    const server = new Server({
      'grpc.max_receive_message_length': grpcLimit,
      'grpc.max_send_message_length': grpcLimit,
      // The server pings idle clients too, so calls from a vanished node are cancelled.
      'grpc.keepalive_time_ms': config.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': config.keepaliveTimeoutMs,
      // Ping policy for gRPC C-core based peers and proxies (grpc-js does not police
      // pings): accept our clients' pings, also on idle connections, so nobody answers
      // GOAWAY "too_many_pings". Half the interval leaves room for timer jitter.
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_recv_ping_interval_without_data_ms': Math.floor(config.keepaliveTimeMs / 2),
      'grpc.http2.min_ping_interval_without_data_ms': Math.floor(config.keepaliveTimeMs / 2),
      'grpc.http2.max_ping_strikes': 0,
    });
    const health = await HealthService.addTo(server, config.service);
    const bindTo = joinHostPort(config.host, config.port);
    let port: number;
    try {
      port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(bindTo, config.serverCredentials, (err, bound) => (err ? reject(err) : resolve(bound)));
      });
    } catch (err) {
      server.forceShutdown();
      throw new UnavailableError(`cannot listen on ${bindTo}: ${(err as Error).message}`, { cause: err, details: { address: bindTo } });
    }
    let address: string;
    try {
      address = advertisedAddress(config, port);
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
    const self = new GrpcTransportServer(server, address, config, options.handler, onClosed, health);
    self.#serveStream();
    self.#apply(methods);
    config.logger.debug('gRPC server listening', { bound: joinHostPort(config.host, port), address, service: config.service });
    return self;
  }

  serve(methods: readonly string[]): void {
    const next = checkMethods(methods);
    // A closing server takes no new calls whatever it serves; shutdown paths may still call this.
    if (this.#closing !== undefined) return;
    this.#apply(next);
  }

  #apply(methods: ReadonlySet<string>): void {
    for (const [name, definition] of this.#served) {
      if (methods.has(name)) continue;
      this.#server.removeService(definition);
      this.#served.delete(name);
    }
    for (const name of methods) {
      if (this.#served.has(name)) continue;
      const definition = this.#definition(name);
      const implementation: UntypedServiceImplementation = {
        [name]: (call: ServerUnaryCall<Uint8Array, Buffer>, callback: sendUnaryData<Buffer>) => this.#onCall(name, call, callback),
      };
      this.#server.addService(definition, implementation);
      this.#served.set(name, definition);
    }
  }

  get maxMessageBytes(): number {
    return this.#config.maxMessageBytes;
  }

  /**
   * What the health service answers for node `node` (`node/<node>`), and with it for the
   * whole server (`""` and the data service's name: SERVING while some node serves).
   * `@taskgraph/core` reports each node: serving while it holds a task slot.
   */
  setServingStatus(node: string, serving: boolean): void {
    this.#health.set(node, serving);
  }

  #serveStream(): void {
    const definition: ServiceDefinition = {
      [STREAM_METHOD]: {
        path: methodPath(this.#config.service, STREAM_METHOD),
        requestStream: true,
        responseStream: true,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    };
    this.#server.addService(definition, {
      [STREAM_METHOD]: (call: ServerDuplexStream<Buffer, Buffer>) => {
        if (this.#closing !== undefined) {
          call.emit('error', statusFromError(new UnavailableError(`the server at ${this.address} is shutting down`)));
          return;
        }
        this.#sessions.add(new StreamSession(call, this));
      },
    });
  }

  /** StreamHost: one call off a stream, through the unary path's checks in the unary path's order. */
  admit(frame: CallFrame, payload: Uint8Array, answerWith: (prove: Prover) => Answer): StreamedCall | undefined {
    const logger = this.#config.logger;
    const credential = this.#config.credential;
    const method = frame.method;
    let path = this.#paths.get(method);
    if (path === undefined) {
      path = methodPath(this.#config.service, method);
      if (this.#paths.size < 10_000) this.#paths.set(method, path);
    }
    let prove = NO_PROOF;
    if (credential !== undefined) {
      const verified = credential.verifyHeader(frame.auth, path, frame.envelope, payload, Date.now());
      if (verified === undefined) {
        logger.debug('gRPC stream request without a valid job credential refused', { method });
        answerWith(NO_PROOF)(statusFromError(REFUSED));
        return undefined;
      }
      prove = (outcome, body) => credential.prove(verified.nonce, outcome, body);
    }
    const answer = answerWith(prove);
    let meta: InboundRequest['meta'];
    try {
      meta = metaFromEnvelope(frame.envelope);
    } catch (err) {
      logger.debug('gRPC stream request with a bad envelope', { method, error: (err as Error).message });
      answer(statusFromError(err));
      return undefined;
    }
    if (!this.#served.has(method)) {
      answer(statusFromError(new MethodNotFoundError(`${this.address} does not serve method ${JSON.stringify(method)}`), Status.UNIMPLEMENTED));
      return undefined;
    }
    if (this.#closing !== undefined) {
      answer(statusFromError(new UnavailableError(`the server at ${this.address} is shutting down`)));
      return undefined;
    }
    const deadlineAt = frame.timeoutMs > 0 ? Date.now() + frame.timeoutMs : Infinity;
    const entry = new InboundCall(method, meta, payload, deadlineAt, answer, this.#inFlight, this.#config.maxMessageBytes, this.#authenticates);
    this.#run(entry);
    return entry;
  }

  /** StreamHost: a session ended. */
  ended(session: StreamSession): void {
    this.#sessions.delete(session);
  }

  #definition(method: string): ServiceDefinition {
    return {
      [method]: {
        path: methodPath(this.#config.service, method),
        requestStream: false,
        responseStream: false,
        requestSerialize: bufferView,
        requestDeserialize: bytesView,
        responseSerialize: bufferView,
        responseDeserialize: bytesView,
      },
    };
  }

  #onCall(method: string, call: ServerUnaryCall<Uint8Array, Buffer>, answer: sendUnaryData<Buffer>): void {
    const logger = this.#config.logger;
    const credential = this.#config.credential;
    let callback = answer;
    if (credential !== undefined) {
      // First of all: a request without the job's credential is answered one fixed
      // sentence, before its metadata is even parsed, and proves nothing back.
      const verified = credential.verify(call.metadata, methodPath(this.#config.service, method), call.request, Date.now());
      if (verified === undefined) {
        logger.debug('gRPC request without a valid job credential refused', { method, peer: call.getPeer() });
        answer(statusFromError(REFUSED));
        return;
      }
      callback = provenAnswer(answer, call, (outcome, body) => credential.prove(verified.nonce, outcome, body));
    }
    let meta: InboundRequest['meta'];
    try {
      meta = metaFromMetadata(call.metadata);
    } catch (err) {
      logger.debug('gRPC request with bad metadata', { method, peer: call.getPeer(), error: (err as Error).message });
      callback(statusFromError(err));
      return;
    }
    if (this.#closing !== undefined) {
      // A call that raced the GOAWAY on a connection opened before close().
      callback(statusFromError(new UnavailableError(`the server at ${this.address} is shutting down`)));
      return;
    }

    if (call.request.byteLength > this.#config.maxMessageBytes) {
      // grpc-js's own limit has room for stream messages: a single request is held to ours here.
      const size = call.request.byteLength;
      const limit = this.#config.maxMessageBytes;
      callback(statusFromError(new InvalidArgumentError(`the request of ${method} is ${size} bytes; the limit is ${limit}`, { details: { size, limit } }), Status.RESOURCE_EXHAUSTED));
      return;
    }

    const deadline = call.getDeadline();
    const deadlineAt = deadline instanceof Date ? deadline.getTime() : deadline;
    const entry = new InboundCall(method, meta, call.request, Number.isFinite(deadlineAt) ? deadlineAt : Infinity, callback, this.#inFlight, this.#config.maxMessageBytes, this.#authenticates);
    // grpc-js may also report a stream closing after the answer went out: not a cancel.
    call.on('cancelled', () => entry.cancelled());
    this.#run(entry);
  }

  /** Runs a checked call's handler and answers with its outcome. */
  #run(entry: InboundCall): void {
    this.#inFlight.add(entry);
    if (entry.deadlineAt !== Infinity) this.#sweepDeadlines();
    let result: Promise<Uint8Array>;
    try {
      result = Promise.resolve(this.#handler(entry));
    } catch (err) {
      result = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    result.then(
      (out) => entry.succeed(out),
      (err: unknown) => entry.fail(err),
    );
  }

  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** Runs while calls with deadlines are in flight: tells their handlers when a deadline passed. */
  #sweepDeadlines(): void {
    if (this.#sweeper !== undefined) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      let pending = false;
      for (const entry of [...this.#inFlight]) {
        if (entry.deadlineAt <= now) entry.expire();
        else if (entry.deadlineAt !== Infinity) pending = true;
      }
      if (!pending && this.#sweeper !== undefined) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, DEADLINE_SWEEP_MS);
    this.#sweeper.unref();
  }

  stats(): GrpcServerStats {
    return {
      address: this.address,
      methods: [...this.#served.keys()],
      callsInFlight: this.#inFlight.size,
      streams: this.#sessions.size,
      connections: this.#closing === undefined ? serverConnections(this.#server) : [],
      health: { serving: this.#health.serving, nodes: this.#health.nodes },
    };
  }

  /**
   * Stops accepting calls (GOAWAY to every connection, the listener closed), waits
   * up to `graceMs` for calls in flight, then aborts the rest (their handlers'
   * signals abort with ClosedError), answers them UnavailableError (gRPC UNAVAILABLE)
   * so callers retry on the task's next owner, and destroys the connections.
   */
  close(options: { readonly graceMs?: number } = {}): Promise<void> {
    const graceMs = options.graceMs ?? this.#config.defaultGraceMs;
    if (typeof graceMs !== 'number' || !Number.isFinite(graceMs) || graceMs < 0) {
      return Promise.reject(new InvalidArgumentError(`close graceMs must be a non-negative number, got ${String(graceMs)}`));
    }
    this.#closing ??= this.#shutdown(graceMs);
    return this.#closing;
  }

  async #shutdown(graceMs: number): Promise<void> {
    // NOT_SERVING first, and the health watches end: they would hold up the drain.
    this.#health.close();
    const drained = new Promise<void>((resolve) => this.#server.tryShutdown(() => resolve()));
    // Streams are long-lived: each ends once its calls in flight are answered, so the drain can finish.
    for (const session of [...this.#sessions]) session.close();
    // graceMs 0 is a hard stop: no waiting at all, the connections are destroyed at once.
    let drainedInTime = graceMs > 0 && (await settlesWithin(drained, graceMs));
    const reason = new ClosedError(`the server at ${this.address} is closed`);
    // Retryable, so the caller moves on to the task's next owner; the handler may have
    // run in part (data requests are at-least-once), which details.maybeDelivered says.
    const answer = new UnavailableError(`the server at ${this.address} closed before the call finished`, {
      details: { maybeDelivered: true },
    });
    if (!drainedInTime) {
      for (const entry of [...this.#inFlight]) entry.cutOff(reason, answer);
      if (graceMs > 0) drainedInTime = await settlesWithin(drained, FLUSH_MS);
    }
    if (!drainedInTime) this.#server.forceShutdown();
    // Whatever is still open lost its connection to the forced shutdown: stop its handler.
    for (const entry of [...this.#inFlight]) entry.cutOff(reason, answer);
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    this.#served.clear();
    this.#onClosed(this);
    this.#config.logger.debug('gRPC server closed', { address: this.address, drained: drainedInTime });
  }
}

/** True when `promise` settles within `ms`; the timer never outlives the wait. */
async function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function checkMethods(methods: readonly string[]): ReadonlySet<string> {
  if (!Array.isArray(methods)) throw new InvalidArgumentError('methods must be an array of method names');
  for (const m of methods) assertValidMethodName(m);
  return new Set(methods);
}
