/**
 * Counts the TCP connections servers in this process accept, per local port,
 * for as long as it is open. It listens on Node's `net.server.socket` diagnostics
 * channel, which every net.Server (and so every http2 server grpc-js runs)
 * publishes each accepted socket to: a reconnect between two samples cannot hide
 * from it, as it could from polling channelz or /proc/net/tcp.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';

const CHANNEL = 'net.server.socket';

export class AcceptedConnections {
  readonly #byPort = new Map<number, number>();
  readonly #onSocket = (message: unknown): void => {
    const socket = (message as { socket?: Socket }).socket;
    const port = socket?.localPort;
    if (port !== undefined) this.#byPort.set(port, (this.#byPort.get(port) ?? 0) + 1);
  };
  #open = true;

  constructor() {
    subscribe(CHANNEL, this.#onSocket);
  }

  /** Connections accepted on `port` since this counter was made. */
  on(port: number): number {
    return this.#byPort.get(port) ?? 0;
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    unsubscribe(CHANNEL, this.#onSocket);
  }
}
