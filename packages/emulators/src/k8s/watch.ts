/**
 * One watch stream: newline-delimited JSON events over a chunked HTTP response, as
 * the API server's watch cache serves them. Starting points follow the real rules:
 * no resourceVersion or "0" first replays the current state as synthetic ADDED
 * events; a numeric resourceVersion delivers every change after it, or one ERROR
 * event with a 410 Expired Status when that revision is no longer retained.
 * Bookmarks go out roughly every `bookmarkIntervalMs` and 2 s before the timeout.
 */
import type { ServerResponse } from 'node:http';
import { toJson, type Json, type JsonObject, type K8sObject, type ResourceDef } from './resources.js';
import type { FieldSelector, LabelSelector } from './selectors.js';
import { failure, type StatusObject } from './status.js';
import type { ChangeEvent, EventType, ObjectStore } from './store.js';

export interface WatchFaultHooks {
  /** Decides what happens to one event line: written, omitted, garbled, or cut with the connection. */
  lineFate(): 'write' | 'omit' | 'garble' | 'truncate';
}

export interface WatchStart {
  /** `undefined`: replay the current state first (resourceVersion unset or "0"). */
  readonly after: number | undefined;
  /** sendInitialEvents=true: replay the current state, then a bookmark marking its end. */
  readonly initialEvents: boolean;
}

export interface WatchStreamOptions {
  readonly def: ResourceDef;
  readonly namespace: string;
  readonly labels: LabelSelector;
  readonly fields: FieldSelector;
  readonly allowBookmarks: boolean;
  readonly timeoutMs: number;
  readonly bookmarkIntervalMs: number;
  readonly start: WatchStart;
  readonly store: ObjectStore;
  readonly faults: WatchFaultHooks;
  readonly onEnd: (stream: WatchStream) => void;
}

const PRE_TIMEOUT_BOOKMARK_MS = 2000;

/** An event's line is the same for every watch that sends it: serialised once. */
const lines = new WeakMap<K8sObject, Map<string, string>>();

function eventLine(def: ResourceDef, type: EventType, obj: K8sObject): string {
  let byType = lines.get(obj);
  if (byType === undefined) {
    byType = new Map();
    lines.set(obj, byType);
  }
  let line = byType.get(type);
  if (line === undefined) {
    line = JSON.stringify({ type, object: toJson(def, obj) });
    byType.set(type, line);
  }
  return line;
}

export class WatchStream {
  private ended = false;
  private unsubscribe: (() => void) | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly deadline: number;

  constructor(
    private readonly res: ServerResponse,
    private readonly o: WatchStreamOptions,
  ) {
    this.deadline = Date.now() + o.timeoutMs;
    res.on('close', () => this.finish());
  }

  /** Sends the headers, the starting events, then follows the store until the timeout. */
  begin(): void {
    const { store, start } = this.o;
    this.res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    this.res.flushHeaders();
    if (start.after !== undefined && !start.initialEvents) {
      const backlog = store.eventsAfter(start.after);
      if (backlog === undefined) {
        const status = failure(410, 'Expired', `too old resource version: ${start.after} (${store.compactedRevision + 1})`);
        this.writeLine({ type: 'ERROR', object: status as unknown as Json });
        this.end();
        return;
      }
      this.unsubscribe = store.subscribe((e) => this.onChange(e));
      for (const e of backlog) this.onChange(e);
    } else {
      this.unsubscribe = store.subscribe((e) => this.onChange(e));
      for (const o of store.listCurrent(this.o.def, this.o.namespace)) {
        if (this.selects(o.obj)) this.sendEvent('ADDED', o.obj);
      }
      if (start.initialEvents) this.sendBookmark(true);
    }
    if (this.ended) return;
    this.timers.push(setTimeout(() => this.end(), this.o.timeoutMs));
    if (this.o.allowBookmarks) {
      this.timers.push(setInterval(() => this.sendBookmark(false), this.o.bookmarkIntervalMs));
      const preTimeout = this.deadline - PRE_TIMEOUT_BOOKMARK_MS - Date.now();
      if (preTimeout > 0 && preTimeout < this.o.timeoutMs) this.timers.push(setTimeout(() => this.sendBookmark(false), preTimeout));
    }
  }

  /** Ends the response cleanly, as a server-side timeout does. */
  end(): void {
    if (this.ended) return;
    this.finish();
    this.res.end();
  }

  /** Drops the connection without ending the response. */
  reset(): void {
    if (this.ended) return;
    this.finish();
    this.res.socket?.destroy();
  }

  /** Sends a bookmark now (if the client allowed them). */
  bookmark(): void {
    if (this.o.allowBookmarks) this.sendBookmark(false);
  }

  get isOpen(): boolean {
    return !this.ended;
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.unsubscribe?.();
    for (const t of this.timers) clearTimeout(t);
    this.o.onEnd(this);
  }

  private selects(obj: K8sObject): boolean {
    return this.o.labels.matches(obj.metadata.labels) && this.o.fields.matches({ name: obj.metadata.name ?? '', namespace: this.o.namespace });
  }

  private onChange(e: ChangeEvent): void {
    if (this.ended || e.def !== this.o.def || e.namespace !== this.o.namespace) return;
    // A watch from a revision not reached yet delivers only what comes after it.
    if (this.o.start.after !== undefined && e.rv <= this.o.start.after) return;
    if (e.type === 'ADDED') {
      if (this.selects(e.object)) this.sendEvent('ADDED', e.object);
      return;
    }
    if (e.type === 'DELETED') {
      if (this.selects(e.object)) this.sendEvent('DELETED', e.object);
      return;
    }
    const now = this.selects(e.object);
    const before = e.prev !== undefined && this.selects(e.prev);
    if (now && before) this.sendEvent('MODIFIED', e.object);
    else if (now) this.sendEvent('ADDED', e.object);
    else if (before && e.prev !== undefined) {
      // Leaving the selection reads as a deletion: the old content at the new revision.
      this.sendEvent('DELETED', { ...e.prev, metadata: { ...e.prev.metadata, resourceVersion: String(e.rv) } });
    }
  }

  private sendEvent(type: EventType, obj: K8sObject): void {
    const line = eventLine(this.o.def, type, obj);
    switch (this.o.faults.lineFate()) {
      case 'omit':
        return;
      case 'garble':
        this.res.write(`${line.slice(0, Math.floor(line.length / 2))}\u0000garbled\n`);
        return;
      case 'truncate':
        this.finish();
        this.res.write(line.slice(0, Math.floor(line.length / 2)), () => this.res.socket?.destroy());
        return;
      case 'write':
        this.res.write(`${line}\n`);
        return;
    }
  }

  private sendBookmark(initialEventsEnd: boolean): void {
    if (this.ended) return;
    const metadata: JsonObject = { resourceVersion: String(this.o.store.currentRevision), creationTimestamp: null };
    if (initialEventsEnd) metadata['annotations'] = { 'k8s.io/initial-events-end': 'true' };
    this.writeLine({ type: 'BOOKMARK', object: { kind: this.o.def.kind, apiVersion: this.o.def.apiVersion, metadata } });
  }

  private writeLine(event: { type: string; object: Json | StatusObject }): void {
    if (this.ended) return;
    this.res.write(`${JSON.stringify(event)}\n`);
  }
}
