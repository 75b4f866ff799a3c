/**
 * A LocalNetwork: the in-process "wire" between local transports. It maps
 * `local://<name>` addresses to servers, carries each call's request and response
 * legs (always asynchronously), applies the faults in force, and counts what
 * happened to every call so that tests can assert on it.
 */
import type { Clock } from '@taskgraph/api';
import { AlreadyExistsError, InvalidArgumentError, UnavailableError, deferOn, randomOf, systemClock } from '@taskgraph/api';
import { addressOf, assertValidName, parseAddress } from './address.js';
import type { DelayOptions, DuplicateOptions, Fault, FaultKind, FaultOptions } from './faults.js';
import { FaultRule } from './faults.js';
import type { Exchange, WireAnswer } from './wire.js';
import { errorAnswer } from './wire.js';

/** What happened to the calls sent to one address (or to all of them). */
export interface LinkStats {
  /** Requests sent (calls that passed the caller's own checks). */
  readonly sent: number;
  /** Requests whose handler ran. */
  readonly delivered: number;
  /** Requests the server answered without running the handler: unknown method, payload too large. */
  readonly rejected: number;
  /** Requests refused with UnavailableError, never delivered: nothing listening, server closing, address disconnected. */
  readonly refused: number;
  /** Requests lost by a dropRequests fault (the caller sees its deadline). */
  readonly droppedRequests: number;
  /** Answers lost by a dropResponses fault or because the address was disconnected (the handler ran; the caller sees its deadline). */
  readonly droppedResponses: number;
  /** Requests delivered a second time by a duplicateRequests fault (the copies, not the originals). */
  readonly duplicatedRequests: number;
  /** Requests held back by a delayRequests fault. */
  readonly delayedRequests: number;
  /** Answers held back by a delayResponses fault. */
  readonly delayedResponses: number;
  /** Calls in flight that a closing server cut after its grace period (their callers get UnavailableError). */
  readonly cut: number;
  /** Server answers (results or errors, rejections and cuts included) that reached a caller still waiting. */
  readonly answered: number;
  /** Server answers that came after the caller had given up. */
  readonly late: number;
  /** Requests the caller gave up on (deadline, abort, close) before they reached the server. */
  readonly abandoned: number;
}

type Counter = keyof LinkStats;

function emptyStats(): Record<Counter, number> {
  return {
    sent: 0,
    delivered: 0,
    rejected: 0,
    refused: 0,
    droppedRequests: 0,
    droppedResponses: 0,
    duplicatedRequests: 0,
    delayedRequests: 0,
    delayedResponses: 0,
    cut: 0,
    answered: 0,
    late: 0,
    abandoned: 0,
  };
}

export interface LocalNetworkOptions {
  /** Random numbers in [0, 1) for fault probabilities and delay ranges (default: the clock's `random`, else Math.random); pass a seeded one for reproducible runs. */
  readonly random?: () => number;
  /** The clock that times delay faults and defers deliveries (default: the system clock). */
  readonly clock?: Clock;
}

/** The server side of an address, as the network sees it. */
export interface Endpoint {
  /** Takes a request: runs its handler (`delivered`) or answers it at once (`rejected`). */
  accept(exchange: Exchange): 'delivered' | 'rejected';
  /** The server's clock: requests arrive on it (a paused simulated node takes them when it resumes). */
  readonly clock?: Clock;
}

let defaultNetwork: LocalNetwork | undefined;

export class LocalNetwork {
  readonly #random: () => number;
  readonly #clock: Clock;
  readonly #servers = new Map<string, Endpoint>();
  readonly #disconnected = new Set<string>();
  readonly #rules = new Set<FaultRule>();
  readonly #stats = new Map<string, Record<Counter, number>>();
  #total = emptyStats();
  #nextName = 0;

  constructor(options: LocalNetworkOptions = {}) {
    if (options.random !== undefined && typeof options.random !== 'function') {
      throw new InvalidArgumentError('LocalNetwork option "random" must be a function returning numbers in [0, 1)');
    }
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? randomOf(this.#clock);
    boards.set(this, {
      register: (name, endpoint) => this.#register(name, endpoint),
      unregister: (name, endpoint) => this.#unregister(name, endpoint),
      generateName: () => this.#generateName(),
      send: (exchange) => this.#send(exchange),
      reply: (exchange, answer) => this.#reply(exchange, answer),
      count: (address, counter) => this.#count(address, counter),
    });
  }

  /** The process-wide network that `local://` URLs (and transports given no network) use. */
  static get default(): LocalNetwork {
    defaultNetwork ??= new LocalNetwork();
    return defaultNetwork;
  }

  /** The addresses of the servers listening now. */
  addresses(): string[] {
    return [...this.#servers.keys()].map(addressOf);
  }

  /** Requests to matching calls are lost: never delivered; the caller sees its deadline. */
  dropRequests(options: FaultOptions = {}): Fault {
    return this.#addRule('dropRequest', options);
  }

  /**
   * Answers of matching calls are lost: the handler runs but the caller never hears
   * and sees its deadline (this is what makes at-least-once delivery visible).
   */
  dropResponses(options: FaultOptions = {}): Fault {
    return this.#addRule('dropResponse', options);
  }

  /** Requests of matching calls arrive `ms` later (fixed or drawn from a range). */
  delayRequests(options: DelayOptions): Fault {
    return this.#addRule('delayRequest', options);
  }

  /** Answers of matching calls arrive `ms` later (fixed or drawn from a range). */
  delayResponses(options: DelayOptions): Fault {
    return this.#addRule('delayResponse', options);
  }

  /**
   * Matching requests are delivered twice: the handler runs for the original and for
   * a copy that arrives `ms` later (default at once, on a later turn); the first
   * answer to arrive is the caller's, the other is counted late. This is how a
   * retransmitting network looks to a server: handlers must be idempotent per request id.
   */
  duplicateRequests(options: DuplicateOptions = {}): Fault {
    return this.#addRule('duplicateRequest', options);
  }

  /** The faults in force (not removed, not spent), oldest first. */
  faults(): Fault[] {
    return [...this.#rules].filter((r) => r.active);
  }

  /**
   * Cuts `address` off: new calls to it fail with UnavailableError (not delivered)
   * until `reconnect`; answers of calls already running there are lost (their
   * callers see their deadline), as in a network partition.
   */
  disconnect(address: string): void {
    parseAddress(address);
    this.#disconnected.add(address);
  }

  reconnect(address: string): void {
    parseAddress(address);
    this.#disconnected.delete(address);
  }

  isDisconnected(address: string): boolean {
    return this.#disconnected.has(address);
  }

  /** Removes every fault and reconnects every address. */
  clearFaults(): void {
    for (const rule of [...this.#rules]) rule.remove();
    this.#disconnected.clear();
  }

  /** The counters of calls to `address`, or of all calls on the network. A snapshot. */
  stats(address?: string): LinkStats {
    if (address === undefined) return { ...this.#total };
    parseAddress(address);
    return { ...(this.#stats.get(address) ?? emptyStats()) };
  }

  resetStats(): void {
    this.#stats.clear();
    this.#total = emptyStats();
  }

  #addRule(kind: FaultKind, options: FaultOptions | DelayOptions | DuplicateOptions): Fault {
    const rule = new FaultRule(kind, options, (r) => this.#rules.delete(r));
    this.#rules.add(rule);
    return rule;
  }

  #count(address: string, counter: Counter): void {
    let s = this.#stats.get(address);
    if (s === undefined) {
      s = emptyStats();
      this.#stats.set(address, s);
    }
    s[counter]++;
    this.#total[counter]++;
  }

  #register(name: string | undefined, endpoint: Endpoint): string {
    const chosen = name ?? this.#generateName();
    assertValidName(chosen);
    if (this.#servers.has(chosen)) {
      throw new AlreadyExistsError(`${addressOf(chosen)} is already in use on this local network; close that server first or pick another name`);
    }
    this.#servers.set(chosen, endpoint);
    return chosen;
  }

  #unregister(name: string, endpoint: Endpoint): void {
    if (this.#servers.get(name) === endpoint) this.#servers.delete(name);
  }

  /** A name never used before on this network, so a restarted node gets a fresh address unless it asks for one. */
  #generateName(): string {
    let name: string;
    do name = `node-${++this.#nextName}`;
    while (this.#servers.has(name));
    return name;
  }

  /** The first matching rule of `kind` that hits: drops end the leg; delays add up. */
  #leg(exchange: Exchange, drop: FaultKind, delay: FaultKind): 'drop' | number {
    let ms = 0;
    for (const rule of this.#rules) {
      if (rule.kind === drop && rule.tryHit(exchange.address, exchange.method, exchange.source, this.#random)) return 'drop';
    }
    for (const rule of this.#rules) {
      if (rule.kind === delay && rule.tryHit(exchange.address, exchange.method, exchange.source, this.#random)) ms += rule.delayMs(this.#random);
    }
    return ms;
  }

  /**
   * Runs `fn` after `ms` (on a later turn of the event loop at least), unless the
   * caller is done first: then `onCancel` runs instead, and no timer is left behind.
   */
  #after(exchange: Exchange, clock: Clock, ms: number, fn: () => void, onCancel: () => void): void {
    if (ms > 0) {
      const timer = clock.setTimeout(() => {
        untie();
        fn();
      }, ms);
      const untie = exchange.hold(() => {
        clock.clearTimeout(timer);
        onCancel();
      });
    } else {
      let cancelled = false;
      deferOn(clock, () => {
        if (cancelled) return;
        untie();
        fn();
      });
      const untie = exchange.hold(() => {
        cancelled = true;
        onCancel();
      });
    }
  }

  #send(exchange: Exchange): void {
    const address = exchange.address;
    this.#count(address, 'sent');
    const leg = this.#leg(exchange, 'dropRequest', 'delayRequest');
    if (leg === 'drop') {
      this.#count(address, 'droppedRequests');
      return;
    }
    if (leg > 0) this.#count(address, 'delayedRequests');
    // Each leg arrives on its receiver's clock: the request on the server's, the answer on the caller's.
    const serverClock = this.#servers.get(exchange.name)?.clock ?? this.#clock;
    this.#after(
      exchange,
      serverClock,
      leg,
      () => this.#deliver(exchange),
      () => this.#count(address, 'abandoned'),
    );
    for (const rule of this.#rules) {
      if (rule.kind === 'duplicateRequest' && rule.tryHit(address, exchange.method, exchange.source, this.#random)) {
        // The copy is on the wire on its own: the caller giving up does not recall it.
        const copy = new DuplicateExchange(exchange);
        const deliver = () => {
          // A copy that finds nobody listening is lost, not refused: the original arrived first
          // (its handler ran, or it was refused, or its caller gave up), so a refusal here would
          // only tell a caller whose handler ran that its call was not delivered.
          if (this.#disconnected.has(address) || !this.#servers.has(exchange.name)) return;
          this.#count(address, 'duplicatedRequests');
          this.#deliver(copy);
        };
        const ms = leg + rule.delayMs(this.#random);
        if (ms > 0) serverClock.setTimeout(deliver, ms);
        else deferOn(serverClock, deliver);
        break;
      }
    }
  }

  #deliver(exchange: Exchange): void {
    const address = exchange.address;
    const endpoint = this.#disconnected.has(address) ? undefined : this.#servers.get(exchange.name);
    if (endpoint === undefined) {
      this.#count(address, 'refused');
      const why = this.#disconnected.has(address) ? 'is disconnected' : 'has no server listening (never started, or closed or closing)';
      exchange.answer(errorAnswer(new UnavailableError(`${address} ${why}; the call to "${exchange.method}" was not delivered`)));
      return;
    }
    this.#count(address, endpoint.accept(exchange));
  }

  #reply(exchange: Exchange, answer: WireAnswer): void {
    const address = exchange.address;
    if (exchange.done) {
      this.#count(address, 'late');
      return;
    }
    if (this.#disconnected.has(address)) {
      this.#count(address, 'droppedResponses');
      return;
    }
    const leg = this.#leg(exchange, 'dropResponse', 'delayResponse');
    if (leg === 'drop') {
      this.#count(address, 'droppedResponses');
      return;
    }
    if (leg > 0) this.#count(address, 'delayedResponses');
    this.#after(
      exchange,
      exchange.clock,
      leg,
      () => this.#count(address, exchange.answer(answer) ? 'answered' : 'late'),
      () => this.#count(address, 'late'),
    );
  }
}

/**
 * A second delivery of a call: the same request, answering the same caller (the
 * first answer to arrive wins). It holds nothing of the caller's, so the caller
 * giving up does not recall it, as it cannot recall a packet on the wire.
 */
class DuplicateExchange implements Exchange {
  constructor(private readonly original: Exchange) {}
  get address(): string {
    return this.original.address;
  }
  get name(): string {
    return this.original.name;
  }
  get method(): string {
    return this.original.method;
  }
  get source(): string | undefined {
    return this.original.source;
  }
  get clock(): Clock {
    return this.original.clock;
  }
  get meta(): Exchange['meta'] {
    return this.original.meta;
  }
  get payload(): Uint8Array {
    return this.original.payload;
  }
  get done(): boolean {
    return this.original.done;
  }
  hold(_cancel: () => void): () => void {
    return () => undefined;
  }
  answer(answer: WireAnswer): boolean {
    return this.original.answer(answer);
  }
  onGiveUp(listener: Parameters<Exchange['onGiveUp']>[0]): void {
    this.original.onGiveUp(listener);
  }
}

/** The network's internals, for the transports on it (not part of the package's API). */
export interface Switchboard {
  /** Takes `name` (or a generated one) for `endpoint`; AlreadyExistsError when it is taken. Returns the name. */
  register(name: string | undefined, endpoint: Endpoint): string;
  unregister(name: string, endpoint: Endpoint): void;
  generateName(): string;
  /** Sends the request leg of a call. */
  send(exchange: Exchange): void;
  /** Sends the response leg of a call. */
  reply(exchange: Exchange, answer: WireAnswer): void;
  count(address: string, counter: Counter): void;
}

const boards = new WeakMap<LocalNetwork, Switchboard>();

export function switchboardOf(network: LocalNetwork): Switchboard {
  const board = boards.get(network);
  if (board === undefined) throw new InvalidArgumentError('network must be a LocalNetwork from @taskgraph/transport-local');
  return board;
}
