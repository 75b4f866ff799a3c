/**
 * The two kinds the emulator serves, ConfigMap (core/v1) and Lease
 * (coordination.k8s.io/v1): how a request body is decoded (strictly typed, as the
 * Go structs decode JSON), how it is validated, and how it is written back in the
 * field order the real server uses.
 */
import { isPlainObject } from './merge-patch.js';
import { badRequest, type FieldError, type QualifiedResource } from './status.js';
import {
  configMapKeyErrors,
  immutable,
  invalidValue,
  objectMetaErrors,
  parseMicroTime,
  tooLong,
} from './validation.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface ObjectMeta {
  name?: string | undefined;
  generateName?: string | undefined;
  namespace?: string | undefined;
  uid?: string | undefined;
  resourceVersion?: string | undefined;
  creationTimestamp?: string | undefined;
  labels?: Record<string, string> | undefined;
  annotations?: Record<string, string> | undefined;
  ownerReferences?: Record<string, Json>[] | undefined;
  finalizers?: string[] | undefined;
}

/** A decoded object: type meta, metadata, and the kind's own top-level fields. */
export interface K8sObject {
  kind: string;
  apiVersion: string;
  metadata: ObjectMeta;
  content: JsonObject;
}

/** ConfigMaps' data + binaryData limit (core.MaxSecretSize). */
export const MAX_CONFIGMAP_DATA_BYTES = 1024 * 1024;

export interface ResourceDef extends QualifiedResource {
  readonly kind: string;
  readonly listKind: string;
  readonly apiVersion: string;
  /** PUT of a missing object creates it (Lease: true, ConfigMap: false). */
  readonly allowCreateOnUpdate: boolean;
  /** PUT without metadata.resourceVersion overwrites (ConfigMap: true, Lease: false). */
  readonly allowUnconditionalUpdate: boolean;
  /** Decodes the kind's top-level fields (all but apiVersion/kind/metadata); throws 400 on type errors. */
  decodeContent(body: Record<string, unknown>, warnings: string[]): JsonObject;
  validate(obj: K8sObject, old: K8sObject | undefined): FieldError[];
  /** The content written in the order of the Go struct's fields. */
  orderContent(content: JsonObject): JsonObject;
}

class DecodeError {
  constructor(readonly goType: string, readonly path: string, readonly got: string) {}
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return 'object';
  return typeof v;
}

function decodeString(v: unknown, path: string): string {
  if (typeof v !== 'string') throw new DecodeError('string', path, jsonType(v));
  return v;
}

function decodeInt32(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
    throw new DecodeError('int32', path, typeof v === 'number' ? `number ${v}` : jsonType(v));
  }
  return v;
}

function decodeBool(v: unknown, path: string): boolean {
  if (typeof v !== 'boolean') throw new DecodeError('bool', path, jsonType(v));
  return v;
}

function decodeStringMap(v: unknown, path: string): Record<string, string> {
  if (!isPlainObject(v)) throw new DecodeError('map[string]string', path, jsonType(v));
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) out[k] = decodeString(x, path);
  return out;
}

function sortedMap<T>(m: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const k of Object.keys(m).sort()) out[k] = m[k] as T;
  return out;
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function decodeBase64(v: unknown, path: string): Buffer {
  const s = decodeString(v, path);
  if (!STRICT_BASE64.test(s)) {
    const bad = s.search(/[^A-Za-z0-9+/=]/);
    throw new DecodeError('[]byte', path, `illegal base64 data at input byte ${bad >= 0 ? bad : s.length}`);
  }
  return Buffer.from(s, 'base64');
}

/** Runs a decoder and turns its type errors into the 400 the real server answers. */
export function decodeOrBadRequest<T>(kind: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof DecodeError) {
      const what = err.got.startsWith('illegal base64') ? err.got : `json: cannot unmarshal ${err.got} into Go struct field ${err.path} of type ${err.goType}`;
      throw badRequest(`${kind} in version "v1" cannot be handled as a ${kind}: ${what}`);
    }
    throw err;
  }
}

const META_FIELDS = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);

/** Decodes `metadata`; fields the server owns or ignores are accepted and dropped. */
export function decodeMeta(v: unknown, warnings: string[]): ObjectMeta {
  if (v === undefined || v === null) return {};
  if (!isPlainObject(v)) throw new DecodeError('v1.ObjectMeta', 'metadata', jsonType(v));
  const meta: ObjectMeta = {};
  for (const [k, x] of Object.entries(v)) {
    if (!META_FIELDS.has(k)) warnings.push(`unknown field "metadata.${k}"`);
    if (x === null || x === undefined) continue;
    switch (k) {
      case 'name':
      case 'generateName':
      case 'namespace':
      case 'uid':
      case 'resourceVersion':
        meta[k] = decodeString(x, `ObjectMeta.metadata.${k}`);
        break;
      case 'labels':
      case 'annotations':
        meta[k] = decodeStringMap(x, `ObjectMeta.metadata.${k}`);
        break;
      case 'ownerReferences':
        if (!Array.isArray(x)) throw new DecodeError('[]v1.OwnerReference', 'ObjectMeta.metadata.ownerReferences', jsonType(x));
        meta.ownerReferences = x.map((ref) => {
          if (!isPlainObject(ref)) throw new DecodeError('v1.OwnerReference', 'ObjectMeta.metadata.ownerReferences', jsonType(ref));
          return structuredClone(ref) as Record<string, Json>;
        });
        break;
      case 'finalizers':
        if (!Array.isArray(x)) throw new DecodeError('[]string', 'ObjectMeta.metadata.finalizers', jsonType(x));
        meta.finalizers = x.map((f) => decodeString(f, 'ObjectMeta.metadata.finalizers'));
        break;
      default:
        break;
    }
  }
  return meta;
}

function knownTopLevel(body: Record<string, unknown>, fields: readonly string[], warnings: string[]): void {
  for (const k of Object.keys(body)) {
    if (k === 'apiVersion' || k === 'kind' || k === 'metadata') continue;
    if (!fields.includes(k)) warnings.push(`unknown field "${k}"`);
  }
}

export const configMaps: ResourceDef = {
  group: '',
  resource: 'configmaps',
  kind: 'ConfigMap',
  listKind: 'ConfigMapList',
  apiVersion: 'v1',
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: true,
  decodeContent(body, warnings) {
    knownTopLevel(body, ['immutable', 'data', 'binaryData'], warnings);
    const content: JsonObject = {};
    if (body['immutable'] !== undefined && body['immutable'] !== null) content['immutable'] = decodeBool(body['immutable'], 'ConfigMap.immutable');
    if (body['data'] !== undefined && body['data'] !== null) content['data'] = sortedMap(decodeStringMap(body['data'], 'ConfigMap.data'));
    if (body['binaryData'] !== undefined && body['binaryData'] !== null) {
      const raw = body['binaryData'];
      if (!isPlainObject(raw)) throw new DecodeError('map[string][]uint8', 'ConfigMap.binaryData', jsonType(raw));
      const out: Record<string, string> = {};
      for (const [k, x] of Object.entries(raw)) out[k] = decodeBase64(x, 'ConfigMap.binaryData').toString('base64');
      content['binaryData'] = sortedMap(out);
    }
    return content;
  },
  validate(obj, old) {
    const errs = objectMetaErrors(obj.metadata);
    const data = (obj.content['data'] ?? {}) as Record<string, string>;
    const binary = (obj.content['binaryData'] ?? {}) as Record<string, string>;
    let total = 0;
    for (const [k, v] of Object.entries(data)) {
      for (const m of configMapKeyErrors(k)) errs.push(invalidValue('data', k, m));
      total += Buffer.byteLength(v);
    }
    for (const [k, v] of Object.entries(binary)) {
      for (const m of configMapKeyErrors(k)) errs.push(invalidValue('binaryData', k, m));
      if (Object.prototype.hasOwnProperty.call(data, k)) errs.push(invalidValue('binaryData', k, 'duplicate of key present in data'));
      total += Buffer.from(v, 'base64').length;
    }
    if (total > MAX_CONFIGMAP_DATA_BYTES) errs.push(tooLong('[]', MAX_CONFIGMAP_DATA_BYTES));
    if (old !== undefined && old.content['immutable'] === true) {
      const forbidden = (field: string): FieldError => ({ type: 'FieldValueForbidden', field, detail: 'Forbidden: field is immutable when `immutable` is set' });
      if (obj.content['immutable'] !== true) errs.push(forbidden('immutable'));
      if (JSON.stringify(obj.content['data'] ?? {}) !== JSON.stringify(old.content['data'] ?? {})) errs.push(forbidden('data'));
      if (JSON.stringify(obj.content['binaryData'] ?? {}) !== JSON.stringify(old.content['binaryData'] ?? {})) errs.push(forbidden('binaryData'));
    }
    return errs;
  },
  orderContent(content) {
    const out: JsonObject = {};
    for (const k of ['immutable', 'data', 'binaryData']) if (content[k] !== undefined) out[k] = content[k] as Json;
    return out;
  },
};

const LEASE_SPEC_FIELDS = ['holderIdentity', 'leaseDurationSeconds', 'acquireTime', 'renewTime', 'leaseTransitions', 'strategy', 'preferredHolder'] as const;

export const leases: ResourceDef = {
  group: 'coordination.k8s.io',
  resource: 'leases',
  kind: 'Lease',
  listKind: 'LeaseList',
  apiVersion: 'coordination.k8s.io/v1',
  allowCreateOnUpdate: true,
  allowUnconditionalUpdate: false,
  decodeContent(body, warnings) {
    knownTopLevel(body, ['spec'], warnings);
    const raw = body['spec'];
    if (raw === undefined || raw === null) return {};
    if (!isPlainObject(raw)) throw new DecodeError('v1.LeaseSpec', 'Lease.spec', jsonType(raw));
    const spec: JsonObject = {};
    for (const [k, v] of Object.entries(raw)) {
      if (!(LEASE_SPEC_FIELDS as readonly string[]).includes(k)) warnings.push(`unknown field "spec.${k}"`);
      if (v === null || v === undefined) continue;
      const path = `LeaseSpec.spec.${k}`;
      switch (k) {
        case 'holderIdentity':
          spec[k] = decodeString(v, path);
          break;
        case 'leaseDurationSeconds':
        case 'leaseTransitions':
          spec[k] = decodeInt32(v, path);
          break;
        case 'acquireTime':
        case 'renewTime': {
          const parsed = parseMicroTime(decodeString(v, path));
          if (!parsed.ok) throw badRequest(`Lease in version "v1" cannot be handled as a Lease: ${parsed.message}`);
          spec[k] = parsed.value;
          break;
        }
        // strategy and preferredHolder need the CoordinatedLeaderElection feature gate
        // (off by default); without it the server drops them, as this emulator does.
        default:
          break;
      }
    }
    return { spec: orderSpec(spec) };
  },
  validate(obj) {
    const errs = objectMetaErrors(obj.metadata);
    const spec = (obj.content['spec'] ?? {}) as Record<string, Json>;
    const duration = spec['leaseDurationSeconds'];
    if (typeof duration === 'number' && duration <= 0) errs.push(invalidValue('spec.leaseDurationSeconds', duration, 'must be greater than 0'));
    const transitions = spec['leaseTransitions'];
    if (typeof transitions === 'number' && transitions < 0) {
      errs.push(invalidValue('spec.leaseTransitions', transitions, 'must be greater than or equal to 0'));
    }
    return errs;
  },
  orderContent(content) {
    return content['spec'] === undefined ? { spec: {} } : { spec: content['spec'] };
  },
};

function orderSpec(spec: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const k of LEASE_SPEC_FIELDS) if (spec[k] !== undefined) out[k] = spec[k] as Json;
  return out;
}

export const RESOURCES: readonly ResourceDef[] = [configMaps, leases];

/** The object as JSON, in the real server's field order. */
export function toJson(def: ResourceDef, obj: K8sObject): JsonObject {
  const m = obj.metadata;
  const meta: JsonObject = {};
  if (m.name !== undefined) meta['name'] = m.name;
  if (m.generateName !== undefined) meta['generateName'] = m.generateName;
  if (m.namespace !== undefined) meta['namespace'] = m.namespace;
  if (m.uid !== undefined) meta['uid'] = m.uid;
  if (m.resourceVersion !== undefined) meta['resourceVersion'] = m.resourceVersion;
  meta['creationTimestamp'] = m.creationTimestamp ?? null;
  if (m.labels !== undefined && Object.keys(m.labels).length > 0) meta['labels'] = sortedMap(m.labels);
  if (m.annotations !== undefined && Object.keys(m.annotations).length > 0) meta['annotations'] = sortedMap(m.annotations);
  if (m.ownerReferences !== undefined && m.ownerReferences.length > 0) meta['ownerReferences'] = m.ownerReferences;
  if (m.finalizers !== undefined && m.finalizers.length > 0) meta['finalizers'] = m.finalizers;
  return { kind: def.kind, apiVersion: def.apiVersion, metadata: meta, ...def.orderContent(obj.content) };
}

/** Metadata fields an update may not change (ValidateObjectMetaUpdate). */
export function metaUpdateErrors(obj: K8sObject, old: K8sObject): FieldError[] {
  const errs: FieldError[] = [];
  if (obj.metadata.name !== old.metadata.name) errs.push(immutable('metadata.name', obj.metadata.name));
  return errs;
}
