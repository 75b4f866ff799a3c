/**
 * Where things live in etcd. A coordinator owns `<namespace>/`: keys are stored
 * as `<namespace>/<key>`, and locks under the reserved `<namespace>/__locks/`,
 * which no key may use, and which list, watch and deletePrefix step around so
 * that locks never show up among keys.
 *
 * A lock's waiters are `<namespace>/__locks/<name>//<lease id in hex>`. The `//`
 * ends the name: a valid name has no empty segment, so the waiters of lock `a`
 * (prefix `__locks/a//`) never include those of lock `a/b` (`__locks/a/b//`).
 */
import { InvalidArgumentError } from '@taskgraph/api';

export const LOCKS_SEGMENT = '__locks';

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  // All 0xff: to the end of the keyspace.
  return Buffer.from([0]);
}

export interface KeyRange {
  readonly start: Buffer;
  readonly end: Buffer;
}

export class Keyspace {
  readonly namespace: string;
  readonly #root: Buffer;
  readonly #locks: Buffer;
  readonly #locksEnd: Buffer;

  constructor(namespace: string) {
    this.namespace = namespace;
    this.#root = Buffer.from(`${namespace}/`);
    this.#locks = Buffer.from(`${namespace}/${LOCKS_SEGMENT}/`);
    this.#locksEnd = prefixEnd(this.#locks);
  }

  /** The stored form of a key; rejects keys under the reserved lock prefix. */
  key(key: string): Buffer {
    if (key === LOCKS_SEGMENT || key.startsWith(`${LOCKS_SEGMENT}/`)) {
      throw new InvalidArgumentError(`key ${JSON.stringify(key)} is reserved: "${LOCKS_SEGMENT}/" holds the etcd coordinator's locks`);
    }
    return Buffer.from(`${this.namespace}/${key}`);
  }

  /** A stored key back as the caller's key. */
  userKey(stored: Buffer): string {
    return stored.subarray(this.#root.length).toString('utf8');
  }

  /** The stored range of a prefix, and whether the lock subtree lies inside it. */
  prefix(prefix: string): KeyRange & { readonly coversLocks: boolean } {
    if (prefix.startsWith(`${LOCKS_SEGMENT}/`)) {
      throw new InvalidArgumentError(`prefix ${JSON.stringify(prefix)} is reserved: "${LOCKS_SEGMENT}/" holds the etcd coordinator's locks`);
    }
    const start = Buffer.from(`${this.namespace}/${prefix}`);
    return { start, end: prefixEnd(start), coversLocks: `${LOCKS_SEGMENT}/`.startsWith(prefix) };
  }

  /** The lock subtree, for stepping around it. */
  get locks(): KeyRange {
    return { start: this.#locks, end: this.#locksEnd };
  }

  isLockKey(stored: Buffer): boolean {
    return stored.length >= this.#locks.length && stored.subarray(0, this.#locks.length).equals(this.#locks);
  }

  /** Every waiter of lock `name`. */
  lockRange(name: string): KeyRange {
    const start = Buffer.from(`${this.namespace}/${LOCKS_SEGMENT}/${name}//`);
    return { start, end: prefixEnd(start) };
  }

  /** The waiter key of `leaseId` (decimal) for lock `name`. */
  lockKey(name: string, leaseId: string): Buffer {
    return Buffer.from(`${this.namespace}/${LOCKS_SEGMENT}/${name}//${BigInt(leaseId).toString(16)}`);
  }
}
