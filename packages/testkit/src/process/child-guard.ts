/**
 * Children that must not outlive the test process. A test that fails half-way,
 * or a runner that ends its workers with a signal (vitest does), would otherwise
 * leave servers running, holding ports and data dirs, on the machine.
 *
 * Two guards, because neither covers every way a process ends:
 * - an `exit` handler kills the children when Node exits normally;
 * - a watchdog (`sh` reading a pipe from us) kills the child when the pipe
 *   closes, which the kernel does however this process dies, even by SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const guarded = new Set<ChildProcess>();
let installed = false;

function killAll(): void {
  for (const child of guarded) {
    try {
      // SIGKILL also ends a SIGSTOPped child; nothing else would.
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  guarded.clear();
}

function startWatchdog(pid: number): ChildProcess | undefined {
  try {
    const watchdog = spawn('/bin/sh', ['-c', 'read _ignored; kill -9 "$1" 2>/dev/null', 'taskgraph-watchdog', String(pid)], {
      stdio: ['pipe', 'ignore', 'ignore'],
      // Its own process group: a signal to ours must not end the watchdog first.
      detached: true,
    });
    watchdog.on('error', () => undefined);
    watchdog.unref();
    (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return watchdog;
  } catch {
    return undefined;
  }
}

/** Kills `child` with SIGKILL when this process ends, however it ends, unless the child ended first. */
export function guardChild(child: ChildProcess): void {
  if (!installed) {
    installed = true;
    process.on('exit', killAll);
  }
  if (child.pid === undefined) return;
  guarded.add(child);
  const watchdog = startWatchdog(child.pid);
  child.once('exit', () => {
    guarded.delete(child);
    // The child is gone: stop the watchdog before its pid could name another process.
    watchdog?.kill('SIGKILL');
  });
}
