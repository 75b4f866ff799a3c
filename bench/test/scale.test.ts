/**
 * The scale benchmark's harness works: the fit is least squares on log-log, the
 * command line is read and refused as documented, a small run of the embedded part
 * (3, 7 and 15 tasks) checks every job's sums and makes its summary from its lines,
 * and the command prints only JSON lines, the summary last. No timing is asserted;
 * speed is what the benchmark reports.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, TARGETS, runScaleBench } from '../src/scale-bench.js';
import type { ScaleLine } from '../src/scale-bench.js';
import { USAGE, UsageError, parseCommandLine } from '../src/scale-cli.js';
import { growthExponent } from '../src/scale-fit.js';

const benchDir = fileURLToPath(new URL('..', import.meta.url));
const rootDir = fileURLToPath(new URL('../..', import.meta.url));

describe('helpers', () => {
  it('fits the growth exponent as the least-squares slope on log-log', () => {
    expect(growthExponent([63, 255, 1023].map((size) => ({ size, cost: 0.002 * size })))).toBe(1);
    expect(growthExponent([63, 255, 1023].map((size) => ({ size, cost: 1e-6 * size * size })))).toBe(2);
    // Off the line: the slope through the points' centre, not the end points'.
    const pts = [
      { size: 1, cost: 1 },
      { size: Math.E, cost: Math.E ** 2 },
      { size: Math.E ** 2, cost: Math.E ** 2 },
    ];
    expect(growthExponent(pts)).toBe(1);
    expect(growthExponent([{ size: 8, cost: 1 }])).toBeNull();
    expect(growthExponent([{ size: 8, cost: 1 }, { size: 8, cost: 2 }])).toBeNull();
    expect(growthExponent([{ size: 8, cost: 0 }, { size: 16, cost: 2 }])).toBeNull();
  });

  it('parses the command line and refuses what it cannot run', () => {
    expect(parseCommandLine([])).toEqual(DEFAULTS);
    expect(parseCommandLine(['--help'])).toBe('help');
    expect(parseCommandLine(['--parts', 'embedded', '--sizes', '3, 7', '--epochs', '2'])).toEqual({ parts: ['embedded'], embeddedSizes: [3, 7], epochs: 2 });
    expect(() => parseCommandLine(['--parts', 'etcd-someday'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--sizes', '1'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--sizes', 'x'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--epochs', '0'])).toThrow(UsageError);
    expect(() => parseCommandLine(['--bogus'])).toThrow(UsageError);
  });
});

describe('runScaleBench', () => {
  it('runs the regression job embedded at each size, every sum checked, and sums the runs up', { timeout: 300_000 }, async () => {
    const seen: ScaleLine[] = [];
    const progress: string[] = [];
    const { lines, summary } = await runScaleBench({ parts: ['embedded'], embeddedSizes: [3, 7, 15], epochs: 2, progress: (l) => progress.push(l) }, (l) => seen.push(l));
    expect(seen).toEqual(lines);
    expect(lines.map((l) => l.tasks)).toEqual([3, 7, 15]);
    for (const l of lines) {
      expect(Object.keys(l)).toEqual(['bench', 'mode', 'tasks', 'epochs', 'total_s', 'startup_s', 's_per_epoch', 'cpu_s', 'idle_cores', 'pass']);
      expect(l).toMatchObject({ bench: 'scale', mode: 'embedded', epochs: 2, pass: true });
      expect(l.startup_s).toBeGreaterThan(0);
      expect(l.startup_s).toBeLessThanOrEqual(l.total_s);
      expect(l.s_per_epoch).toBeCloseTo((l.total_s - l.startup_s) / 2, 3);
      expect(l.cpu_s).toBeGreaterThan(0);
    }
    expect(progress.filter((p) => p.startsWith('embedded: '))).toHaveLength(6);
    expect(summary).toMatchObject({
      summary: true,
      bench: 'scale',
      epochs: 2,
      // No 1,023-task run here: the key is there, without a value, and so is its verdict.
      embedded_1023_s: null,
      embedded_growth_exponent: growthExponent(lines.map((l) => ({ size: l.tasks, cost: l.s_per_epoch }))),
      embedded_startup_growth_exponent: growthExponent(lines.map((l) => ({ size: l.tasks, cost: l.startup_s }))),
      embedded_total_s: { 3: lines[0]!.total_s, 7: lines[1]!.total_s, 15: lines[2]!.total_s },
      embedded_s_per_epoch: { 3: lines[0]!.s_per_epoch, 7: lines[1]!.s_per_epoch, 15: lines[2]!.s_per_epoch },
      targets: TARGETS,
    });
    expect(summary['met']).toEqual({
      embedded_1023_s: null,
      embedded_growth_exponent: (summary['embedded_growth_exponent'] as number) <= TARGETS.embedded_growth_exponent,
    });
  });
});

describe('the command', () => {
  function runCli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const tsx = createRequire(import.meta.url).resolve('tsx/cli');
    const child = spawn(process.execPath, [tsx, '--tsconfig', `${rootDir}tsconfig.base.json`, `${benchDir}scale.ts`, ...args], {
      cwd: rootDir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  it('prints only JSON lines on stdout, the summary last, and exits 0', { timeout: 120_000 }, async () => {
    const { code, stdout, stderr } = await runCli(['--sizes', '3,7', '--epochs', '1']);
    expect(code, stderr).toBe(0);
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({ mode: 'embedded', tasks: 3, pass: true });
    expect(lines[1]).toMatchObject({ mode: 'embedded', tasks: 7, pass: true });
    expect(lines[2]).toMatchObject({ summary: true, bench: 'scale', embedded_1023_s: null, targets: TARGETS });
    expect(stderr).toContain('[scale]');
  });

  it('exits 2 with the usage on a bad argument', async () => {
    const { code, stdout, stderr } = await runCli(['--sizes', 'x']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(USAGE);
  });
});
