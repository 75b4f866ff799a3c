/**
 * Fault rules of a LocalNetwork: which calls they hit (address, method), how often
 * (probability, count), and what they do (drop or delay one leg of the call).
 */
import { InvalidArgumentError, assertValidMethodName } from '@taskgraph/api';
import { parseAddress } from './address.js';

export type FaultKind = 'dropRequest' | 'dropResponse' | 'delayRequest' | 'delayResponse' | 'duplicateRequest';

export interface FaultOptions {
  /** Only calls to this address (`local://<name>`); default: every address on the network. */
  readonly address?: string;
  /** Only calls of this method; default: every method. */
  readonly method?: string;
  /**
   * Only calls made by the transport named so (`local://<name>`, the `name` the
   * caller's LocalTransport was created with); default: every caller. With `address`
   * this cuts one direction of one link: a partition between two nodes.
   */
  readonly from?: string;
  /** The chance, from 0 to 1, that a matching call is hit (default 1). */
  readonly probability?: number;
  /** Hit at most this many calls, then the fault is spent (default: no limit). */
  readonly count?: number;
}

export interface DelayOptions extends FaultOptions {
  /** A fixed delay, or a `[min, max]` range drawn uniformly per hit, in ms. */
  readonly ms: number | readonly [min: number, max: number];
}

export interface DuplicateOptions extends FaultOptions {
  /** How long after the original the copy arrives: fixed or a `[min, max]` range (default 0). */
  readonly ms?: number | readonly [min: number, max: number];
}

/** A fault in force on a network. */
export interface Fault {
  readonly kind: FaultKind;
  readonly address: string | undefined;
  readonly method: string | undefined;
  readonly from: string | undefined;
  /** How many calls (legs) it has hit so far. */
  readonly hits: number;
  /** False once removed or spent (its count reached). */
  readonly active: boolean;
  /** Takes the fault out of force; further calls are not affected. Idempotent. */
  remove(): void;
}

export class FaultRule implements Fault {
  readonly kind: FaultKind;
  readonly address: string | undefined;
  readonly method: string | undefined;
  readonly from: string | undefined;
  readonly #probability: number;
  readonly #count: number;
  readonly #ms: readonly [number, number];
  readonly #onRemove: (rule: FaultRule) => void;
  #hits = 0;
  #removed = false;

  constructor(kind: FaultKind, options: FaultOptions | DelayOptions | DuplicateOptions, onRemove: (rule: FaultRule) => void) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(`${kind} fault options must be an object`);
    }
    this.kind = kind;
    if (options.address !== undefined) parseAddress(options.address);
    this.address = options.address;
    if (options.method !== undefined) assertValidMethodName(options.method);
    this.method = options.method;
    if (options.from !== undefined) parseAddress(options.from);
    this.from = options.from;
    const p = options.probability ?? 1;
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
      throw new InvalidArgumentError(`fault probability must be a number from 0 to 1, got ${String(p)}`);
    }
    this.#probability = p;
    const count = options.count ?? Infinity;
    if (typeof count !== 'number' || !(count === Infinity || (Number.isSafeInteger(count) && count >= 1))) {
      throw new InvalidArgumentError(`fault count must be a positive integer, got ${String(count)}`);
    }
    this.#count = count;
    this.#ms =
      kind === 'delayRequest' || kind === 'delayResponse'
        ? delayRange((options as DelayOptions).ms)
        : kind === 'duplicateRequest'
          ? delayRange((options as DuplicateOptions).ms ?? 0)
          : [0, 0];
    this.#onRemove = onRemove;
  }

  get hits(): number {
    return this.#hits;
  }

  get active(): boolean {
    return !this.#removed && this.#hits < this.#count;
  }

  remove(): void {
    if (this.#removed) return;
    this.#removed = true;
    this.#onRemove(this);
  }

  /** Decides whether this rule hits a call, counting the hit. */
  tryHit(address: string, method: string, source: string | undefined, random: () => number): boolean {
    if (!this.active) return false;
    if (this.address !== undefined && this.address !== address) return false;
    if (this.from !== undefined && this.from !== source) return false;
    if (this.method !== undefined && this.method !== method) return false;
    if (this.#probability < 1 && !(random() < this.#probability)) return false;
    this.#hits++;
    return true;
  }

  /** The delay of one hit, in ms. */
  delayMs(random: () => number): number {
    const [min, max] = this.#ms;
    return min === max ? min : min + random() * (max - min);
  }
}

function delayRange(ms: unknown): readonly [number, number] {
  const ok = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  if (ok(ms)) return [ms, ms];
  if (Array.isArray(ms) && ms.length === 2 && ok(ms[0]) && ok(ms[1]) && ms[0] <= ms[1]) return [ms[0], ms[1]];
  throw new InvalidArgumentError(
    `delay ms must be a non-negative number of milliseconds or a [min, max] range with 0 <= min <= max, got ${JSON.stringify(ms)}`,
  );
}
