/**
 * The generic registry's semantics (k8s.io/apiserver/pkg/registry/generic/registry)
 * for ConfigMaps and Leases: create, get, list, update (PUT), merge patch and delete,
 * with the same preconditions, conflicts, create-on-update and no-op rules as the
 * real server.
 */
import { randomUUID, randomInt } from 'node:crypto';
import { applyMergePatch, isPlainObject } from './merge-patch.js';
import {
  decodeMeta,
  decodeOrBadRequest,
  metaUpdateErrors,
  toJson,
  type JsonObject,
  type K8sObject,
  type ResourceDef,
} from './resources.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import {
  alreadyExists,
  badRequest,
  conflict,
  deleteSuccess,
  expired,
  failure,
  internalError,
  invalid,
  notFound,
  StatusError,
  type FieldError,
} from './status.js';
import type { ObjectStore, StoredObject } from './store.js';
import { immutable, invalidValue, rfc3339Seconds } from './validation.js';

/** etcd's default --max-request-bytes: a stored object may not be larger. */
export const MAX_STORED_OBJECT_BYTES = 1.5 * 1024 * 1024;

const NAMESPACES: { group: string; resource: string } = { group: '', resource: 'namespaces' };

export interface Result {
  readonly code: number;
  readonly body: unknown;
  readonly warnings: readonly string[];
}

export interface ListQuery {
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
  readonly resourceVersion?: string | undefined;
  readonly resourceVersionMatch?: string | undefined;
  readonly limit?: string | undefined;
  readonly continue?: string | undefined;
}

/** Parses a resourceVersion query or precondition: a non-negative integer. */
export function parseResourceVersion(value: string, what = 'resourceVersion'): number {
  if (!/^\d+$/.test(value)) throw badRequest(`invalid ${what} "${value}": must be a non-negative integer`);
  return Number(value);
}

const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

export class Registry {
  constructor(
    readonly store: ObjectStore,
    readonly namespaces: Set<string>,
    private readonly now: () => number = Date.now,
  ) {}

  get(def: ResourceDef, namespace: string, name: string): Result {
    const existing = this.store.get(def, namespace, name);
    if (existing === undefined) throw notFound(def, name);
    return { code: 200, body: toJson(def, existing.obj), warnings: [] };
  }

  list(def: ResourceDef, namespace: string, q: ListQuery): Result {
    const labels = parseLabelSelector(q.labelSelector);
    const fields = parseFieldSelector(q.fieldSelector);
    const limit = q.limit === undefined || q.limit === '' ? 0 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 0) throw badRequest(`invalid limit "${q.limit ?? ''}"`);
    const rvText = q.resourceVersion ?? '';
    const match = q.resourceVersionMatch ?? '';
    let revision: number;
    let start = '';
    let items: StoredObject[] | undefined;
    if (q.continue !== undefined && q.continue !== '') {
      if (rvText !== '' && rvText !== '0') throw badRequest('specifying resource version is not allowed when using continue');
      const token = decodeContinue(q.continue);
      revision = token.rv;
      start = token.start;
      items = this.store.listAt(def, namespace, revision);
      if (items === undefined) {
        throw expired(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.',
        );
      }
    } else {
      if (match !== '' && match !== 'NotOlderThan' && match !== 'Exact') {
        throw invalidList(def, [invalidValue('resourceVersionMatch', match, 'supported values: "Exact", "NotOlderThan"')]);
      }
      if (match !== '' && rvText === '') {
        throw invalidList(def, [{ type: 'FieldValueForbidden', field: 'resourceVersionMatch', detail: 'Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided' }]);
      }
      const requested = rvText === '' ? 0 : parseResourceVersion(rvText);
      if (match === 'Exact') {
        if (requested === 0) {
          throw invalidList(def, [{ type: 'FieldValueForbidden', field: 'resourceVersionMatch', detail: 'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"' }]);
        }
        items = this.store.listAt(def, namespace, requested);
        if (items === undefined) throw expired(`too old resource version: ${requested} (${this.store.compactedRevision + 1})`);
        revision = Math.min(requested, this.store.currentRevision);
      } else {
        if (requested > this.store.currentRevision) throw tooLargeResourceVersion(requested, this.store.currentRevision);
        revision = this.store.currentRevision;
        items = this.store.listCurrent(def, namespace);
      }
    }
    const selected = items.filter((o) => o.name > start && labels.matches(o.obj.metadata.labels) && fields.matches({ name: o.name, namespace }));
    const page = limit > 0 ? selected.slice(0, limit) : selected;
    const metadata: JsonObject = { resourceVersion: String(revision) };
    if (limit > 0 && selected.length > limit) {
      const last = page[page.length - 1];
      metadata['continue'] = encodeContinue(revision, last?.name ?? start);
      if (labels.empty && q.fieldSelector === undefined) metadata['remainingItemCount'] = selected.length - limit;
    }
    const body = {
      kind: def.listKind,
      apiVersion: def.apiVersion,
      metadata,
      // As on the real server, items of a list carry no kind/apiVersion of their own.
      items: page.map((o) => {
        const { kind: _k, apiVersion: _a, ...rest } = toJson(def, o.obj);
        return rest;
      }),
    };
    return { code: 200, body, warnings: [] };
  }

  create(def: ResourceDef, namespace: string, body: unknown): Result {
    const warnings: string[] = [];
    const obj = this.decode(def, body, warnings);
    this.checkNamespace(obj, namespace);
    if (obj.metadata.resourceVersion !== undefined && obj.metadata.resourceVersion !== '' && obj.metadata.resourceVersion !== '0') {
      // The etcd3 storage layer refuses this with a plain error, which the handler answers as a 500.
      throw internalError('resourceVersion should not be set on objects to be created');
    }
    if ((obj.metadata.name ?? '') === '' && (obj.metadata.generateName ?? '') !== '') {
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += GENERATE_ALPHABET[randomInt(GENERATE_ALPHABET.length)];
      obj.metadata.name = `${obj.metadata.generateName ?? ''}${suffix}`;
    }
    const stored = this.insertNew(def, namespace, obj);
    return { code: 201, body: toJson(def, stored.obj), warnings };
  }

  update(def: ResourceDef, namespace: string, name: string, body: unknown): Result {
    const warnings: string[] = [];
    const obj = this.decode(def, body, warnings);
    this.checkNamespace(obj, namespace);
    if ((obj.metadata.name ?? '') !== name) {
      throw badRequest(`the name of the object (${obj.metadata.name ?? ''}) does not match the name on the URL (${name})`);
    }
    const existing = this.store.get(def, namespace, name);
    // A PUT carries its object's uid as a precondition (DefaultUpdatedObjectInfo.Preconditions);
    // it is checked against an empty object when there is none, which fails.
    const uid = obj.metadata.uid ?? '';
    if (uid !== '' && uid !== (existing?.obj.metadata.uid ?? '')) {
      throw conflict(def, name, `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${existing?.obj.metadata.uid ?? ''}`);
    }
    if (existing === undefined) {
      if (!def.allowCreateOnUpdate) throw notFound(def, name);
      obj.metadata.resourceVersion = undefined;
      const stored = this.insertNew(def, namespace, obj);
      return { code: 201, body: toJson(def, stored.obj), warnings };
    }
    const rvText = obj.metadata.resourceVersion ?? '';
    const requested = rvText === '' ? 0 : parseResourceVersion(rvText, 'metadata.resourceVersion');
    if (requested === 0 && !def.allowUnconditionalUpdate) {
      throw invalid(def.resource, def.group, name, [
        { type: 'FieldValueInvalid', field: 'metadata.resourceVersion', detail: 'Invalid value: 0x0: must be specified for an update' },
      ]);
    }
    if (requested !== 0 && requested !== existing.rv) throw conflict(def, name);
    return this.replaceExisting(def, existing, obj, warnings);
  }

  patch(def: ResourceDef, namespace: string, name: string, patch: unknown): Result {
    if (!isPlainObject(patch)) throw badRequest('the body of the request was not a JSON object');
    const existing = this.store.get(def, namespace, name);
    if (existing === undefined) throw notFound(def, name);
    const patched = applyMergePatch(toJson(def, existing.obj), patch);
    const warnings: string[] = [];
    const obj = this.decode(def, patched, warnings);
    this.checkNamespace(obj, namespace);
    const rvText = obj.metadata.resourceVersion ?? '';
    if (rvText !== '' && parseResourceVersion(rvText, 'metadata.resourceVersion') !== existing.rv) throw conflict(def, name);
    return this.replaceExisting(def, existing, obj, warnings);
  }

  delete(def: ResourceDef, namespace: string, name: string, body: unknown): Result {
    const options = decodeDeleteOptions(body);
    const existing = this.store.get(def, namespace, name);
    if (existing === undefined) throw notFound(def, name);
    const actualUid = existing.obj.metadata.uid ?? '';
    if (options.uid !== undefined && options.uid !== actualUid) {
      throw conflict(def, name, `Precondition failed: UID in precondition: ${options.uid}, UID in object meta: ${actualUid}`);
    }
    if (options.resourceVersion !== undefined && options.resourceVersion !== String(existing.rv)) {
      throw conflict(
        def,
        name,
        `Precondition failed: ResourceVersion in precondition: ${options.resourceVersion}, ResourceVersion in object meta: ${existing.rv}`,
      );
    }
    this.store.remove(existing);
    return { code: 200, body: deleteSuccess(def, name, actualUid), warnings: [] };
  }

  private decode(def: ResourceDef, body: unknown, warnings: string[]): K8sObject {
    if (!isPlainObject(body)) throw badRequest(`${def.kind} in version "v1" cannot be handled as a ${def.kind}: the body is not a JSON object`);
    const kind = body['kind'];
    const apiVersion = body['apiVersion'];
    if ((kind !== undefined && kind !== def.kind) || (apiVersion !== undefined && apiVersion !== def.apiVersion)) {
      throw badRequest(
        `the object provided is unrecognized (must be of type ${def.kind}): ${String(kind ?? '')} in version "${String(apiVersion ?? '')}" cannot be handled as a ${def.kind}`,
      );
    }
    return decodeOrBadRequest(def.kind, () => ({
      kind: def.kind,
      apiVersion: def.apiVersion,
      metadata: decodeMeta(body['metadata'], warnings),
      content: def.decodeContent(body, warnings),
    }));
  }

  private checkNamespace(obj: K8sObject, namespace: string): void {
    const ns = obj.metadata.namespace ?? '';
    if (ns !== '' && ns !== namespace) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    obj.metadata.namespace = namespace;
  }

  private insertNew(def: ResourceDef, namespace: string, obj: K8sObject): StoredObject {
    const name = obj.metadata.name ?? '';
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = rfc3339Seconds(this.now());
    obj.metadata.resourceVersion = undefined;
    const errs = def.validate(obj, undefined);
    if (errs.length > 0) throw invalid(def.kind, def.group, name, errs);
    // The NamespaceLifecycle admission plugin refuses objects in namespaces that do not exist.
    if (!this.namespaces.has(namespace)) throw notFound(NAMESPACES, namespace);
    if (this.store.get(def, namespace, name) !== undefined) throw alreadyExists(def, name);
    checkStoredSize(def, obj);
    return this.store.insert(def, namespace, name, obj);
  }

  private replaceExisting(def: ResourceDef, existing: StoredObject, obj: K8sObject, warnings: string[]): Result {
    const old = existing.obj;
    if ((obj.metadata.uid ?? '') === '') obj.metadata.uid = old.metadata.uid;
    // The server owns these: an update cannot change them.
    obj.metadata.creationTimestamp = old.metadata.creationTimestamp;
    const errs: FieldError[] = [...metaUpdateErrors(obj, old), ...def.validate(obj, old)];
    if (obj.metadata.uid !== old.metadata.uid) errs.push(immutable('metadata.uid', obj.metadata.uid));
    if (errs.length > 0) throw invalid(def.kind, def.group, existing.name, errs);
    obj.metadata.resourceVersion = old.metadata.resourceVersion;
    // etcd3's GuaranteedUpdate skips the write when nothing changed: same version, no event.
    if (JSON.stringify(toJson(def, obj)) === JSON.stringify(toJson(def, old))) {
      return { code: 200, body: toJson(def, old), warnings };
    }
    checkStoredSize(def, obj);
    const stored = this.store.replace(existing, obj);
    return { code: 200, body: toJson(def, stored.obj), warnings };
  }
}

function invalidList(def: ResourceDef, errs: FieldError[]): StatusError {
  return invalid(def.kind, def.group, '', errs);
}

function tooLargeResourceVersion(requested: number, current: number): StatusError {
  return new StatusError(
    failure(504, 'Timeout', `Too large resource version: ${requested}, current: ${current}`, {
      causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
      retryAfterSeconds: 1,
    }),
  );
}

function checkStoredSize(def: ResourceDef, obj: K8sObject): void {
  const size = Buffer.byteLength(JSON.stringify(toJson(def, obj)));
  if (size > MAX_STORED_OBJECT_BYTES) throw internalError('rpc error: code = InvalidArgument desc = etcdserver: request is too large');
}

function decodeDeleteOptions(body: unknown): { uid?: string; resourceVersion?: string } {
  if (body === undefined || body === null) return {};
  if (!isPlainObject(body)) throw badRequest('DeleteOptions must be a JSON object');
  if (body['dryRun'] !== undefined && body['dryRun'] !== null && !(Array.isArray(body['dryRun']) && body['dryRun'].length === 0)) {
    throw badRequest('dryRun is not supported by this emulator');
  }
  const pre = body['preconditions'];
  if (pre === undefined || pre === null) return {};
  if (!isPlainObject(pre)) throw badRequest('DeleteOptions.preconditions must be an object');
  const out: { uid?: string; resourceVersion?: string } = {};
  const uid = pre['uid'];
  const rv = pre['resourceVersion'];
  if (uid !== undefined && uid !== null) {
    if (typeof uid !== 'string') throw badRequest('DeleteOptions.preconditions.uid must be a string');
    out.uid = uid;
  }
  if (rv !== undefined && rv !== null) {
    if (typeof rv !== 'string') throw badRequest('DeleteOptions.preconditions.resourceVersion must be a string');
    out.resourceVersion = rv;
  }
  return out;
}

function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64');
}

function decodeContinue(token: string): { rv: number; start: string } {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
    if (isPlainObject(parsed) && parsed['v'] === 'meta.k8s.io/v1' && typeof parsed['rv'] === 'number' && typeof parsed['start'] === 'string') {
      return { rv: parsed['rv'], start: parsed['start'] };
    }
  } catch {
    // Falls through to the same answer as a token of the wrong shape.
  }
  throw badRequest('continue key is not valid: invalid continue token');
}
