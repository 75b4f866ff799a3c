/**
 * The gRPC transport: servers from `listen`, and one client channel per peer
 * address, reused for every call to that peer until `forget` or `close`. By default
 * the calls to a peer ride one multiplexed stream on that channel (peer-stream.ts);
 * `dataPlane: 'unary'` makes each call its own unary gRPC call instead.
 */
import { ClosedError, InvalidArgumentError, abortError, assertValidMethodName } from '@taskgraph/api';
import type { CallOptions, ListenOptions, RequestMeta, Transport } from '@taskgraph/api';
import { Client, Metadata, connectivityState, status as Status } from '@grpc/grpc-js';
import type { ChannelOptions, ServiceError } from '@grpc/grpc-js';
import { AUTH_KEY } from './auth.js';
import { clientConnections } from './channelz.js';
import type { ConnectionInfo } from './channelz.js';
import { STREAM_LIMIT_SLACK } from './frames.js';
import { ENVELOPE_KEY, envelopeFromMeta } from './metadata.js';
import { optionsFromUrl, resolveOptions, splitHostPort } from './options.js';
import type { GrpcTransportOptions, ResolvedOptions } from './options.js';
import { OutboundCall } from './outbound-call.js';
import { PeerStream, STREAM_METHOD } from './peer-stream.js';
import { GrpcTransportServer, bufferView, bytesView, methodPath } from './server.js';

export interface PeerStats {
  /** The address as given to `call`, without a `grpc://` prefix. */
  readonly address: string;
  /** The channel's connectivity state: IDLE, CONNECTING, READY, TRANSIENT_FAILURE or SHUTDOWN. */
  readonly state: string;
  /** Calls started on this channel. */
  readonly calls: number;
  /** "stream" when calls ride the peer's multiplexed stream, "unary" when each is its own gRPC call. */
  readonly dataPlane: 'stream' | 'unary';
  /** The stream's writes so far: stream messages, and the frames coalesced into them. Zeros without a stream. */
  readonly streamWrites: { readonly messages: number; readonly frames: number };
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
  /** The multiplexed stream to the peer, while it is open. */
  stream: PeerStream | undefined;
  /** The peer does not serve the stream: its calls go unary. */
  unaryOnly: boolean;
  /** Writes of the streams that broke, so stats add up over the peer's life. */
  messages: number;
  frames: number;
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
  readonly #streamPath: string;

  constructor(options: GrpcTransportOptions = {}) {
    this.#config = resolveOptions(options);
    this.maxMessageBytes = this.#config.maxMessageBytes;
    // Room for a stream message beyond the largest payload; single calls and answers are
    // held to maxMessageBytes by the transport's own checks.
    const grpcLimit = Math.min(this.#config.maxMessageBytes + STREAM_LIMIT_SLACK, 2 ** 31 - 1);
    this.#streamPath = methodPath(this.#config.service, STREAM_METHOD);
    this.#channelOptions = {
      'grpc.max_send_message_length': grpcLimit,
      'grpc.max_receive_message_length': grpcLimit,
      'grpc.keepalive_time_ms': this.#config.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': this.#config.keepaliveTimeoutMs,
      'grpc.keepalive_permit_without_calls': 1,
      // Each channel owns its connections: without this, grpc-js shares subchannels
      // process-wide, so two nodes in one process would share (and forget) one socket.
      'grpc.use_local_subchannel_pool': 1,
      'grpc-node.flow_control_window': 16 * 1024 * 1024,
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
    const path = this.#methodPath(method);
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
    const stream = this.#config.dataPlane === 'stream';
    const envelope = envelopeFromMeta(meta);
    if (signal?.aborted) throw abortError(signal, `gRPC call ${method} to ${target}`);
    const credential = this.#config.credential;
    let signed: { header: string; nonce: string } | undefined;
    if (credential !== undefined) signed = credential.sign(path, envelope, payload, Date.now());

    const peer = this.#peer(target);
    peer.calls += 1;
    const out = new OutboundCall(target, method, signal, this.#pending, this.maxMessageBytes);
    this.#pending.add(out);
    if (signal !== undefined) this.#cancelOnAbort(signal, out);
    try {
      if (credential !== undefined && signed !== undefined) out.expectProof(credential, signed.nonce);
      if (stream && !peer.unaryOnly) this.#stream(peer).start(out, method, envelope, signed?.header ?? '', payload, timeoutMs);
      else this.#unary(peer, path, out, envelope, signed?.header, payload, timeoutMs);
    } catch (err) {
      out.forget();
      throw err;
    }
    return out.promise;
  }

  #methodPath(method: string): string {
    let path = this.#paths.get(method);
    if (path === undefined) {
      assertValidMethodName(method);
      path = methodPath(this.#config.service, method);
      this.#paths.set(method, path);
    }
    return path;
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
      peer = { client: new Client(address, this.#config.channelCredentials, this.#channelOptions), calls: 0, stream: undefined, unaryOnly: false, messages: 0, frames: 0 };
      this.#peers.set(address, peer);
    }
    return peer;
  }

  #unary(peer: Peer, path: string, out: OutboundCall, envelope: string, auth: string | undefined, payload: Uint8Array, timeoutMs: number): void {
    const metadata = new Metadata();
    metadata.set(ENVELOPE_KEY, envelope);
    if (auth !== undefined) metadata.set(AUTH_KEY, auth);
    const call = peer.client.makeUnaryRequest<Uint8Array, Uint8Array>(
      path,
      bufferView,
      bytesView,
      payload,
      metadata,
      { deadline: Date.now() + timeoutMs },
      (err: ServiceError | null, value?: Uint8Array) => out.done(err, value),
    );
    out.call = call;
    out.listen(call);
  }

  /** The peer's open stream, or a new one when it has none (never opened, or broken). */
  #stream(peer: Peer): PeerStream {
    if (peer.stream !== undefined && !peer.stream.broken) return peer.stream;
    const stream = new PeerStream(peer.client, this.#streamPath, (s, unserved) => {
      const w = s.writes;
      peer.messages += w.messages;
      peer.frames += w.frames;
      if (peer.stream === s) peer.stream = undefined;
      if (unserved === undefined) return;
      // The peer serves no stream (a foreign gRPC server or an older node): from now on
      // its calls are unary, starting with these, which no handler has seen.
      peer.unaryOnly = true;
      for (const c of unserved) {
        const left = c.deadlineAt - Date.now();
        if (left <= 0) c.out.done({ code: Status.DEADLINE_EXCEEDED, details: 'Deadline exceeded' }, undefined);
        else this.#unary(peer, this.#methodPath(c.method), c.out, c.envelope, c.auth === '' ? undefined : c.auth, c.payload, left);
      }
    });
    peer.stream = stream;
    return stream;
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
    peer.stream?.finish();
    peer.client.close();
  }

  /** Channels and connections per peer, and servers: for tests and benchmarks. */
  stats(): GrpcTransportStats {
    return {
      channels: this.#peers.size,
      peers: [...this.#peers].map(([address, peer]) => peerStats(address, peer, this.#config.dataPlane)),
      servers: this.#servers.size,
    };
  }

  /** The stats of one peer's channel, or undefined when none is open. */
  peerStats(address: string): PeerStats | undefined {
    const target = normalizeAddress(address);
    const peer = this.#peers.get(target);
    return peer === undefined ? undefined : peerStats(target, peer, this.#config.dataPlane);
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    for (const pending of [...this.#pending]) pending.cancelForClose();
    for (const peer of this.#peers.values()) {
      peer.stream?.close();
      peer.client.close();
    }
    this.#peers.clear();
    await Promise.all([...this.#servers].map((s) => s.close({ graceMs: 0 })));
  }
}

function peerStats(address: string, peer: Peer, dataPlane: 'stream' | 'unary'): PeerStats {
  const state = peer.client.getChannel().getConnectivityState(false);
  const w = peer.stream?.writes ?? { messages: 0, frames: 0 };
  return {
    address,
    state: connectivityState[state] ?? String(state),
    calls: peer.calls,
    dataPlane: peer.unaryOnly ? 'unary' : dataPlane,
    streamWrites: { messages: peer.messages + w.messages, frames: peer.frames + w.frames },
    connections: clientConnections(peer.client),
  };
}

/**
 * Creates a gRPC transport from `grpc://host:port?advertise=...&maxMessageBytes=...`
 * or an options object. Nothing listens until `listen()`.
 */
export async function createGrpcTransport(config: string | URL | GrpcTransportOptions = {}): Promise<GrpcTransport> {
  const options = typeof config === 'string' || config instanceof URL ? optionsFromUrl(config) : config;
  return new GrpcTransport(options);
}
