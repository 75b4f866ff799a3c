/**
 * One error class for the whole framework, a `code` from a constant map and a
 * `retryable` flag. Callers branch on `code` (or `TaskGraphError.is`), never on
 * `instanceof` alone, so two installed copies of this package still agree.
 * Errors that cross the wire are serialised to `{ code, message, details }` and
 * rebuilt into the same subclass on the other side.
 */

export const ErrorCodes = {
  /** Bad input: malformed key or name, value over a limit, TTL outside the backend's range, bad URL. */
  InvalidArgument: 'INVALID_ARGUMENT',
  /** The key, task, job or method target does not exist. */
  NotFound: 'NOT_FOUND',
  /** `create` of a key that exists. */
  AlreadyExists: 'ALREADY_EXISTS',
  /** A compare-and-set lost: the version is not the one expected. */
  Conflict: 'CONFLICT',
  /** The session (lease) this operation depends on is gone. */
  LeaseLost: 'LEASE_LOST',
  /** A watch asked to resume from a revision the store no longer has. Re-list, then resume. */
  Compacted: 'COMPACTED',
  /** Not applied; safe to retry (server unreachable, connection refused, overloaded). */
  Unavailable: 'UNAVAILABLE',
  /** Sent, outcome unknown: re-read before retrying. */
  Indeterminate: 'INDETERMINATE',
  /** The deadline passed before an answer came. The operation may or may not have run. */
  DeadlineExceeded: 'DEADLINE_EXCEEDED',
  /** Cancelled by the caller's AbortSignal. */
  Aborted: 'ABORTED',
  /** The request belongs to an epoch that is not the current one. */
  EpochChanged: 'EPOCH_CHANGED',
  /** The node asked does not (or no longer) run the target task's current incarnation. Re-resolve. */
  NotOwner: 'NOT_OWNER',
  /** The target does not serve that method. */
  MethodNotFound: 'METHOD_NOT_FOUND',
  /** A payload or stored value could not be decoded. */
  DecodeFailed: 'DECODE_FAILED',
  /** The object was closed or stopped before or while the operation ran. */
  Closed: 'CLOSED',
  /** The job is finished; no more work is accepted. */
  JobDone: 'JOB_DONE',
  /** A backend package named by a URL is not installed. */
  BackendNotInstalled: 'BACKEND_NOT_INSTALLED',
  /**
   * The other side could not prove it belongs to the job: a server refusing a request
   * without a valid job credential, or a caller refusing an answer from a node that
   * could not prove it holds the job's credentials (a forged address record).
   */
  Unauthenticated: 'UNAUTHENTICATED',
  /** An application handler threw something that is not a TaskGraphError. */
  Application: 'APPLICATION',
  /** A bug or an unexpected state. */
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const RETRYABLE_BY_DEFAULT: Readonly<Record<ErrorCode, boolean>> = {
  INVALID_ARGUMENT: false,
  NOT_FOUND: false,
  ALREADY_EXISTS: false,
  CONFLICT: false,
  LEASE_LOST: false,
  COMPACTED: false,
  UNAVAILABLE: true,
  INDETERMINATE: false,
  DEADLINE_EXCEEDED: true,
  ABORTED: false,
  EPOCH_CHANGED: false,
  NOT_OWNER: true,
  METHOD_NOT_FOUND: false,
  DECODE_FAILED: false,
  CLOSED: false,
  JOB_DONE: false,
  BACKEND_NOT_INSTALLED: false,
  UNAUTHENTICATED: false,
  APPLICATION: false,
  INTERNAL: false,
};

const CODE_SET: ReadonlySet<string> = new Set(Object.values(ErrorCodes));

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && CODE_SET.has(value);
}

export type ErrorDetails = Readonly<Record<string, unknown>>;

export interface TaskGraphErrorOptions {
  readonly cause?: unknown;
  readonly retryable?: boolean;
  readonly details?: ErrorDetails;
}

/** The wire form of an error. */
export interface SerializedError {
  readonly code: string;
  readonly message: string;
  readonly retryable?: boolean;
  readonly details?: ErrorDetails;
}

export class TaskGraphError extends Error {
  override readonly name: string = 'TaskGraphError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: TaskGraphErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE_BY_DEFAULT[code];
    this.details = options.details ?? {};
  }

  /**
   * True when `err` is a TaskGraph error (from any installed copy of this package),
   * optionally with one of the given codes.
   */
  static is(err: unknown, ...codes: ErrorCode[]): err is TaskGraphError {
    if (typeof err !== 'object' || err === null) return false;
    const code = (err as { code?: unknown }).code;
    if (!isErrorCode(code) || typeof (err as { retryable?: unknown }).retryable !== 'boolean') return false;
    return codes.length === 0 || codes.includes(code);
  }

  toJSON(): SerializedError {
    return { code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

function subclass<C extends ErrorCode>(code: C, name: string) {
  const cls = class extends TaskGraphError {
    override readonly name: string = name;
    declare readonly code: C;
    constructor(message: string, options: TaskGraphErrorOptions = {}) {
      super(code, message, options);
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

export class InvalidArgumentError extends subclass(ErrorCodes.InvalidArgument, 'InvalidArgumentError') {}
export class NotFoundError extends subclass(ErrorCodes.NotFound, 'NotFoundError') {}
export class AlreadyExistsError extends subclass(ErrorCodes.AlreadyExists, 'AlreadyExistsError') {}
export class ConflictError extends subclass(ErrorCodes.Conflict, 'ConflictError') {}
export class LeaseLostError extends subclass(ErrorCodes.LeaseLost, 'LeaseLostError') {}
export class CompactedError extends subclass(ErrorCodes.Compacted, 'CompactedError') {}
export class UnavailableError extends subclass(ErrorCodes.Unavailable, 'UnavailableError') {}
export class IndeterminateError extends subclass(ErrorCodes.Indeterminate, 'IndeterminateError') {}
export class DeadlineExceededError extends subclass(ErrorCodes.DeadlineExceeded, 'DeadlineExceededError') {}
export class AbortedError extends subclass(ErrorCodes.Aborted, 'AbortedError') {}
export class NotOwnerError extends subclass(ErrorCodes.NotOwner, 'NotOwnerError') {}
export class MethodNotFoundError extends subclass(ErrorCodes.MethodNotFound, 'MethodNotFoundError') {}
export class DecodeFailedError extends subclass(ErrorCodes.DecodeFailed, 'DecodeFailedError') {}
export class ClosedError extends subclass(ErrorCodes.Closed, 'ClosedError') {}
export class JobDoneError extends subclass(ErrorCodes.JobDone, 'JobDoneError') {}
export class BackendNotInstalledError extends subclass(ErrorCodes.BackendNotInstalled, 'BackendNotInstalledError') {}
export class UnauthenticatedError extends subclass(ErrorCodes.Unauthenticated, 'UnauthenticatedError') {}
export class ApplicationError extends subclass(ErrorCodes.Application, 'ApplicationError') {}
export class InternalError extends subclass(ErrorCodes.Internal, 'InternalError') {}

/**
 * The epoch moved on (or the request named an epoch that is not current).
 * `details.current` is the epoch the answering side is in, when known.
 */
export class EpochChangedError extends subclass(ErrorCodes.EpochChanged, 'EpochChangedError') {
  /** The epoch the answering side is in, when it said. */
  get currentEpoch(): number | undefined {
    const v = this.details['current'];
    return typeof v === 'number' ? v : undefined;
  }
}

type ErrorClass = new (message: string, options?: TaskGraphErrorOptions) => TaskGraphError;

const CLASS_BY_CODE: Readonly<Record<ErrorCode, ErrorClass>> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  CONFLICT: ConflictError,
  LEASE_LOST: LeaseLostError,
  COMPACTED: CompactedError,
  UNAVAILABLE: UnavailableError,
  INDETERMINATE: IndeterminateError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  ABORTED: AbortedError,
  EPOCH_CHANGED: EpochChangedError,
  NOT_OWNER: NotOwnerError,
  METHOD_NOT_FOUND: MethodNotFoundError,
  DECODE_FAILED: DecodeFailedError,
  CLOSED: ClosedError,
  JOB_DONE: JobDoneError,
  BACKEND_NOT_INSTALLED: BackendNotInstalledError,
  UNAUTHENTICATED: UnauthenticatedError,
  APPLICATION: ApplicationError,
  INTERNAL: InternalError,
};

/** Builds the subclass that belongs to `code`. */
export function errorFromCode(code: ErrorCode, message: string, options: TaskGraphErrorOptions = {}): TaskGraphError {
  return new CLASS_BY_CODE[code](message, options);
}

/**
 * The wire form of any thrown value. A TaskGraphError keeps its code and details;
 * anything else becomes APPLICATION with the original name in `details.name`.
 */
export function serializeError(err: unknown): SerializedError {
  if (TaskGraphError.is(err)) {
    return { code: err.code, message: err.message, retryable: err.retryable, details: plainDetails(err.details) };
  }
  if (err instanceof Error) {
    return { code: ErrorCodes.Application, message: err.message, retryable: false, details: { name: err.name } };
  }
  return { code: ErrorCodes.Application, message: String(err), retryable: false, details: {} };
}

/** Rebuilds a typed error from its wire form. An unknown code becomes INTERNAL and says so. */
export function deserializeError(wire: SerializedError, context?: string): TaskGraphError {
  const prefix = context ? `${context}: ` : '';
  if (!isErrorCode(wire.code)) {
    return new InternalError(`${prefix}${wire.message}`, { details: { ...wire.details, remoteCode: wire.code } });
  }
  const options: TaskGraphErrorOptions =
    wire.retryable === undefined ? { details: wire.details ?? {} } : { details: wire.details ?? {}, retryable: wire.retryable };
  return errorFromCode(wire.code, `${prefix}${wire.message}`, options);
}

/** Parses the wire form from unknown JSON, or returns undefined when it is not one. */
export function parseSerializedError(value: unknown): SerializedError | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v['code'] !== 'string' || typeof v['message'] !== 'string') return undefined;
  const details = typeof v['details'] === 'object' && v['details'] !== null ? (v['details'] as ErrorDetails) : {};
  return typeof v['retryable'] === 'boolean'
    ? { code: v['code'], message: v['message'], retryable: v['retryable'], details }
    : { code: v['code'], message: v['message'], details };
}

function plainDetails(details: ErrorDetails): ErrorDetails {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) {
    if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) out[k] = v;
    else if (typeof v === 'bigint') out[k] = v.toString();
    else if (Array.isArray(v) || typeof v === 'object') {
      try {
        out[k] = JSON.parse(JSON.stringify(v, (_key, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)));
      } catch {
        out[k] = String(v);
      }
    }
  }
  return out;
}

/** The error a cancelled operation rejects with: the signal's reason when it is one of ours. */
export function abortError(signal: AbortSignal, what = 'operation'): TaskGraphError {
  const reason: unknown = signal.reason;
  if (TaskGraphError.is(reason)) return reason;
  return new AbortedError(`${what} was aborted`, { cause: reason });
}
