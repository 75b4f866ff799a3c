/**
 * Injected failures, in the manner of Vitess's memorytopo: fail a named operation
 * on keys matching a pattern, a number of times or until cleared. Each client has a
 * set (matched against the keys it was called with) and so does the store (matched
 * against stored keys, namespace included), so a test can break one node's view
 * or everybody's.
 */
import { InvalidArgumentError, UnavailableError } from '@taskgraph/api';

export const MEMORY_OPERATIONS = [
  'get',
  'list',
  'create',
  'update',
  'delete',
  'deletePrefix',
  'watch',
  'openSession',
  'keepalive',
  'closeSession',
  'acquire',
  'tryAcquire',
  'release',
  'holder',
] as const;

/**
 * The operations a fault can target. What each matches its pattern against: the
 * key (get, create, update, delete), the prefix (list, deletePrefix, watch), the
 * lock name (acquire, tryAcquire, release, holder), the session id (keepalive,
 * closeSession), and the empty string (openSession).
 */
export type MemoryOperation = (typeof MEMORY_OPERATIONS)[number];

export interface FaultSpec {
  /** The operation, several, or `'*'` for every one. */
  readonly op: MemoryOperation | readonly MemoryOperation[] | '*';
  /**
   * Which calls: a glob (`*` matches within one `/` segment, `**` across segments,
   * `?` one character) or a RegExp. Default: every call of the operation.
   */
  readonly key?: string | RegExp;
  /** What the call rejects with. Default: UnavailableError. A function builds a fresh error per call. */
  readonly error?: Error | (() => Error);
  /** How many calls fail before the fault clears itself. Default: until cleared. */
  readonly times?: number;
  /**
   * True: the call is applied first and fails after, so its caller cannot tell whether
   * it took effect (a connection lost after the server committed: an unknown outcome).
   * Only the operations that change the store can be hit so: create, update, delete,
   * deletePrefix, acquire (when the lock is granted: it stays held), tryAcquire,
   * release. Default false: the call fails without effect.
   */
  readonly applied?: boolean;
}

/** A fault in force. */
export interface Fault {
  /** How many calls it has failed so far. */
  readonly hits: number;
  /** True once cleared or used up. */
  readonly cleared: boolean;
  clear(): void;
}

const OPERATION_SET: ReadonlySet<string> = new Set(MEMORY_OPERATIONS);
const APPLIED_OPERATIONS: ReadonlySet<MemoryOperation> = new Set(['create', 'update', 'delete', 'deletePrefix', 'acquire', 'tryAcquire', 'release']);

/** Compiles a glob to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        out += '.*';
        i++;
      } else {
        out += '[^/]*';
      }
    } else if (c === '?') {
      out += '[^/]';
    } else {
      out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${out}$`, 'u');
}

class Rule implements Fault {
  hits = 0;
  cleared = false;
  readonly #ops: ReadonlySet<string> | undefined;
  readonly #pattern: RegExp | undefined;
  readonly #error: Error | (() => Error) | undefined;
  readonly #times: number | undefined;
  readonly #owner: FaultSet;
  readonly applied: boolean;

  constructor(owner: FaultSet, spec: FaultSpec) {
    this.#owner = owner;
    const ops = spec.op === '*' ? undefined : typeof spec.op === 'string' ? [spec.op] : spec.op;
    if (ops) {
      if (ops.length === 0) throw new InvalidArgumentError('fault op list must not be empty');
      for (const op of ops) {
        if (!OPERATION_SET.has(op)) {
          throw new InvalidArgumentError(`unknown fault op ${JSON.stringify(op)}; use '*' or one of ${MEMORY_OPERATIONS.join(', ')}`);
        }
      }
    }
    this.#ops = ops ? new Set(ops) : undefined;
    if (spec.key !== undefined && typeof spec.key !== 'string' && !(spec.key instanceof RegExp)) {
      throw new InvalidArgumentError('fault key must be a glob string or a RegExp');
    }
    this.#pattern = typeof spec.key === 'string' ? globToRegExp(spec.key) : spec.key;
    if (spec.times !== undefined && (!Number.isInteger(spec.times) || spec.times < 1)) {
      throw new InvalidArgumentError(`fault times must be a positive integer, got ${String(spec.times)}`);
    }
    this.#times = spec.times;
    this.#error = spec.error;
    if (spec.applied !== undefined && typeof spec.applied !== 'boolean') throw new InvalidArgumentError('fault applied must be a boolean');
    this.applied = spec.applied ?? false;
    // With '*', an applied fault hits the operations that change the store and no others.
    const cannot = this.applied ? ops?.find((op) => !APPLIED_OPERATIONS.has(op)) : undefined;
    if (cannot !== undefined) {
      throw new InvalidArgumentError(`a fault with applied: true cannot hit ${cannot}; only ${[...APPLIED_OPERATIONS].join(', ')} change the store`);
    }
  }

  matches(op: MemoryOperation, key: string, applied: boolean): boolean {
    if (this.applied !== applied || (applied && !APPLIED_OPERATIONS.has(op))) return false;
    if (this.#ops && !this.#ops.has(op)) return false;
    if (!this.#pattern) return true;
    // A global or sticky RegExp carries lastIndex between tests; reset so every call is judged alike.
    this.#pattern.lastIndex = 0;
    return this.#pattern.test(key);
  }

  hit(op: MemoryOperation, key: string): Error {
    this.hits++;
    if (this.#times !== undefined && this.hits >= this.#times) this.clear();
    if (typeof this.#error === 'function') return this.#error();
    return this.#error ?? new UnavailableError(`injected fault: ${op} ${JSON.stringify(key)}`);
  }

  clear(): void {
    if (this.cleared) return;
    this.cleared = true;
    this.#owner.remove(this);
  }
}

export class FaultSet {
  readonly #rules: Rule[] = [];

  /** Adds a fault; it is checked after the ones added before it. */
  add(spec: FaultSpec): Fault {
    const rule = new Rule(this, spec);
    this.#rules.push(rule);
    return rule;
  }

  /** Clears every fault in this set. */
  clear(): void {
    for (const rule of [...this.#rules]) rule.clear();
  }

  /** How many faults are in force. */
  get size(): number {
    return this.#rules.length;
  }

  /** Throws the error of the first fault matching this call, if any (before the call is applied). */
  check(op: MemoryOperation, key: string): void {
    const rule = this.#rules.find((r) => r.matches(op, key, false));
    if (rule) throw rule.hit(op, key);
  }

  /** Throws the error of the first `applied: true` fault matching this call, which has taken effect. */
  checkApplied(op: MemoryOperation, key: string): void {
    const rule = this.#rules.find((r) => r.matches(op, key, true));
    if (rule) throw rule.hit(op, key);
  }

  /** @internal */
  remove(rule: Rule): void {
    const i = this.#rules.indexOf(rule);
    if (i >= 0) this.#rules.splice(i, 1);
  }
}
