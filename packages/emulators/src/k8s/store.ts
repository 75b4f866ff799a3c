/**
 * The emulator's storage, standing in for etcd: one global revision counter across
 * every kind (so resourceVersions are unique and increasing cluster-wide, as etcd's
 * revision is), the current objects, and a bounded history of change events that
 * watches resume from and snapshots are rebuilt from. History older than the
 * retained window is "compacted": resuming from it answers 410 Expired.
 */
import type { K8sObject, ResourceDef } from './resources.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredObject {
  readonly def: ResourceDef;
  readonly namespace: string;
  readonly name: string;
  /** Decoded object; `metadata.resourceVersion` is `String(rv)`. */
  readonly obj: K8sObject;
  readonly rv: number;
}

export interface ChangeEvent {
  readonly rv: number;
  readonly type: EventType;
  readonly def: ResourceDef;
  readonly namespace: string;
  readonly name: string;
  /** The new state; for DELETED, the last state with the deletion's resourceVersion. */
  readonly object: K8sObject;
  /** The state before the change (MODIFIED and DELETED). */
  readonly prev?: K8sObject;
}

export interface StoreOptions {
  /** How many change events are kept for watch resumption (at least this many). */
  readonly retention: number;
  /** The first resourceVersion handed out is `initialRevision + 1`. */
  readonly initialRevision: number;
}

function collectionKey(def: ResourceDef, namespace: string): string {
  return `${def.resource}\u0000${namespace}`;
}

export class ObjectStore {
  private revision: number;
  private compacted: number;
  /** Objects by kind and namespace, then by name: a list reads one collection only. */
  private readonly collections = new Map<string, Map<string, StoredObject>>();
  private history: ChangeEvent[] = [];
  private readonly listeners = new Set<(e: ChangeEvent) => void>();

  constructor(private readonly options: StoreOptions) {
    this.revision = options.initialRevision;
    this.compacted = options.initialRevision;
  }

  /** The newest revision (what a list's metadata.resourceVersion reports). */
  get currentRevision(): number {
    return this.revision;
  }

  /** Events at or below this revision are gone: a watch must start at or after it. */
  get compactedRevision(): number {
    return this.compacted;
  }

  get(def: ResourceDef, namespace: string, name: string): StoredObject | undefined {
    return this.collections.get(collectionKey(def, namespace))?.get(name);
  }

  /** Current objects of one kind in one namespace, sorted by name (etcd key order). */
  listCurrent(def: ResourceDef, namespace: string): StoredObject[] {
    const out = [...(this.collections.get(collectionKey(def, namespace))?.values() ?? [])];
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * The objects of one kind in one namespace as they were at `revision`, rebuilt by
   * undoing the retained history; undefined when that revision is compacted.
   */
  listAt(def: ResourceDef, namespace: string, revision: number): StoredObject[] | undefined {
    if (revision < this.compacted) return undefined;
    if (revision >= this.revision) return this.listCurrent(def, namespace);
    const state = new Map<string, StoredObject>();
    for (const o of this.listCurrent(def, namespace)) state.set(o.name, o);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const e = this.history[i];
      if (e === undefined || e.rv <= revision) break;
      if (e.def !== def || e.namespace !== namespace) continue;
      if (e.type === 'ADDED' || e.prev === undefined) state.delete(e.name);
      else state.set(e.name, { def, namespace, name: e.name, obj: e.prev, rv: Number(e.prev.metadata.resourceVersion) });
    }
    return [...state.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Retained events after `revision`, oldest first; undefined when `revision` is compacted. */
  eventsAfter(revision: number): ChangeEvent[] | undefined {
    if (revision < this.compacted) return undefined;
    let lo = 0;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.history[mid]?.rv ?? 0) <= revision) lo = mid + 1;
      else hi = mid;
    }
    return this.history.slice(lo);
  }

  /** Stores a new object (the caller checked it does not exist). */
  insert(def: ResourceDef, namespace: string, name: string, obj: K8sObject): StoredObject {
    const rv = ++this.revision;
    obj.metadata.resourceVersion = String(rv);
    const stored: StoredObject = { def, namespace, name, obj, rv };
    this.collection(def, namespace).set(name, stored);
    this.record({ rv, type: 'ADDED', def, namespace, name, object: obj });
    return stored;
  }

  /** Replaces an existing object with a new revision. */
  replace(previous: StoredObject, obj: K8sObject): StoredObject {
    const rv = ++this.revision;
    obj.metadata.resourceVersion = String(rv);
    const stored: StoredObject = { def: previous.def, namespace: previous.namespace, name: previous.name, obj, rv };
    this.collection(previous.def, previous.namespace).set(previous.name, stored);
    this.record({ rv, type: 'MODIFIED', def: previous.def, namespace: previous.namespace, name: previous.name, object: obj, prev: previous.obj });
    return stored;
  }

  /** Removes an object; its DELETED event carries the last state at the deletion's revision. */
  remove(previous: StoredObject): number {
    const rv = ++this.revision;
    this.collections.get(collectionKey(previous.def, previous.namespace))?.delete(previous.name);
    const last: K8sObject = { ...previous.obj, metadata: { ...previous.obj.metadata, resourceVersion: String(rv) } };
    this.record({ rv, type: 'DELETED', def: previous.def, namespace: previous.namespace, name: previous.name, object: last, prev: previous.obj });
    return rv;
  }

  /** Forgets all history up to now: resuming from any earlier revision answers 410. */
  compact(): void {
    this.history = [];
    this.compacted = this.revision;
  }

  private collection(def: ResourceDef, namespace: string): Map<string, StoredObject> {
    const key = collectionKey(def, namespace);
    let c = this.collections.get(key);
    if (c === undefined) {
      c = new Map();
      this.collections.set(key, c);
    }
    return c;
  }

  subscribe(listener: (e: ChangeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private record(e: ChangeEvent): void {
    this.history.push(e);
    const limit = this.options.retention;
    // Trimmed in chunks so that each write stays O(1) amortised.
    if (this.history.length > limit + Math.max(1, Math.floor(limit / 10))) {
      const drop = this.history.length - limit;
      const last = this.history[drop - 1];
      if (last !== undefined) this.compacted = last.rv;
      this.history = this.history.slice(drop);
    }
    for (const l of [...this.listeners]) l(e);
  }
}
