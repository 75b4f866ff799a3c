/**
 * etcd and gRPC failures as TaskGraph errors. The line that matters is between
 * "not applied" (UnavailableError: the request never left, or etcd refused it
 * before acting) and "outcome unknown" (IndeterminateError: it was sent and no
 * answer came, so a write may have happened). The etcd3 client's errors carry
 * the gRPC status text, and gRPC says in it how far a call got.
 */
import {
  ClosedError,
  CompactedError,
  IndeterminateError,
  InternalError,
  InvalidArgumentError,
  LeaseLostError,
  TaskGraphError,
  UnavailableError,
} from '@taskgraph/api';

export type CallKind = 'read' | 'write';

export interface MappedError {
  readonly error: TaskGraphError;
  /** True when the request certainly did not reach etcd: another endpoint may be tried at once. */
  readonly notSent: boolean;
}

/** Texts of failures where the request never reached etcd (or etcd refused it before doing anything). */
const NOT_SENT = [
  'No connection established',
  'Channel closed before call started',
  'ECONNREFUSED',
  'Waiting for LB pick',
  'waiting for name resolution',
  'waiting for metadata filters',
  'Execution prevented because the circuit breaker is open',
  'etcdserver: no leader',
  'etcdserver: too many requests',
  'etcdserver: not capable',
  'etcdserver: server stopped',
  'etcdserver: unhealthy cluster',
  'etcdserver: not leader',
  'etcdserver: rpc not supported for learner',
  'database space exceeded',
];

const TOO_LARGE = ['request is too large', 'received message larger than max', 'trying to send message larger than max'];

function text(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

function className(err: unknown): string {
  return typeof err === 'object' && err !== null ? (err.constructor?.name ?? '') : '';
}

/**
 * Maps a failed call. `what` names the operation for the message, e.g.
 * `create of "job/spec"`.
 */
export function mapEtcdError(err: unknown, kind: CallKind, what: string): MappedError {
  if (TaskGraphError.is(err)) return { error: err, notSent: false };
  const message = text(err);
  const name = className(err);
  const detail = message.replace(/^\d+ [A-Z_]+: /, '');
  const say = (s: string) => `${what}: ${s}`;

  if (name === 'ClientClosedError') return { error: new ClosedError(say('the etcd client is closed'), { cause: err }), notSent: true };
  if (TOO_LARGE.some((t) => message.includes(t))) {
    return {
      error: new InvalidArgumentError(say(`etcd rejected the request as too large (${detail}); raise etcd's --max-request-bytes or store less`), { cause: err }),
      notSent: true,
    };
  }
  if (message.includes('requested lease not found') || name === 'EtcdLeaseInvalidError') {
    return { error: new LeaseLostError(say('the session\'s lease no longer exists in etcd'), { cause: err }), notSent: true };
  }
  if (message.includes('required revision has been compacted')) {
    return { error: new CompactedError(say(detail), { cause: err }), notSent: true };
  }
  if (/authentication failed|invalid auth token|user name not found|permission denied|Unauthenticated|auth: /i.test(message) ||
      name === 'EtcdAuthenticationFailedError' || name === 'EtcdPermissionDeniedError' || name === 'GRPCUnauthenticatedError') {
    return { error: new InvalidArgumentError(say(`etcd refused the credentials or the permission (${detail}); check username, password and roles`), { cause: err }), notSent: true };
  }
  if (NOT_SENT.some((t) => message.includes(t)) || name === 'BrokenCircuitError') {
    return { error: new UnavailableError(say(`etcd is unreachable or refused the request; not applied (${detail})`), { cause: err }), notSent: true };
  }
  if (name === 'GRPCInvalidArgumentError' || name === 'GRPCOutOfRangeError' || name === 'GRPCFailedPreconditionError') {
    return { error: new InvalidArgumentError(say(`etcd rejected the request: ${detail}`), { cause: err }), notSent: true };
  }
  if (name === 'GRPCNotImplementedError') {
    return { error: new InternalError(say(`etcd does not implement this call (is it older than 3.4?): ${detail}`), { cause: err }), notSent: true };
  }
  // Sent, and then the connection broke, the deadline passed or etcd gave up
  // (request timed out, leader changed): a write may or may not have happened.
  if (kind === 'write') {
    return {
      error: new IndeterminateError(say(`no answer from etcd, the write may or may not have been applied; read before retrying (${detail})`), { cause: err }),
      notSent: false,
    };
  }
  return { error: new UnavailableError(say(`no answer from etcd (${detail})`), { cause: err }), notSent: false };
}
