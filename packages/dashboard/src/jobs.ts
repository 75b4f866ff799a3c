/**
 * The list of jobs in the store. The store keeps no index of jobs and the SPI
 * cannot list the empty prefix, but job names are DNS labels, so every job's keys
 * start with one of [a-z0-9]: one list per first character reads them all. That
 * is O(store), so it runs when a page opens or asks and on a slow timer, never per
 * store event.
 */
import type { Coordinator } from '@taskgraph/api';
import { decodeEpoch, decodeSpec, decodeStatus, isJobName } from './records.js';
import type { JobSummary } from './types.js';

const FIRST_CHARACTERS = 'abcdefghijklmnopqrstuvwxyz0123456789'.split('');
/** Lists in flight at once. */
const CONCURRENCY = 6;

interface Found {
  numTasks?: number;
  readable: boolean;
  state: JobSummary['state'];
  epoch?: number;
}

export async function scanJobs(coordinator: Coordinator): Promise<JobSummary[]> {
  const found = new Map<string, Found>();
  const queue = FIRST_CHARACTERS.slice();
  const worker = async (): Promise<void> => {
    for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
      const { entries } = await coordinator.list(p);
      for (const e of entries) {
        const slash = e.key.indexOf('/');
        if (slash <= 0) continue;
        const name = e.key.slice(0, slash);
        const rest = e.key.slice(slash + 1);
        if (rest !== 'spec' && rest !== 'state/status' && rest !== 'state/epoch') continue;
        if (!isJobName(name)) continue;
        let f = found.get(name);
        if (!f) found.set(name, (f = { readable: false, state: 'unknown' }));
        try {
          if (rest === 'spec') {
            f.numTasks = decodeSpec(e.key, e.value).numTasks;
            f.readable = true;
            if (f.state === 'unknown') f.state = 'running';
          } else if (rest === 'state/status') {
            f.state = decodeStatus(e.key, e.value).state;
          } else {
            f.epoch = decodeEpoch(e.key, e.value);
          }
        } catch {
          // An unreadable value: the job's own page shows the problem.
        }
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return [...found]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, f]) => ({
      name,
      ...(f.numTasks === undefined ? {} : { numTasks: f.numTasks }),
      state: f.readable ? f.state : 'unknown',
      ...(f.epoch === undefined ? {} : { epoch: f.epoch }),
      readable: f.readable,
    }));
}
