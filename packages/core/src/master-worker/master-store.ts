/**
 * The master's durable key/value state, under `<job>/mw/store/<key>` in the
 * coordinator, for a master that fails over cold. Each value carries the fencing
 * token of the master incarnation that wrote it. A write is made only while this
 * node holds the master (checked right before each write attempt, so a node paused
 * past its lease does not write once it runs again), and never over a value of a
 * newer incarnation (LeaseLostError): a deposed master cannot undo its successor's
 * work. What stays open, as with every lease: a write already sent when the pause
 * began may land after the successor took over.
 */
import { DecodeFailedError, InvalidArgumentError, LeaseLostError, randomOf, TaskGraphError } from '@taskgraph/api';
import type { Coordinator, Entry, MasterStore } from '@taskgraph/api';
import type { RuntimeInternals } from '../framework.js';
import { casUpdate, isOutage, retryStore } from '../store-ops.js';
import type { Logger } from '@taskgraph/api';
import { Backoff, sleep } from '@taskgraph/backend-kit';

const KEY = /^[A-Za-z0-9_.\-/]{1,128}$/;
const enc = new TextEncoder();
const dec = new TextDecoder();

export const masterStorePrefix = (job: string): string => `${job}/mw/store/`;

/** `[u8 token length][token, decimal ASCII][value]`. */
function encodeValue(token: bigint, value: Uint8Array): Uint8Array {
  const t = enc.encode(token.toString());
  const out = new Uint8Array(1 + t.length + value.length);
  out[0] = t.length;
  out.set(t, 1);
  out.set(value, 1 + t.length);
  return out;
}

function decodeValue(key: string, bytes: Uint8Array): { token: bigint; value: Uint8Array } {
  const n = bytes[0] ?? 0;
  const text = dec.decode(bytes.subarray(1, 1 + n));
  if (n === 0 || bytes.length < 1 + n || !/^\d+$/.test(text)) throw new DecodeFailedError(`corrupt value at ${key}: no writer token`, { details: { key } });
  return { token: BigInt(text), value: bytes.subarray(1 + n) };
}

export class FencedMasterStore implements MasterStore {
  readonly maxValueBytes: number;
  private readonly prefix: string;

  constructor(
    private readonly rt: RuntimeInternals,
    private readonly logger: () => Logger,
  ) {
    this.prefix = masterStorePrefix(rt.job);
    // Room for the writer's token (at most 20 digits and its length byte).
    this.maxValueBytes = rt.coordinator.caps.maxValueBytes - 21;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const k = this.key(key);
    const e = await this.read(`read ${key}`, () => this.coordinator.get(k));
    return e ? decodeValue(k, e.value).value : undefined;
  }

  async list(prefix = ''): Promise<ReadonlyMap<string, Uint8Array>> {
    // A prefix is a key, or a key and a trailing "/".
    if (prefix !== '') this.key(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
    const { entries } = await this.read(`list ${prefix || '(all)'}`, () => this.coordinator.list(this.prefix + prefix));
    const out = new Map<string, Uint8Array>();
    for (const e of entries) out.set(e.key.slice(this.prefix.length), decodeValue(e.key, e.value).value);
    return out;
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    const k = this.key(key);
    if (!(value instanceof Uint8Array)) throw new InvalidArgumentError('MasterStore.put: the value must be a Uint8Array');
    if (value.length > this.maxValueBytes) throw new InvalidArgumentError(`MasterStore.put: ${value.length} bytes; the limit is ${this.maxValueBytes}`);
    const token = this.token('put');
    await casUpdate(
      this.coordinator,
      k,
      (current) => {
        this.refuseNewer(k, current, token);
        return encodeValue(token, value);
      },
      { clock: this.rt.clock, signal: this.rt.primarySignal(), beforeWrite: () => this.rt.assertOwner('MasterStore.put') },
    );
  }

  async delete(key: string): Promise<void> {
    const k = this.key(key);
    const token = this.token('delete');
    const backoff = new Backoff(50, 2000, randomOf(this.rt.clock));
    for (;;) {
      const current = await this.read(`read ${key}`, () => this.coordinator.get(k));
      if (!current) return;
      this.refuseNewer(k, current, token);
      this.rt.assertOwner('MasterStore.delete');
      try {
        await this.coordinator.delete(k, current.version);
        return;
      } catch (err) {
        // Lost a race, or the answer was lost: read again and decide on what is there.
        if (TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND')) continue;
        if (!isOutage(err)) throw err;
        await sleep(this.rt.clock, backoff.next(), this.rt.primarySignal());
      }
    }
  }

  private get coordinator(): Coordinator {
    return this.rt.coordinator;
  }

  private key(key: string): string {
    if (typeof key !== 'string' || !KEY.test(key) || key.split('/').some((part) => part === '' || part === '.' || part === '..')) {
      throw new InvalidArgumentError(`MasterStore: key ${JSON.stringify(key)} is invalid: use 1-128 letters, digits, "_", "-", "." and "/" (no empty, "." or ".." parts)`);
    }
    return this.prefix + key;
  }

  private token(what: string): bigint {
    this.rt.assertOwner(`MasterStore.${what}`);
    const token = this.rt.token();
    if (token === undefined) throw new LeaseLostError(`MasterStore.${what}: this node is not the master's primary`);
    return token;
  }

  private refuseNewer(key: string, current: Entry | undefined, token: bigint): void {
    if (!current) return;
    const writer = decodeValue(key, current.value).token;
    if (writer > token) throw new LeaseLostError(`MasterStore: ${key.slice(this.prefix.length)} was written by a newer master (token ${writer}; this one has ${token})`);
  }

  private read<T>(what: string, op: () => Promise<T>): Promise<T> {
    return retryStore(op, { clock: this.rt.clock, signal: this.rt.primarySignal(), logger: this.logger(), what: `master store: ${what}` });
  }
}
