/**
 * A TCP proxy on loopback that a test can cut: one client talks to the server
 * through it, and cutting it partitions that client alone while everyone else
 * still reaches the server directly.
 *
 * `cut()` behaves like a network partition, not like a crash: connections stay
 * open but no byte crosses in either direction (and new connections are
 * accepted but never reach the server), so the client sees silence, not
 * errors, until its own timeouts fire. `heal()` lets the held bytes through.
 * `reset()` instead drops every connection at once, as a restarted router does.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { InvalidArgumentError } from '@taskgraph/api';

export interface TcpProxyOptions {
  /** Where to forward: `host:port`, or a port on 127.0.0.1. */
  readonly target: string | number;
  /** The port to listen on. Default: a free one. */
  readonly port?: number;
}

export interface TcpProxy {
  /** The port clients connect to (on 127.0.0.1). */
  readonly port: number;
  /** `127.0.0.1:<port>` */
  readonly address: string;
  /** Open client connections. */
  readonly connections: number;
  readonly isCut: boolean;
  /** Stops every byte in both directions, on open and new connections, until `heal()`. */
  cut(): void;
  /**
   * Holds the server's bytes only, until `heal()`: requests still arrive and are
   * applied, their answers are lost to the client (a write's outcome is unknown to it).
   */
  cutReplies(): void;
  /** Lets bytes flow again, held ones first. */
  heal(): void;
  /** Destroys every open connection (the client sees a connection reset). */
  reset(): void;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  upstream: Socket | undefined;
}

function parseTarget(target: string | number): { host: string; port: number } {
  if (typeof target === 'number') return { host: '127.0.0.1', port: target };
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(target);
  if (!m) throw new InvalidArgumentError(`proxy target ${JSON.stringify(target)} must be "host:port"`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

class Proxy implements TcpProxy {
  readonly #server: Server;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  #cut = false;
  #repliesCut = false;
  #port = 0;

  constructor(target: { host: string; port: number }) {
    this.#target = target;
    this.#server = createServer({ pauseOnConnect: true }, (client) => this.#accept(client));
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ host: '127.0.0.1', port }, () => {
        const address = this.#server.address();
        this.#port = typeof address === 'object' && address !== null ? address.port : port;
        resolve();
      });
    });
  }

  get port(): number {
    return this.#port;
  }
  get address(): string {
    return `127.0.0.1:${this.#port}`;
  }
  get connections(): number {
    return this.#pairs.size;
  }
  get isCut(): boolean {
    return this.#cut;
  }

  #accept(client: Socket): void {
    const pair: Pair = { client, upstream: undefined };
    this.#pairs.add(pair);
    client.on('error', () => this.#drop(pair));
    client.on('close', () => this.#drop(pair));
    if (!this.#cut) this.#connectUpstream(pair);
  }

  #connectUpstream(pair: Pair): void {
    const upstream = connect({ host: this.#target.host, port: this.#target.port });
    pair.upstream = upstream;
    upstream.on('error', () => this.#drop(pair));
    upstream.on('close', () => this.#drop(pair));
    forward(pair.client, upstream, () => this.#cut);
    forward(upstream, pair.client, () => this.#cut || this.#repliesCut);
    if (this.#repliesCut) upstream.pause();
    if (!this.#cut) pair.client.resume();
  }

  #drop(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    pair.client.destroy();
    pair.upstream?.destroy();
  }

  cut(): void {
    this.#cut = true;
    for (const pair of this.#pairs) {
      pair.client.pause();
      pair.upstream?.pause();
    }
  }

  cutReplies(): void {
    this.#repliesCut = true;
    for (const pair of this.#pairs) pair.upstream?.pause();
  }

  heal(): void {
    this.#cut = false;
    this.#repliesCut = false;
    for (const pair of this.#pairs) {
      if (pair.upstream === undefined) {
        this.#connectUpstream(pair);
      } else {
        pair.client.resume();
        pair.upstream.resume();
      }
    }
  }

  reset(): void {
    for (const pair of [...this.#pairs]) {
      pair.client.resetAndDestroy();
      this.#drop(pair);
    }
  }

  close(): Promise<void> {
    for (const pair of [...this.#pairs]) this.#drop(pair);
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/** Copies `from` into `to` with backpressure, holding everything while `isCut()`. */
function forward(from: Socket, to: Socket, isCut: () => boolean): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => {
    if (!isCut()) from.resume();
  });
  from.on('end', () => to.end());
}

/** Starts a proxy on 127.0.0.1 that forwards to `target`. */
export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  const proxy = new Proxy(parseTarget(options.target));
  await proxy.listen(options.port ?? 0);
  return proxy;
}
