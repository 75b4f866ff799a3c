/**
 * The gRPC transport: servers from `listen`, and one client channel per peer
 * address, reused for every call to that peer until `forget` or `close`.
 */
import {
  ClosedError,
  InternalError,
  InvalidArgumentError,
  UnauthenticatedError,
  abortError,
  assertValidMethodName,
} from '@taskgraph/api';
import type { CallOptions, ListenOptions, RequestMeta, Transport } from '@taskgraph/api';
import { Client, connectivityState, status as Status } from '@grpc/grpc-js';
import type { ChannelOptions, ClientUnaryCall, Metadata, ServiceError } from '@grpc/grpc-js';
import { AUTH_KEY } from './auth.js';
import type { JobCredential } from './auth.js';
import { clientConnections } from './channelz.js';
import type { ConnectionInfo } from './channelz.js';
import { ENVELOPE_KEY, metadataFromMeta } from './metadata.js';
import { optionsFromUrl, resolveOptions, splitHostPort } from './options.js';
import type { GrpcTransportOptions, ResolvedOptions } from './options.js';
import { GrpcTransportServer, bufferView, bytesView, methodPath } from './server.js';
import { errorFromStatus } from './status.js';

export interface PeerStats {
  /** The address as given to `call`, without a `grpc://` prefix. */
  readonly address: string;
  /** The channel's connectivity state: IDLE, CONNECTING, READY, TRANSIENT_FAILURE or SHUTDOWN. */
  readonly state: string;
  /** Calls started on this channel. */
  readonly calls: number;
  /** The TCP connections the channel has open now, from channelz. */
  readonly connections: readonly ConnectionInfo[];
}

export interface GrpcTransportStats {
  /** Open channels, one per peer address called and not forgotten. */
  readonly channels: number;
  readonly peers: readonly PeerStats[];
  /** Servers listening. */
  readonly servers: number;
}

interface Peer {
  readonly client: Client;
  calls: number;
}

/** "host:port" from "host:port" or "grpc://host:port"; InvalidArgumentError otherwise. */
function normalizeAddress(address: unknown): string {
  if (typeof address !== 'string') throw new InvalidArgumentError(`address must be a string, got ${typeof address}`);
  const text = address.startsWith('grpc://') ? address.slice('grpc://'.length) : address.startsWith('grpcs://') ? address.slice('grpcs://'.length) : address;
  const split = /[\s/]/.test(text) ? undefined : splitHostPort(text);
  if (split === undefined || split.port === undefined || split.port === 0) {
    throw new InvalidArgumentError(`address ${JSON.stringify(address)} is not a gRPC address like "10.0.0.5:7000"`);
  }
  return text;
}

export class GrpcTransport implements Transport {
  readonly kind = 'grpc';
  readonly maxMessageBytes: number;
  readonly #config: ResolvedOptions;
  readonly #channelOptions: ChannelOptions;
  readonly #peers = new Map<string, Peer>();
  /** Raw address -> normalized host:port, and method -> gRPC path: parsed once per value. */
  readonly #targets = new Map<string, string>();
  readonly #paths = new Map<string, string>();
  readonly #servers = new Set<GrpcTransportServer>();
  /** Calls in flight, so close() can cut them off. */
  readonly #pending = new Set<OutboundCall>();
  /** Calls in flight by the signal that cancels them. */
  readonly #bySignal = new WeakMap<AbortSignal, Set<OutboundCall>>();
  #closing: Promise<void> | undefined;

  constructor(options: GrpcTransportOptions = {}) {
    this.#config = resolveOptions(options);
    this.maxMessageBytes = this.#config.maxMessageBytes;
    this.#channelOptions = {
      'grpc.max_send_message_length': this.#config.maxMessageBytes,
      'grpc.max_receive_message_length': this.#config.maxMessageBytes,
      'grpc.keepalive_time_ms': this.#config.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': this.#config.keepaliveTimeoutMs,
      'grpc.keepalive_permit_without_calls': 1,
      // Each channel owns its connections: without this, grpc-js shares subchannels
      // process-wide, so two nodes in one process would share (and forget) one socket.
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': Math.min(1_000, this.#config.maxReconnectBackoffMs),
      'grpc.max_reconnect_backoff_ms': this.#config.maxReconnectBackoffMs,
    };
  }

  /** The fully qualified gRPC service the methods live in. */
  get service(): string {
    return this.#config.service;
  }

  async listen(options: ListenOptions): Promise<GrpcTransportServer> {
    if (this.#closing !== undefined) throw new ClosedError('the gRPC transport is closed');
    const server = await GrpcTransportServer.start(this.#config, options, (s) => this.#servers.delete(s));
    if (this.#closing !== undefined) {
      await server.close({ graceMs: 0 });
      throw new ClosedError('the gRPC transport closed while the server was starting');
    }
    this.#servers.add(server);
    return server;
  }

  async call(address: string, method: string, meta: RequestMeta, payload: Uint8Array, options: CallOptions): Promise<Uint8Array> {
    if (this.#closing !== undefined) throw new ClosedError('the gRPC transport is closed');
    // The hot path: addresses and method paths are parsed once, then looked up.
    let target = this.#targets.get(address);
    if (target === undefined) {
      target = normalizeAddress(address);
      if (this.#targets.size > 10_000) this.#targets.clear();
      this.#targets.set(address, target);
    }
    let path = this.#paths.get(method);
    if (path === undefined) {
      assertValidMethodName(method);
      path = methodPath(this.#config.service, method);
      this.#paths.set(method, path);
    }
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('call options must be an object');
    const { timeoutMs, signal } = options;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new InvalidArgumentError(`call timeoutMs must be a positive number, got ${String(timeoutMs)}`);
    }
    if (!(payload instanceof Uint8Array)) throw new InvalidArgumentError(`the payload of ${method} must be a Uint8Array`);
    if (payload.byteLength > this.maxMessageBytes) {
      throw new InvalidArgumentError(`the request of ${method} is ${payload.byteLength} bytes; the limit is ${this.maxMessageBytes}`, {
        details: { size: payload.byteLength, limit: this.maxMessageBytes },
      });
    }
    const metadata = metadataFromMeta(meta);
    if (signal?.aborted) throw abortError(signal, `gRPC call ${method} to ${target}`);
    const credential = this.#config.credential;
    let nonce: string | undefined;
    if (credential !== undefined) {
      const signed = credential.sign(path, metadata.get(ENVELOPE_KEY)[0] as string, payload, Date.now());
      metadata.set(AUTH_KEY, signed.header);
      nonce = signed.nonce;
    }

    const peer = this.#peer(target);
    peer.calls += 1;
    const out = new OutboundCall(target, method, signal, this.#pending);
    this.#pending.add(out);
    if (signal !== undefined) this.#cancelOnAbort(signal, out);
    try {
      if (credential !== undefined && nonce !== undefined) out.expectProof(credential, nonce);
      out.call = peer.client.makeUnaryRequest<Uint8Array, Uint8Array>(
        path,
        bufferView,
        bytesView,
        payload,
        metadata,
        { deadline: Date.now() + timeoutMs },
        (err: ServiceError | null, value?: Uint8Array) => out.done(err, value),
      );
      out.listen();
    } catch (err) {
      out.forget();
      throw err;
    }
    return out.promise;
  }

  /**
   * One 'abort' listener per signal, however many calls share it (a data request's
   * signal is its epoch's): adding and removing an EventTarget listener per call
   * costs more than the rest of the call's bookkeeping.
   */
  #cancelOnAbort(signal: AbortSignal, out: OutboundCall): void {
    let calls = this.#bySignal.get(signal);
    if (calls === undefined) {
      const set = new Set<OutboundCall>();
      calls = set;
      this.#bySignal.set(signal, set);
      signal.addEventListener(
        'abort',
        () => {
          for (const c of [...set]) c.cancel();
          set.clear();
        },
        { once: true },
      );
    }
    out.watchers = calls;
    calls.add(out);
  }

  #peer(address: string): Peer {
    let peer = this.#peers.get(address);
    if (peer === undefined) {
      peer = { client: new Client(address, this.#config.channelCredentials, this.#channelOptions), calls: 0 };
      this.#peers.set(address, peer);
    }
    return peer;
  }

  forget(address: string): void {
    let target: string;
    try {
      target = normalizeAddress(address);
    } catch {
      return; // Nothing is ever kept under an address that is not one.
    }
    const peer = this.#peers.get(target);
    if (peer === undefined) return;
    this.#peers.delete(target);
    peer.client.close();
  }

  /** Channels and connections per peer, and servers: for tests and benchmarks. */
  stats(): GrpcTransportStats {
    return {
      channels: this.#peers.size,
      peers: [...this.#peers].map(([address, peer]) => peerStats(address, peer)),
      servers: this.#servers.size,
    };
  }

  /** The stats of one peer's channel, or undefined when none is open. */
  peerStats(address: string): PeerStats | undefined {
    const target = normalizeAddress(address);
    const peer = this.#peers.get(target);
    return peer === undefined ? undefined : peerStats(target, peer);
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    for (const pending of [...this.#pending]) pending.cancelForClose();
    for (const peer of this.#peers.values()) peer.client.close();
    this.#peers.clear();
    await Promise.all([...this.#servers].map((s) => s.close({ graceMs: 0 })));
  }
}

/**
 * gRPC codes that come without a proof from a genuine node too: the client's own
 * (connection failed, deadline passed, cancelled) and grpc-js's server answers before
 * any handler runs (a method not served, a message over the limit).
 */
const UNPROVABLE: ReadonlySet<number> = new Set([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED, Status.UNIMPLEMENTED, Status.RESOURCE_EXHAUSTED]);

/** One call in flight: its promise, and what cancels it (close, its signal). */
class OutboundCall {
  call: ClientUnaryCall | undefined;
  /** The calls sharing this call's signal, when it has one. */
  watchers: Set<OutboundCall> | undefined;
  readonly promise: Promise<Uint8Array>;
  #resolve!: (value: Uint8Array) => void;
  #reject!: (err: Error) => void;
  #closedUnder = false;
  /** With a job credential: what checks the answer's proof, the nonce it covers, and the answer's headers. */
  #credential: JobCredential | undefined;
  #nonce = '';
  #headers: Metadata | undefined;

  constructor(
    private readonly target: string,
    private readonly method: string,
    private readonly signal: AbortSignal | undefined,
    private readonly pending: Set<OutboundCall>,
  ) {
    this.promise = new Promise<Uint8Array>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  cancel(): void {
    this.call?.cancel();
  }

  expectProof(credential: JobCredential, nonce: string): void {
    this.#credential = credential;
    this.#nonce = nonce;
  }

  /** Keeps the answer's headers, which carry a success's proof (they arrive before the message). */
  listen(): void {
    if (this.#credential === undefined) return;
    this.call?.on('metadata', (headers: Metadata) => {
      this.#headers = headers;
    });
  }

  /** Cancelling sends RST_STREAM, so the server's handler hears that the caller left. */
  cancelForClose(): void {
    this.#closedUnder = true;
    this.call?.cancel();
  }

  forget(): void {
    this.pending.delete(this);
    this.watchers?.delete(this);
  }

  done(err: ServiceError | null, value: Uint8Array | undefined): void {
    this.forget();
    if (this.#closedUnder) this.#reject(new ClosedError(`${this.what()} was cut off: the gRPC transport closed`));
    else if (this.signal?.aborted) this.#reject(abortError(this.signal, this.what()));
    else if (err) this.#reject(this.#errorFrom(err));
    else if (this.#credential !== undefined && !this.#credential.proven(this.#headers, this.#nonce, 'OK', value)) this.#reject(this.#unproven(null));
    else if (value === undefined) this.#reject(new InternalError(`${this.what()} ended without a response`));
    else this.#resolve(value);
  }

  /**
   * With a credential, an error answer must prove its server holds the secret, except
   * the UNPROVABLE codes: for those only the status code counts, since trailers from an
   * unproven peer may claim anything.
   */
  #errorFrom(err: ServiceError): Error {
    const ctx = { address: this.target, method: this.method };
    const credential = this.#credential;
    if (credential === undefined || credential.proven(err.metadata, this.#nonce, String(err.code), undefined)) return errorFromStatus(err, ctx);
    if (UNPROVABLE.has(err.code)) return errorFromStatus({ code: err.code, details: err.details }, ctx);
    return this.#unproven(err);
  }

  #unproven(err: ServiceError | null): UnauthenticatedError {
    // Retryable: the task's real owner may publish its address again, or this node was
    // refused by a peer that does not share our secret; either way nothing of the answer is used.
    return new UnauthenticatedError(
      `${this.what()}: the answer does not prove that its server holds the job credential (refused, or not a node of this job); it was dropped`,
      { retryable: true, details: { address: this.target, method: this.method, ...(err ? { grpcCode: Status[err.code] ?? err.code } : {}) } },
    );
  }

  private what(): string {
    return `gRPC call ${this.method} to ${this.target}`;
  }
}

function peerStats(address: string, peer: Peer): PeerStats {
  const state = peer.client.getChannel().getConnectivityState(false);
  return { address, state: connectivityState[state] ?? String(state), calls: peer.calls, connections: clientConnections(peer.client) };
}

/**
 * Creates a gRPC transport from `grpc://host:port?advertise=...&maxMessageBytes=...`
 * or an options object. Nothing listens until `listen()`.
 */
export async function createGrpcTransport(config: string | URL | GrpcTransportOptions = {}): Promise<GrpcTransport> {
  const options = typeof config === 'string' || config instanceof URL ? optionsFromUrl(config) : config;
  return new GrpcTransport(options);
}
