// Shared bits of the local transport's own tests.
import type { RequestMeta } from '@taskgraph/api';
import { ManualClock } from '@taskgraph/testkit';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import type { LocalNetworkOptions, LocalTransportOptions } from '@taskgraph/transport-local';

let next = 0;

export function meta(overrides: Partial<RequestMeta> = {}): RequestMeta {
  next++;
  return { job: 'job', from: 0, to: 1, epoch: 1, token: '7', requestId: `r${next}`, ...overrides };
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
export const untext = (b: Uint8Array): string => new TextDecoder().decode(b);

/** A promise's outcome, readable synchronously once it settles. */
export interface Tracked<T> {
  readonly state: 'pending' | 'resolved' | 'rejected';
  readonly value: T | undefined;
  readonly error: unknown;
}

export function track<T>(promise: Promise<T>): Tracked<T> {
  const t: { state: Tracked<T>['state']; value: T | undefined; error: unknown } = { state: 'pending', value: undefined, error: undefined };
  void promise.then(
    (value) => {
      t.state = 'resolved';
      t.value = value;
    },
    (error: unknown) => {
      t.state = 'rejected';
      t.error = error;
    },
  );
  return t;
}

/** Lets pending immediates (the network's hops) and promise jobs run. */
export async function hops(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

export interface World {
  readonly clock: ManualClock;
  readonly network: LocalNetwork;
  node(options?: LocalTransportOptions): LocalTransport;
  close(): Promise<void>;
}

/** A network and transports on one manual clock, so delays and deadlines move only when a test advances it. */
export function world(options: LocalNetworkOptions = {}): World {
  const clock = new ManualClock();
  const network = new LocalNetwork({ clock, ...options });
  const nodes: LocalTransport[] = [];
  return {
    clock,
    network,
    node(opts = {}) {
      const t = new LocalTransport({ network, clock, ...opts });
      nodes.push(t);
      return t;
    },
    async close() {
      await Promise.all(nodes.splice(0).map((t) => t.close()));
    },
  };
}

/** A random() that returns `values` in turn, over and over. */
export function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] ?? 0;
}
