/**
 * How much of the machine was idle over a window, from /proc/stat's first line
 * (all CPUs, in jiffies): a parallel speed-up needs idle cores, and on a shared
 * machine other work can take them. `idle_cores` is idle (with iowait) over all
 * time in the window, times the number of CPUs: 2 on an idle 2-core machine, 0 on
 * a saturated one. Null where /proc/stat cannot be read (not Linux).
 */
import { readFileSync } from 'node:fs';

export interface CpuTimes {
  readonly idle: number;
  readonly total: number;
  readonly cpus: number;
}

export function readCpuTimes(): CpuTimes | null {
  let text: string;
  try {
    text = readFileSync('/proc/stat', 'utf8');
  } catch {
    return null;
  }
  const lines = text.split('\n');
  const fields = lines[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is inside user already).
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  const cpus = lines.filter((l) => /^cpu\d+ /.test(l)).length;
  return { idle, total, cpus };
}

/** The idle cores between two readings (null when either is missing or no time passed). */
export function idleCores(from: CpuTimes | null, to: CpuTimes | null): number | null {
  if (from === null || to === null || to.total <= from.total) return null;
  return Math.round(((to.idle - from.idle) / (to.total - from.total)) * to.cpus * 100) / 100;
}
