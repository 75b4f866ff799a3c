/**
 * Output is best effort: when whoever reads stdout or stderr goes away (`| head -1`,
 * a closed terminal), a write fails with EPIPE, and an 'error' event nobody listens
 * to would end the process. A node must go on running its task (and `run` must go
 * on supervising its nodes and clean up the job), so such errors are swallowed and
 * later writes dropped; the exit code still tells the outcome.
 */
export function tolerateClosedOutput(streams: readonly NodeJS.WriteStream[] = [process.stdout, process.stderr]): void {
  for (const stream of streams) {
    stream.on('error', () => undefined);
  }
}
