/**
 * The `Status` objects the Kubernetes API server answers errors with, built the way
 * k8s.io/apimachinery/pkg/api/errors builds them (same reasons, codes, messages and
 * details), so that clients branching on `reason`/`code` behave as against a real server.
 */

export interface StatusCause {
  readonly reason?: string;
  readonly message: string;
  readonly field?: string;
}

export interface StatusDetails {
  readonly name?: string;
  readonly group?: string;
  readonly kind?: string;
  readonly uid?: string;
  readonly causes?: readonly StatusCause[];
  readonly retryAfterSeconds?: number;
}

export interface StatusObject {
  readonly kind: 'Status';
  readonly apiVersion: 'v1';
  readonly metadata: Record<string, never>;
  readonly status: 'Success' | 'Failure';
  readonly message?: string;
  readonly reason?: string;
  readonly details?: StatusDetails;
  readonly code: number;
}

/** A resource as error messages name it: `configmaps`, `leases.coordination.k8s.io`. */
export interface QualifiedResource {
  readonly group: string;
  readonly resource: string;
}

/** An error answered as a Status body with its HTTP code. */
export class StatusError extends Error {
  readonly status: StatusObject;
  readonly headers: Readonly<Record<string, string>>;
  constructor(status: StatusObject, headers: Readonly<Record<string, string>> = {}) {
    super(status.message ?? status.reason ?? `HTTP ${status.code}`);
    this.name = 'StatusError';
    this.status = status;
    this.headers = headers;
  }
  get code(): number {
    return this.status.code;
  }
}

export function failure(code: number, reason: string, message: string, details?: StatusDetails): StatusObject {
  const base = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason } as const;
  return details === undefined ? { ...base, code } : { ...base, details, code };
}

function qualified(r: QualifiedResource): string {
  return r.group === '' ? r.resource : `${r.resource}.${r.group}`;
}

function resourceDetails(r: QualifiedResource, name: string): StatusDetails {
  return r.group === '' ? { name, kind: r.resource } : { name, group: r.group, kind: r.resource };
}

export function notFound(r: QualifiedResource, name: string): StatusError {
  return new StatusError(failure(404, 'NotFound', `${qualified(r)} "${name}" not found`, resourceDetails(r, name)));
}

export function alreadyExists(r: QualifiedResource, name: string): StatusError {
  return new StatusError(failure(409, 'AlreadyExists', `${qualified(r)} "${name}" already exists`, resourceDetails(r, name)));
}

/** The optimistic-concurrency failure, worded as the generic registry words it. */
export const OPTIMISTIC_LOCK_MESSAGE = 'the object has been modified; please apply your changes to the latest version and try again';

export function conflict(r: QualifiedResource, name: string, why: string = OPTIMISTIC_LOCK_MESSAGE): StatusError {
  return new StatusError(
    failure(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": ${why}`, resourceDetails(r, name)),
  );
}

export interface FieldError {
  /** `FieldValueInvalid`, `FieldValueRequired`, `FieldValueTooLong`, `FieldValueForbidden`, ... */
  readonly type: string;
  readonly field: string;
  /** The error text without the field, e.g. `Invalid value: "x": must be ...`. */
  readonly detail: string;
}

/** 422 Invalid for `Kind.group "name"`, one cause per field error, as errors.NewInvalid does. */
export function invalid(kind: string, group: string, name: string, errors: readonly FieldError[]): StatusError {
  const qualifiedKind = group === '' ? kind : `${kind}.${group}`;
  const parts = errors.map((e) => `${e.field}: ${e.detail}`);
  const summary = parts.length === 1 ? (parts[0] ?? '') : `[${parts.join(', ')}]`;
  const causes = errors.map((e) => ({ reason: e.type, message: e.detail, field: e.field }));
  const details: StatusDetails = group === '' ? { name, kind, causes } : { name, group, kind, causes };
  return new StatusError(failure(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${summary}`, details));
}

export function badRequest(message: string): StatusError {
  return new StatusError(failure(400, 'BadRequest', message));
}

export function expired(message: string): StatusError {
  return new StatusError(failure(410, 'Expired', message));
}

export function methodNotAllowed(): StatusError {
  return new StatusError(failure(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource'));
}

export function pathNotFound(): StatusError {
  return new StatusError(failure(404, 'NotFound', 'the server could not find the requested resource', {}));
}

export function unsupportedMediaType(contentType: string): StatusError {
  return new StatusError(failure(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json (got ${JSON.stringify(contentType)})`));
}

export function unauthorized(): StatusError {
  return new StatusError(failure(401, 'Unauthorized', 'Unauthorized'));
}

export function entityTooLarge(limit: number): StatusError {
  return new StatusError(failure(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`));
}

export function internalError(message: string): StatusError {
  return new StatusError(failure(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ message }] }));
}

/** The status a fault switch answers with (503 ServiceUnavailable, 429 TooManyRequests, 500, 504 ...). */
export function faultStatus(code: number): StatusError {
  switch (code) {
    case 429:
      return new StatusError(
        failure(429, 'TooManyRequests', 'Too many requests, please try again later.', { retryAfterSeconds: 1 }),
        { 'Retry-After': '1' },
      );
    case 500:
      return internalError('etcdserver: leader changed');
    case 504:
      return new StatusError(failure(504, 'Timeout', 'Timeout: request did not complete within the allotted timeout', { retryAfterSeconds: 1 }));
    default:
      return new StatusError(failure(code, 'ServiceUnavailable', 'the server is currently unable to handle the request', {}), {
        'Retry-After': '1',
      });
  }
}

/** The body a successful DELETE of a ConfigMap or Lease answers with. */
export function deleteSuccess(r: QualifiedResource, name: string, uid: string): Omit<StatusObject, 'code' | 'reason' | 'message'> {
  const details: StatusDetails = r.group === '' ? { name, kind: r.resource, uid } : { name, group: r.group, kind: r.resource, uid };
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details };
}
