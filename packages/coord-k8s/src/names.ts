/**
 * How keys, sessions and locks map onto Kubernetes object names, labels and
 * annotations. Object names must be DNS-1123 subdomains and label values at most 63
 * safe characters, while TaskGraph keys are arbitrary UTF-8: so names and labels
 * carry hashes, and the exact key rides in an annotation (the truth every read
 * checks, which is how a hash collision is caught).
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '@taskgraph/api';

/** Label and annotation keys, all under one domain. */
export const LABEL = {
  /** The store (the coordinator's prefix): every object of one store carries it. */
  store: 'taskgraph.io/store',
  /** `key`, `session` or `lock`. */
  kind: 'taskgraph.io/kind',
  /** On an ephemeral key: the id of its session. */
  session: 'taskgraph.io/session',
  /** On a lock Lease: the id of the holding session. */
  holder: 'taskgraph.io/holder',
  /** On a session Lease: `true` when its client is a janitor (removes what dead sessions left). */
  janitor: 'taskgraph.io/janitor',
} as const;

/** The label naming the hash of a key's first `depth` path segments (`taskgraph.io/p1` ...). */
export function pathLabel(depth: number): string {
  return `taskgraph.io/p${depth}`;
}

export const ANNOTATION = {
  /** The exact key of a key ConfigMap. */
  key: 'taskgraph.io/key',
  /**
   * The resourceVersion the writer replaced (absent after a create): a per-key chain
   * that lets a watcher notice a change it never received.
   */
  prev: 'taskgraph.io/prev-version',
  /** The exact name of a lock Lease. */
  lock: 'taskgraph.io/lock',
  /** The holder's owner string (holder() reports it). */
  owner: 'taskgraph.io/owner',
  /** The lock's waiting queue: a JSON array of { s: session id, o: owner }. */
  queue: 'taskgraph.io/queue',
} as const;

/** The ConfigMap data key holding the value (in binaryData). */
export const VALUE_KEY = 'value';

/**
 * Ancestor path segments get a label each, up to this depth: a list or watch of a
 * prefix that ends on a segment boundary selects on the server, not only in the client.
 */
export const MAX_LABELLED_DEPTH = 8;

const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAX_PREFIX_LENGTH = 40;

/** Checks the store prefix: it is part of object names and a label value. */
export function assertValidStorePrefix(prefix: unknown): asserts prefix is string {
  if (typeof prefix !== 'string' || !PREFIX.test(prefix) || prefix.length > MAX_PREFIX_LENGTH) {
    throw new InvalidArgumentError(
      `store prefix ${JSON.stringify(prefix)} is invalid: use 1 to ${MAX_PREFIX_LENGTH} lower-case letters, digits and "-", starting and ending with a letter or digit (it becomes part of object names and a label value)`,
    );
  }
}

function hash(text: string, hexChars: number): string {
  return createHash('sha256').update(text, 'utf8').digest('hex').slice(0, hexChars);
}

/** The ConfigMap holding `key`: `<prefix>-k-<160-bit hash of prefix and key>`. */
export function keyObjectName(prefix: string, key: string): string {
  return `${prefix}-k-${hash(`${prefix}\u0000${key}`, 40)}`;
}

/** The Lease of a session. */
export function sessionObjectName(prefix: string, sessionId: string): string {
  return `${prefix}-s-${sessionId}`;
}

/** The Lease of a lock (locks live apart from keys: another kind, another name). */
export function lockObjectName(prefix: string, name: string): string {
  return `${prefix}-l-${hash(`${prefix}\u0000${name}`, 40)}`;
}

/** The label value for a path of segments (a hash: segments may hold any character). */
export function pathLabelValue(prefix: string, segments: string): string {
  return hash(`${prefix}\u0000${segments}`, 32);
}

/** The labels of a key: store, kind, and one per ancestor path (up to MAX_LABELLED_DEPTH). */
export function keyLabels(prefix: string, key: string): Record<string, string> {
  const labels: Record<string, string> = { [LABEL.store]: prefix, [LABEL.kind]: 'key' };
  const segments = key.split('/');
  for (let depth = 1; depth < segments.length && depth <= MAX_LABELLED_DEPTH; depth++) {
    labels[pathLabel(depth)] = pathLabelValue(prefix, segments.slice(0, depth).join('/'));
  }
  return labels;
}

/**
 * The label selector for the keys under `prefix`. Every complete segment of the prefix
 * narrows it on the server (`a/b/` and `a/b/c` both select on `a/b`); the client then
 * checks the exact prefix against each key's annotation.
 */
export function keySelector(prefix: string, keyPrefix: string): string {
  const parts = [`${LABEL.store}=${prefix}`, `${LABEL.kind}=key`];
  const cut = keyPrefix.lastIndexOf('/');
  if (cut > 0) {
    const complete = keyPrefix.slice(0, cut);
    const depth = complete.split('/').length;
    if (depth <= MAX_LABELLED_DEPTH) parts.push(`${pathLabel(depth)}=${pathLabelValue(prefix, complete)}`);
  }
  return parts.join(',');
}

export function kindSelector(prefix: string, kind: 'session' | 'lock'): string {
  return `${LABEL.store}=${prefix},${LABEL.kind}=${kind}`;
}
