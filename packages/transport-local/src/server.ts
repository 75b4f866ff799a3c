/**
 * The server side of the local transport: checks each request the network hands
 * it, runs the handler with a signal it owns, answers through the network, and
 * drains or cuts calls in flight when it closes.
 */
import type { Clock, InboundRequest, RequestHandler, TaskGraphError, TransportServer } from '@taskgraph/api';
import {
  ClosedError,
  InternalError,
  InvalidArgumentError,
  MethodNotFoundError,
  UnavailableError,
  assertValidMethodName,
} from '@taskgraph/api';
import { addressOf } from './address.js';
import type { Endpoint, Switchboard } from './network.js';
import type { Exchange, WireAnswer } from './wire.js';
import { copyBytes, errorAnswer } from './wire.js';

/** How long `close()` lets calls in flight finish when no graceMs is given. */
export const DEFAULT_GRACE_MS = 5_000;

export function checkMethods(methods: unknown): readonly string[] {
  if (!Array.isArray(methods)) throw new InvalidArgumentError('methods must be an array of method names');
  for (const m of methods) assertValidMethodName(m);
  return methods as readonly string[];
}

export interface ServerContext {
  readonly board: Switchboard;
  readonly clock: Clock;
  readonly maxMessageBytes: number;
  /** Called once the server is fully closed. */
  readonly onClosed: (server: LocalServer) => void;
}

export class LocalServer implements TransportServer {
  readonly address: string;
  readonly #name: string;
  readonly #handler: RequestHandler;
  readonly #context: ServerContext;
  readonly #inFlight = new Set<InboundCall>();
  /** What the network delivers to; kept off the public surface. */
  readonly #endpoint: Endpoint;
  #methods: ReadonlySet<string>;
  #closing: Promise<void> | undefined;
  /** Ends the grace period early: the last call finished, or the transport is closing. */
  #endGrace: (() => void) | undefined;

  /** Registers on the network; AlreadyExistsError when `name` is taken. */
  constructor(context: ServerContext, name: string | undefined, handler: RequestHandler, methods: readonly string[]) {
    this.#context = context;
    this.#handler = handler;
    this.#methods = new Set(methods);
    this.#endpoint = { accept: (exchange) => this.#accept(exchange), clock: context.clock };
    this.#name = context.board.register(name, this.#endpoint);
    this.address = addressOf(this.#name);
  }

  /** True once `close` has been called. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** The number of calls whose handler is running. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  serve(methods: readonly string[]): void {
    this.#methods = new Set(checkMethods(methods));
  }

  /**
   * Stops accepting calls at once (new ones get UnavailableError: not delivered),
   * lets calls in flight finish for up to `graceMs` (default {@link DEFAULT_GRACE_MS}),
   * then cuts the rest: their handler's signal aborts with a ClosedError and their
   * callers get UnavailableError with `details.handlerStarted: true` (retryable: the
   * framework retries at the task's next owner; this is the one Unavailable whose
   * handler did run, as with a gRPC server that goes away mid-call). Resolves when
   * no call is left. Idempotent: a second call returns the first one's promise.
   */
  close(options: { readonly graceMs?: number } = {}): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
    if (typeof graceMs !== 'number' || !(graceMs >= 0) || Number.isNaN(graceMs)) {
      return Promise.reject(new InvalidArgumentError(`graceMs must be a non-negative number, got ${String(graceMs)}`));
    }
    this.#context.board.unregister(this.#name, this.#endpoint);
    this.#closing = this.#drain(graceMs);
    return this.#closing;
  }

  /** Closes with no grace, or ends a grace period under way. */
  abort(): Promise<void> {
    const closing = this.close({ graceMs: 0 });
    this.#endGrace?.();
    return closing;
  }

  async #drain(graceMs: number): Promise<void> {
    if (this.#inFlight.size > 0 && graceMs > 0) {
      const clock = this.#context.clock;
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(() => this.#endGrace?.(), graceMs);
        this.#endGrace = () => {
          this.#endGrace = undefined;
          clock.clearTimeout(timer);
          resolve();
        };
      });
    }
    for (const call of [...this.#inFlight]) call.cut();
    this.#context.onClosed(this);
  }

  #accept(exchange: Exchange): 'delivered' | 'rejected' {
    const board = this.#context.board;
    if (!this.#methods.has(exchange.method)) {
      board.reply(exchange, errorAnswer(new MethodNotFoundError(`${this.address} does not serve method "${exchange.method}"`)));
      return 'rejected';
    }
    const max = this.#context.maxMessageBytes;
    if (exchange.payload.length > max) {
      board.reply(
        exchange,
        errorAnswer(
          new InvalidArgumentError(
            `the request to "${exchange.method}" is ${exchange.payload.length} bytes; ${this.address} accepts at most ${max}`,
          ),
        ),
      );
      return 'rejected';
    }
    const call = new InboundCall(this.address, exchange, this.#context, (c) => this.#settled(c));
    this.#inFlight.add(call);
    call.run(this.#handler);
    return 'delivered';
  }

  /** An inbound call has answered (or was cut). */
  #settled(call: InboundCall): void {
    this.#inFlight.delete(call);
    if (this.#inFlight.size === 0) this.#endGrace?.();
  }
}

class InboundCall {
  readonly #address: string;
  readonly #exchange: Exchange;
  readonly #context: ServerContext;
  readonly #onSettled: (call: InboundCall) => void;
  readonly #controller = new AbortController();
  #finished = false;

  constructor(address: string, exchange: Exchange, context: ServerContext, onSettled: (call: InboundCall) => void) {
    this.#address = address;
    this.#exchange = exchange;
    this.#context = context;
    this.#onSettled = onSettled;
    exchange.onGiveUp((reason) => this.#abort(reason));
  }

  run(handler: RequestHandler): void {
    const x = this.#exchange;
    const request: InboundRequest = Object.freeze({
      method: x.method,
      meta: x.meta,
      payload: x.payload,
      signal: this.#controller.signal,
      // Only code in this process can reach an in-process network, and it holds the job already.
      authenticated: true,
    });
    let result: Promise<Uint8Array>;
    try {
      result = Promise.resolve(handler(request));
    } catch (err) {
      result = Promise.reject(err);
    }
    void result.then(
      (output) => this.#finish(this.#output(output)),
      (err: unknown) => this.#finish(errorAnswer(err)),
    );
  }

  /** The server is closing and the grace period is over. */
  cut(): void {
    if (this.#finished) return;
    this.#finished = true;
    const address = this.#address;
    const method = this.#exchange.method;
    this.#onSettled(this);
    this.#controller.abort(new ClosedError(`${address} closed while "${method}" was running`));
    this.#context.board.count(this.#exchange.address, 'cut');
    this.#context.board.reply(
      this.#exchange,
      errorAnswer(
        new UnavailableError(`${address} closed before "${method}" finished; its handler had started and was aborted`, {
          details: { address, method, handlerStarted: true },
        }),
      ),
    );
  }

  #output(output: unknown): WireAnswer {
    const method = this.#exchange.method;
    if (!(output instanceof Uint8Array)) {
      return errorAnswer(new InternalError(`the handler of "${method}" resolved with ${describe(output)}, not a Uint8Array`));
    }
    const max = this.#context.maxMessageBytes;
    if (output.length > max) {
      return errorAnswer(new InvalidArgumentError(`the response of "${method}" is ${output.length} bytes; the limit is ${max}`));
    }
    return { ok: true, payload: copyBytes(output) };
  }

  #finish(answer: WireAnswer): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#onSettled(this);
    this.#context.board.reply(this.#exchange, answer);
  }

  #abort(reason: TaskGraphError): void {
    if (!this.#finished) this.#controller.abort(reason);
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  return typeof value;
}
