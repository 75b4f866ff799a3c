/**
 * The validation rules of k8s.io/apimachinery/pkg/util/validation and
 * pkg/api/validation (ObjectMeta) that apply to ConfigMaps and Leases, with the
 * real server's wording so that error messages read the same.
 */
import type { FieldError } from './status.js';

const DNS1123_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS1123_SUBDOMAIN = new RegExp(`^${DNS1123_LABEL}(\\.${DNS1123_LABEL})*$`);
const DNS1123_SUBDOMAIN_MAX = 253;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const QUALIFIED_NAME_MAX = 63;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_VALUE_MAX = 63;
const CONFIGMAP_KEY = /^[-._a-zA-Z0-9]+$/;

/** The total size of all annotations of one object (TotalAnnotationSizeLimitB). */
export const TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024;

const SUBDOMAIN_MESSAGE =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

export function dns1123SubdomainErrors(value: string): string[] {
  const errs: string[] = [];
  if (value.length > DNS1123_SUBDOMAIN_MAX) errs.push(`must be no more than ${DNS1123_SUBDOMAIN_MAX} characters`);
  if (!DNS1123_SUBDOMAIN.test(value)) errs.push(SUBDOMAIN_MESSAGE);
  return errs;
}

/** Label and annotation keys: `[prefix/]name`, the prefix a DNS-1123 subdomain. */
export function labelKeyErrors(key: string): string[] {
  const errs: string[] = [];
  const parts = key.split('/');
  let name: string;
  if (parts.length === 1) {
    name = parts[0] ?? '';
  } else if (parts.length === 2) {
    const prefix = parts[0] ?? '';
    name = parts[1] ?? '';
    if (prefix.length === 0) errs.push('prefix part must be non-empty');
    else errs.push(...dns1123SubdomainErrors(prefix).map((m) => `prefix part ${m}`));
  } else {
    return [
      "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ];
  }
  if (name.length === 0) errs.push('name part must be non-empty');
  else if (name.length > QUALIFIED_NAME_MAX) errs.push(`name part must be no more than ${QUALIFIED_NAME_MAX} characters`);
  if (name.length > 0 && !QUALIFIED_NAME.test(name)) {
    errs.push(
      "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
    );
  }
  return errs;
}

export function labelValueErrors(value: string): string[] {
  const errs: string[] = [];
  if (value.length > LABEL_VALUE_MAX) errs.push(`must be no more than ${LABEL_VALUE_MAX} characters`);
  if (!LABEL_VALUE.test(value)) {
    errs.push(
      "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    );
  }
  return errs;
}

export function configMapKeyErrors(key: string): string[] {
  const errs: string[] = [];
  if (key.length > DNS1123_SUBDOMAIN_MAX) errs.push(`must be no more than ${DNS1123_SUBDOMAIN_MAX} characters`);
  if (!CONFIGMAP_KEY.test(key)) {
    errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
  }
  if (key === '.') errs.push("must not be '.'");
  else if (key === '..') errs.push("must not be '..'");
  else if (key.startsWith('..')) errs.push("must not start with '..'");
  return errs;
}

export function quote(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

export function invalidValue(field: string, value: unknown, message: string): FieldError {
  return { type: 'FieldValueInvalid', field, detail: `Invalid value: ${quote(value)}: ${message}` };
}

export function required(field: string, message = ''): FieldError {
  return { type: 'FieldValueRequired', field, detail: message === '' ? 'Required value' : `Required value: ${message}` };
}

export function tooLong(field: string, limit: number): FieldError {
  return { type: 'FieldValueTooLong', field, detail: `Too long: may not be more than ${limit} bytes` };
}

export function immutable(field: string, value: unknown): FieldError {
  return { type: 'FieldValueInvalid', field, detail: `Invalid value: ${quote(value)}: field is immutable` };
}

/** Labels, annotations and the name of an object (ValidateObjectMeta, for a namespaced kind). */
export function objectMetaErrors(meta: {
  readonly name?: string | undefined;
  readonly labels?: Readonly<Record<string, string>> | undefined;
  readonly annotations?: Readonly<Record<string, string>> | undefined;
  readonly ownerReferences?: readonly Readonly<Record<string, unknown>>[] | undefined;
}): FieldError[] {
  const errs: FieldError[] = [];
  const name = meta.name ?? '';
  if (name === '') {
    errs.push(required('metadata.name', 'name or generateName is required'));
  } else {
    for (const m of dns1123SubdomainErrors(name)) errs.push(invalidValue('metadata.name', name, m));
  }
  for (const [key, value] of Object.entries(meta.labels ?? {})) {
    for (const m of labelKeyErrors(key)) errs.push(invalidValue('metadata.labels', key, m));
    for (const m of labelValueErrors(value)) errs.push(invalidValue(`metadata.labels`, value, m));
  }
  let annotationBytes = 0;
  for (const [key, value] of Object.entries(meta.annotations ?? {})) {
    for (const m of labelKeyErrors(key.toLowerCase())) errs.push(invalidValue('metadata.annotations', key, m));
    annotationBytes += Buffer.byteLength(key) + Buffer.byteLength(value);
  }
  if (annotationBytes > TOTAL_ANNOTATION_SIZE_LIMIT) errs.push(tooLong('metadata.annotations', TOTAL_ANNOTATION_SIZE_LIMIT));
  (meta.ownerReferences ?? []).forEach((ref, i) => {
    const path = `metadata.ownerReferences[${i}]`;
    for (const f of ['apiVersion', 'kind', 'name', 'uid']) {
      const v = ref[f];
      if (typeof v !== 'string' || v === '') errs.push(required(`${path}.${f}`, f === 'uid' ? 'uid must not be empty' : ''));
    }
  });
  return errs;
}

/**
 * Parses a MicroTime (Lease acquireTime/renewTime) the way metav1.MicroTime does:
 * layout `2006-01-02T15:04:05.000000Z07:00`, which requires exactly six fractional
 * digits. Returns the normalised UTC form, or an error message in Go's wording.
 */
export function parseMicroTime(value: string): { ok: true; value: string } | { ok: false; message: string } {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d*)?(Z|[+-]\d\d:\d\d)?$/.exec(value);
  const layout = '2006-01-02T15:04:05.000000Z07:00';
  if (m === null) return { ok: false, message: `parsing time ${JSON.stringify(value)} as ${JSON.stringify(layout)}: cannot parse` };
  const frac = m[7] ?? '';
  if (frac.length !== 7) {
    const rest = value.slice(19);
    return { ok: false, message: `parsing time ${JSON.stringify(value)} as ${JSON.stringify(layout)}: cannot parse ${JSON.stringify(rest)} as ".000000"` };
  }
  const zone = m[8];
  if (zone === undefined) {
    return { ok: false, message: `parsing time ${JSON.stringify(value)} as ${JSON.stringify(layout)}: cannot parse "" as "Z07:00"` };
  }
  const millis = Date.parse(`${value.slice(0, 19)}${frac.slice(0, 4)}${zone}`);
  if (Number.isNaN(millis)) return { ok: false, message: `parsing time ${JSON.stringify(value)}: month or day out of range` };
  const iso = new Date(millis).toISOString();
  return { ok: true, value: `${iso.slice(0, 23)}${frac.slice(4, 7)}Z` };
}

/** RFC 3339 with seconds, as metav1.Time serialises (creationTimestamp). */
export function rfc3339Seconds(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}
