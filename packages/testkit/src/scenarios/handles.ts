/**
 * Counts the process's live handles by kind (timers, sockets, servers), so a test
 * can check that stopping nodes gave back everything they opened.
 */
const KINDS = ['Timeout', 'TCPSocketWrap', 'TCPServerWrap', 'PipeWrap', 'FSReqCallback', 'Immediate'] as const;

export type HandleCounts = Record<(typeof KINDS)[number], number>;

export function countHandles(): HandleCounts {
  const out = Object.fromEntries(KINDS.map((k) => [k, 0])) as HandleCounts;
  for (const r of process.getActiveResourcesInfo()) {
    if ((KINDS as readonly string[]).includes(r)) out[r as keyof HandleCounts]++;
  }
  return out;
}

/** The kinds whose count is above the baseline. */
export function leakedHandles(baseline: HandleCounts, now: HandleCounts = countHandles()): Partial<HandleCounts> {
  const leaks: Partial<HandleCounts> = {};
  for (const k of KINDS) if (now[k] > baseline[k]) leaks[k] = now[k] - baseline[k];
  return leaks;
}
