/**
 * The command's exit codes, and which failures are the user's configuration (so a
 * supervisor stops instead of restarting a node that would fail the same way).
 */
import { TaskGraphError } from '@taskgraph/api';

export const EXIT = {
  ok: 0,
  /** The job or node failed, or `run` gave up restarting a node. */
  failed: 1,
  /** Bad usage or configuration: one sentence says what to fix. A node exits with it so `run` does not restart it. */
  usage: 2,
  /** The node lost its lease (`node` only). */
  leaseLost: 3,
  /** The job's records in the store are unreadable: its spec is corrupt, or missing while the rest of the job is there. */
  unreadable: 4,
  /** `run` stopped by SIGINT (128 + 2, as a shell reports it). */
  interrupted: 130,
  /** `run` stopped by SIGTERM (128 + 15). */
  terminated: 143,
} as const;

/** The exit code of a command stopped by `signal`. */
export function interruptedExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? EXIT.interrupted : EXIT.terminated;
}

// What the operating system says when an address cannot be bound: a fixed port in
// use, a host that is not this machine's, a privileged port. Retrying changes none.
const BIND_ERRORS = /\b(EADDRINUSE|EADDRNOTAVAIL|EACCES)\b/;

/**
 * True for an error no restart can cure: a bad argument or URL, a value the
 * backend refuses (a TTL out of its range), a missing backend package, an address
 * that cannot be listened on.
 */
export function isConfigurationError(err: unknown): boolean {
  if (TaskGraphError.is(err, 'INVALID_ARGUMENT', 'BACKEND_NOT_INSTALLED')) return true;
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if ((typeof code === 'string' && BIND_ERRORS.test(code)) || BIND_ERRORS.test(e.message)) return true;
  }
  return false;
}
