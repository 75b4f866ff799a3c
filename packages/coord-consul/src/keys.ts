/**
 * Where the contract's keys and locks live in Consul's KV store.
 *
 * Consul 1.21.5 and later refuse `/v1/kv` keys with characters outside
 * `A-Z a-z 0-9 , - _ . /`, keys with `../`, and keys that end like a file name
 * (`.json`, `.js`, ...). The contract allows any printable key, so every byte
 * outside `A-Z a-z 0-9 _ -` (and the `/` separator) is written as `,XX` (its hex
 * value). The escaping works byte by byte, so a prefix of a key escapes to a
 * prefix of the escaped key: prefix reads and watches stay prefix reads.
 *
 * Layout under the namespace:
 *   <ns>/kv/<key>               the contract's keys
 *   <ns>/locks/<name>           a lock: held with `acquire` by the holder's session
 *   <ns>/queues/<name>/<ticket> waiters of a lock, first come first served
 * The three subtrees keep keys and locks apart whatever their names are.
 */
import { DecodeFailedError } from '@taskgraph/api';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const HEX = '0123456789ABCDEF';

function plain(byte: number): boolean {
  return (
    (byte >= 0x30 && byte <= 0x39) || // 0-9
    (byte >= 0x41 && byte <= 0x5a) || // A-Z
    (byte >= 0x61 && byte <= 0x7a) || // a-z
    byte === 0x5f || // _
    byte === 0x2d || // -
    byte === 0x2f // /
  );
}

/** Escapes a key, prefix or name into Consul's safe alphabet. */
export function escapeKey(key: string): string {
  let out = '';
  for (const byte of encoder.encode(key)) {
    out += plain(byte) ? String.fromCharCode(byte) : `,${HEX[byte >> 4]}${HEX[byte & 15]}`;
  }
  return out;
}

/** Reverses {@link escapeKey}; throws DecodeFailedError for text it could not have produced. */
export function unescapeKey(escaped: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < escaped.length; i++) {
    const c = escaped.charCodeAt(i);
    if (c === 0x2c) {
      const hex = escaped.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) throw new DecodeFailedError(`Consul key ${JSON.stringify(escaped)} has a bad escape at ${i}`);
      const byte = parseInt(hex, 16);
      if (plain(byte)) throw new DecodeFailedError(`Consul key ${JSON.stringify(escaped)} escapes a plain character at ${i}`);
      bytes.push(byte);
      i += 2;
    } else if (c < 0x80 && plain(c)) {
      bytes.push(c);
    } else {
      throw new DecodeFailedError(`Consul key ${JSON.stringify(escaped)} has an unescaped character at ${i}`);
    }
  }
  try {
    return decoder.decode(new Uint8Array(bytes));
  } catch (err) {
    throw new DecodeFailedError(`Consul key ${JSON.stringify(escaped)} is not UTF-8 once unescaped`, { cause: err });
  }
}

export class Keyspace {
  /** `<escaped namespace>/` */
  readonly root: string;
  readonly kvRoot: string;
  readonly lockRoot: string;
  readonly queueRoot: string;

  constructor(namespace: string) {
    this.root = `${escapeKey(namespace)}/`;
    this.kvRoot = `${this.root}kv/`;
    this.lockRoot = `${this.root}locks/`;
    this.queueRoot = `${this.root}queues/`;
  }

  key(key: string): string {
    return this.kvRoot + escapeKey(key);
  }

  /** Consul's key for a contract prefix (a string prefix, like the contract's). */
  prefix(prefix: string): string {
    return this.kvRoot + escapeKey(prefix);
  }

  /** The contract key of a Consul key under the kv subtree. */
  contractKey(consulKey: string): string {
    if (!consulKey.startsWith(this.kvRoot)) throw new DecodeFailedError(`Consul key ${JSON.stringify(consulKey)} is outside ${this.kvRoot}`);
    return unescapeKey(consulKey.slice(this.kvRoot.length));
  }

  lock(name: string): string {
    return this.lockRoot + escapeKey(name);
  }

  /** The folder of a lock's waiters; its direct children are tickets (a longer lock name's are one level deeper). */
  queue(name: string): string {
    return `${this.queueRoot}${escapeKey(name)}/`;
  }
}

/** A URL path for a Consul key: the escaped alphabet needs no more escaping but `,`, which is legal in paths. */
export function kvPath(consulKey: string): string {
  return `/v1/kv/${consulKey}`;
}
