/**
 * The transport SPI: the data plane that carries `dataRequest` between nodes. The
 * framework above it does routing, retries and fencing; a transport moves bytes
 * and reports failures exactly, as typed errors:
 * - UnavailableError (retryable): nothing was delivered (unreachable, refused, closed);
 * - DeadlineExceededError: no answer in time; AbortedError: the caller's signal aborted;
 * - a TaskGraphError thrown by the server's handler arrives as the same code and details;
 * - MethodNotFoundError: the server does not serve that method.
 */

/** What travels with every request besides the payload. */
export interface RequestMeta {
  readonly job: string;
  /** The sending task's id (-1 for a caller that is not a task). */
  readonly from: number;
  /** The target task's id. */
  readonly to: number;
  /** The sender's epoch; the receiver rejects any other with EpochChangedError. */
  readonly epoch: number;
  /** The target incarnation's fencing token (decimal); the receiver rejects any other with NotOwnerError. */
  readonly token: string;
  /** Unique per logical request (kept across retries), for logs and deduplication. */
  readonly requestId: string;
  /**
   * The caller's W3C trace context (`00-<trace id>-<span id>-<flags>`), when the caller
   * traces; absent otherwise. Optional and advisory: a transport carries it when
   * `validTraceparent` accepts it and drops it otherwise (never failing the call), so a
   * server sees only a well-formed one; a server that does not trace ignores it.
   */
  readonly traceparent?: string;
  /** The W3C `tracestate` that goes with `traceparent` (carried only with it; see `validTracestate`). */
  readonly tracestate?: string;
}

export interface InboundRequest {
  readonly method: string;
  readonly meta: RequestMeta;
  readonly payload: Uint8Array;
  /** Aborts when the caller gives up or the server shuts down. */
  readonly signal: AbortSignal;
  /**
   * True when the transport proved that the caller belongs to the job (a job
   * credential or a certificate from the job's CA), or only the job's own process can
   * reach the server (the in-process transport). Answers to anyone else must not
   * reveal the job's state (its name, tokens, epoch). Absent means false.
   */
  readonly authenticated?: boolean;
}

/** Serves one request: resolves with the output bytes or rejects with a (typed) error. */
export type RequestHandler = (request: InboundRequest) => Promise<Uint8Array>;

export interface ListenOptions {
  readonly handler: RequestHandler;
  /** The method names served at first (see `TransportServer.serve`). */
  readonly methods?: readonly string[];
}

export interface TransportServer {
  /** Where callers reach this server (e.g. "127.0.0.1:40123" or "local://node-3"). */
  readonly address: string;
  /** Replaces the set of method names served; others answer MethodNotFoundError. */
  serve(methods: readonly string[]): void;
  /**
   * Stops accepting calls, lets calls in flight finish for up to `graceMs`, then
   * cancels the rest.
   */
  close(options?: { readonly graceMs?: number }): Promise<void>;
  /**
   * Optional, for health checks: the node `node` behind this server serves requests
   * (it holds a task slot: a primary or a backup) or not (starting, a standby, left).
   * A transport with a health service reports it (the gRPC transport: `grpc.health.v1.Health`);
   * others may leave it out. Several nodes may report on one server (a node host).
   */
  setServingStatus?(node: string, serving: boolean): void;
}

export interface CallOptions {
  /** The call's deadline, in ms from now. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface Transport {
  /** The transport's name, e.g. "local", "grpc". */
  readonly kind: string;
  /** The largest request or response payload, in bytes. */
  readonly maxMessageBytes: number;
  /** Starts a server on this transport. */
  listen(options: ListenOptions): Promise<TransportServer>;
  /** Calls `method` on the server at `address`. */
  call(address: string, method: string, meta: RequestMeta, payload: Uint8Array, options: CallOptions): Promise<Uint8Array>;
  /** Drops any connection kept to `address` (its node went away). */
  forget(address: string): void;
  /** Closes every server and connection this transport opened. */
  close(): Promise<void>;
}

/** A transport package's URL factory: `createXTransport(url)`, resolved by scheme. */
export type TransportFactory = (url: string | URL) => Promise<Transport>;
