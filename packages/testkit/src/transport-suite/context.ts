/**
 * What every part of the transport suite shares: the options, the settings with
 * the time scale applied, the transports a test makes (closed after it), and a
 * server that dispatches by method name.
 */
import type { InboundRequest, Transport, TransportServer } from '@taskgraph/api';

export interface TransportSuiteOptions {
  /** Shown in the suite's title, e.g. "local" or "grpc". */
  readonly name: string;
  /** An address in this transport's format where nothing listens (e.g. a closed loopback port). */
  readonly unreachableAddress: () => Promise<string> | string;
  /** The size of the "several MiB" payloads sent both ways (default 4 MiB). */
  readonly largePayloadBytes?: number;
  /** Multiplies every timeout and wait of the suite (default 1); raise it on slow machines. */
  readonly timeScale?: number;
}

/** What a test gets: `node()` makes a transport that the suite closes after the test. */
export interface Harness {
  node(): Promise<Transport>;
}

/** The suite's settings and state, handed to each part. */
export interface SuiteContext {
  readonly options: TransportSuiteOptions;
  readonly h: Harness;
  /** Registers a test with the suite's (scaled) timeout. */
  it(name: string, fn: () => Promise<void>): void;
  /** `n` ms times the suite's time scale. */
  ms(n: number): number;
  /** How long the suite waits for something that should happen promptly, in ms. */
  readonly patience: number;
  readonly largeBytes: number;
  /** Closes, one after the other, every transport the current test made. */
  closeOpen(): Promise<void>;
  /** The process's live resources by type before the suite's first test. */
  baseline(): ReadonlyMap<string, number>;
}

export type Handler = (request: InboundRequest) => Promise<Uint8Array> | Uint8Array;

/** Starts a server that dispatches by method name to `handlers`, serving exactly their names. */
export function serveAll(transport: Transport, handlers: Record<string, Handler>): Promise<TransportServer> {
  return transport.listen({
    methods: Object.keys(handlers),
    handler: async (request) => {
      const handler = handlers[request.method];
      if (handler === undefined) throw new Error(`the suite's handler was called for "${request.method}", which it does not serve`);
      return handler(request);
    },
  });
}

export const echo: Handler = (request) => request.payload;
