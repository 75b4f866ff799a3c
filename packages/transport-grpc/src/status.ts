/**
 * TaskGraph errors as gRPC statuses and back. The server answers a failed call
 * with a status code a plain gRPC client understands, plus trailers that carry
 * the exact TaskGraph error; the caller rebuilds the error from the trailers, and
 * falls back to the status code for a peer that does not send them.
 */
import {
  ApplicationError,
  DeadlineExceededError,
  ErrorCodes,
  InternalError,
  InvalidArgumentError,
  MethodNotFoundError,
  NotFoundError,
  AlreadyExistsError,
  NotOwnerError,
  UnauthenticatedError,
  UnavailableError,
  deserializeError,
  errorFromCode,
  isErrorCode,
  parseSerializedError,
  serializeError,
} from '@taskgraph/api';
import type { ErrorCode, ErrorDetails, SerializedError, TaskGraphError } from '@taskgraph/api';
import { Metadata, status as Status } from '@grpc/grpc-js';
import type { StatusObject } from '@grpc/grpc-js';
import { TrailerKeys } from './metadata.js';

/** The gRPC status each TaskGraph code answers with. */
export const STATUS_BY_CODE: Readonly<Record<ErrorCode, Status>> = {
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  NOT_FOUND: Status.NOT_FOUND,
  ALREADY_EXISTS: Status.ALREADY_EXISTS,
  CONFLICT: Status.ABORTED,
  LEASE_LOST: Status.FAILED_PRECONDITION,
  COMPACTED: Status.OUT_OF_RANGE,
  UNAVAILABLE: Status.UNAVAILABLE,
  INDETERMINATE: Status.UNKNOWN,
  DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
  ABORTED: Status.CANCELLED,
  EPOCH_CHANGED: Status.FAILED_PRECONDITION,
  // gRPC's ABORTED is "a sequencer check failed": exactly a stale fencing token.
  NOT_OWNER: Status.ABORTED,
  METHOD_NOT_FOUND: Status.UNIMPLEMENTED,
  DECODE_FAILED: Status.INVALID_ARGUMENT,
  CLOSED: Status.UNAVAILABLE,
  JOB_DONE: Status.FAILED_PRECONDITION,
  BACKEND_NOT_INSTALLED: Status.FAILED_PRECONDITION,
  UNAUTHENTICATED: Status.UNAUTHENTICATED,
  APPLICATION: Status.UNKNOWN,
  INTERNAL: Status.INTERNAL,
};

/** Keeps trailers well under grpc-js's default 8 KiB metadata limit. */
const MAX_ERROR_JSON_BYTES = 4096;
const MAX_MESSAGE_CHARS = 1024;
const MAX_DETAIL_JSON_BYTES = 256;

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/** The error's wire form, shrunk to fit in a trailer when it is large. */
function compactJson(wire: SerializedError): Buffer {
  const full = Buffer.from(JSON.stringify(wire), 'utf8');
  if (full.length <= MAX_ERROR_JSON_BYTES) return full;
  const details: Record<string, unknown> = { truncated: true };
  for (const [k, v] of Object.entries(wire.details ?? {})) {
    const size = Buffer.byteLength(JSON.stringify(v) ?? '', 'utf8');
    if (size <= MAX_DETAIL_JSON_BYTES && Object.keys(details).length < 16) details[k] = v;
  }
  const small: SerializedError = { ...wire, message: truncate(wire.message, MAX_MESSAGE_CHARS), details };
  const out = Buffer.from(JSON.stringify(small), 'utf8');
  return out.length <= MAX_ERROR_JSON_BYTES
    ? out
    : Buffer.from(JSON.stringify({ code: wire.code, message: truncate(wire.message, 256), retryable: wire.retryable }), 'utf8');
}

/** The status a server answers with for a thrown value; `grpcCode` overrides the code's usual status. */
export function statusFromError(
  err: unknown,
  grpcCode?: Status,
): Partial<StatusObject> & { code: Status; details: string; metadata: Metadata } {
  const wire = serializeError(err);
  const code = isErrorCode(wire.code) ? wire.code : ErrorCodes.Internal;
  const trailers = new Metadata();
  trailers.set(TrailerKeys.errorCode, code);
  trailers.set(TrailerKeys.error, compactJson(wire));
  const current = wire.details?.['current'];
  if (code === ErrorCodes.EpochChanged && typeof current === 'number' && Number.isSafeInteger(current)) {
    trailers.set(TrailerKeys.currentEpoch, String(current));
  }
  return { code: grpcCode ?? STATUS_BY_CODE[code], details: truncate(wire.message, MAX_MESSAGE_CHARS), metadata: trailers };
}

/** What the client knows about a failed call besides its status. */
export interface CallContext {
  readonly address: string;
  readonly method: string;
}

function trailerText(md: Metadata | undefined, key: string): string | undefined {
  const v = md?.get(key)[0];
  return typeof v === 'string' ? v : undefined;
}

/** The TaskGraph error the server put in the trailers, if it did. */
function errorFromTrailers(md: Metadata | undefined, details: string): TaskGraphError | undefined {
  const bin = md?.get(TrailerKeys.error)[0];
  if (bin instanceof Buffer) {
    try {
      const wire = parseSerializedError(JSON.parse(bin.toString('utf8')));
      if (wire !== undefined) return deserializeError(wire);
    } catch {
      // A corrupt trailer: fall back to the plain code trailer below.
    }
  }
  const code = trailerText(md, TrailerKeys.errorCode);
  if (code === undefined || !isErrorCode(code)) return undefined;
  const extra: Record<string, unknown> = {};
  const current = trailerText(md, TrailerKeys.currentEpoch);
  if (current !== undefined && /^\d{1,16}$/.test(current)) extra['current'] = Number(current);
  return errorFromCode(code, details, { details: extra });
}

/**
 * The error a client call failed with. `aborted` is true when our own signal
 * cancelled it; the caller handles that case before asking here.
 */
export function errorFromStatus(
  st: { code: Status; details: string; metadata?: Metadata | undefined },
  ctx: CallContext,
): TaskGraphError {
  const fromServer = errorFromTrailers(st.metadata, st.details);
  if (fromServer !== undefined) return fromServer;
  const where = `gRPC call ${ctx.method} to ${ctx.address}`;
  const details: ErrorDetails = { address: ctx.address, method: ctx.method, grpcCode: Status[st.code] ?? st.code, grpcDetails: st.details };
  switch (st.code) {
    case Status.UNAVAILABLE:
      // grpc-js says "Connection dropped" (or the socket's ECONNRESET) when the
      // connection died under a call already on it: the request may have been handled.
      // Still UNAVAILABLE, so the caller re-resolves the task's owner and retries.
      return new UnavailableError(`${where} failed: ${st.details}`, {
        details: /Connection dropped|ECONNRESET/.test(st.details) ? { ...details, maybeDelivered: true } : details,
      });
    case Status.CANCELLED:
      // Not our signal (handled by the caller): the server or a proxy reset a call it
      // had received, e.g. a node going away. Another attempt may reach a live owner.
      return new UnavailableError(`${where} was cancelled by the peer: ${st.details}`, { details: { ...details, maybeDelivered: true } });
    case Status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(`${where} got no answer before its deadline`, { details });
    case Status.UNIMPLEMENTED:
      return new MethodNotFoundError(`${ctx.address} does not serve method ${ctx.method}`, { details });
    case Status.RESOURCE_EXHAUSTED:
      return new InvalidArgumentError(`${where} was refused as too large: ${st.details}`, { details });
    case Status.INVALID_ARGUMENT:
    case Status.OUT_OF_RANGE:
      return new InvalidArgumentError(`${where} was rejected: ${st.details}`, { details });
    case Status.NOT_FOUND:
      return new NotFoundError(`${where}: ${st.details}`, { details });
    case Status.ALREADY_EXISTS:
      return new AlreadyExistsError(`${where}: ${st.details}`, { details });
    case Status.ABORTED:
      return new NotOwnerError(`${where} was aborted by the peer (stale target?): ${st.details}`, { details });
    case Status.UNAUTHENTICATED:
      return new UnauthenticatedError(`${where} was refused: the caller is not authenticated`, { details });
    case Status.UNKNOWN:
      return new ApplicationError(`${where} failed in the peer's handler: ${st.details}`, { details });
    default:
      return new InternalError(`${where} failed with ${Status[st.code] ?? st.code}: ${st.details}`, { details });
  }
}
