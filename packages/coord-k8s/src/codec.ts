/** Keys as ConfigMaps: the object written for a key, and the entry read back from one. */
import type { V1ConfigMap, V1OwnerReference } from '@kubernetes/client-node';
import { InternalError } from '@taskgraph/api';
import { ANNOTATION, keyLabels, keyObjectName, LABEL, VALUE_KEY } from './names.js';
import type { KubeObject } from './watch-stream.js';

/** What a key ConfigMap holds, as the backend reads it. */
export interface StoredKey {
  readonly key: string;
  readonly value: Uint8Array;
  /** The resourceVersion: the key's version. */
  readonly version: string;
  readonly uid: string;
  /** The version this one replaced (the chain a watcher checks), if any. */
  readonly prev: string | undefined;
  /** The id of the session the key is tied to, if any. */
  readonly session: string | undefined;
}

type ConfigMapLike = KubeObject & { readonly binaryData?: Readonly<Record<string, string>> };

/** Decodes a key ConfigMap; undefined when it carries no key annotation. */
export function decodeKey(obj: ConfigMapLike): StoredKey | undefined {
  const meta = obj.metadata;
  const key = meta?.annotations?.[ANNOTATION.key];
  if (key === undefined || meta === undefined) return undefined;
  const raw = obj.binaryData?.[VALUE_KEY] ?? '';
  return {
    key,
    value: new Uint8Array(Buffer.from(raw, 'base64')),
    version: meta.resourceVersion ?? '',
    uid: meta.uid ?? '',
    prev: meta.annotations?.[ANNOTATION.prev],
    session: meta.labels?.[LABEL.session],
  };
}

/**
 * Reads the ConfigMap found at `key`'s name: the key it holds must be `key`. Anything
 * else is two keys hashing to one name (or a foreign object there), and it is never
 * read, written or deleted as if it were this key.
 */
export function decodeKeyAt(obj: ConfigMapLike, key: string): StoredKey {
  const stored = decodeKey(obj);
  if (stored === undefined || stored.key !== key) {
    const holds = stored === undefined ? 'no TaskGraph key annotation' : `the key ${JSON.stringify(stored.key)}`;
    throw new InternalError(
      `ConfigMap ${obj.metadata?.name ?? '?'} should hold the key ${JSON.stringify(key)} but has ${holds}: a hash collision of key names, or a foreign object at that name; rename one of the keys or remove the object`,
      { details: { configMap: obj.metadata?.name ?? '', key, found: stored?.key ?? null } },
    );
  }
  return stored;
}

export interface SessionRef {
  readonly id: string;
  readonly leaseName: string;
  readonly leaseUid: string;
}

/** The ConfigMap of a new key (a create). */
export function newKeyObject(prefix: string, key: string, value: string, session: SessionRef | undefined): V1ConfigMap {
  const labels = keyLabels(prefix, key);
  let ownerReferences: V1OwnerReference[] | undefined;
  if (session !== undefined) {
    labels[LABEL.session] = session.id;
    // On a real cluster the garbage collector also deletes the key once its session's Lease is gone.
    ownerReferences = [{ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', name: session.leaseName, uid: session.leaseUid }];
  }
  const metadata: V1ConfigMap['metadata'] = { name: keyObjectName(prefix, key), labels, annotations: { [ANNOTATION.key]: key } };
  if (ownerReferences !== undefined) metadata.ownerReferences = ownerReferences;
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata, binaryData: { [VALUE_KEY]: value } };
}

/** The ConfigMap replacing `current` (an update): same labels and owners, the new value, the chain link. */
export function replacedKeyObject(current: V1ConfigMap, expect: string, value: string): V1ConfigMap {
  const meta = current.metadata ?? {};
  const metadata: V1ConfigMap['metadata'] = {
    name: meta.name ?? '',
    resourceVersion: expect,
    labels: { ...(meta.labels ?? {}) },
    annotations: { ...(meta.annotations ?? {}), [ANNOTATION.prev]: expect },
  };
  if (meta.ownerReferences !== undefined) metadata.ownerReferences = meta.ownerReferences;
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata, binaryData: { [VALUE_KEY]: value } };
}

/** Copies the bytes out now, as base64: later changes to the caller's buffer change nothing. */
export function encodeValue(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
}

/** UTF-8 byte order, the order list() returns keys in. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
