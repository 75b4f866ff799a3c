/**
 * The plain word count's harness: what it reports for a small run (no timing is
 * asserted; speed is what the benchmark reports) and its command line.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { brownCorpus, countsDigest, plainWordCount, repeatsFor } from '@taskgraph/workloads';
import { MIN_BENCH_BYTES, runPlainCount } from '../mapreduce-plain.js';

const benchDir = fileURLToPath(new URL('..', import.meta.url));
const rootDir = fileURLToPath(new URL('../..', import.meta.url));

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const tsx = createRequire(import.meta.url).resolve('tsx/cli');
    const child = spawn(process.execPath, [tsx, '--tsconfig', `${rootDir}tsconfig.base.json`, `${benchDir}mapreduce-plain.ts`, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('mapreduce plain count', () => {
  const corpus = brownCorpus();
  const corpusBytes = corpus.files.reduce((a, f) => a + f.bytes, 0);

  it('reports the bytes, the distinct words and the digest of the count of the repeated corpus', () => {
    const result = runPlainCount({ repeat: 2 });
    const names = corpus.files.map((f) => f.name);
    const counts = plainWordCount(corpus.dir, [...names, ...names]);
    expect(result).toMatchObject({
      bench: 'mapreduce',
      mode: 'plain',
      repeat: 2,
      bytes: 2 * corpusBytes,
      distinct_words: counts.size,
      digest: countsDigest(counts),
    });
    expect(result.seconds).toBeGreaterThan(0);
    expect(result.mb_per_s).toBeGreaterThan(0);
  });

  it('repeats the corpus to at least 200 MB by default', () => {
    const k = repeatsFor(corpus.files, MIN_BENCH_BYTES);
    expect(k * corpusBytes).toBeGreaterThanOrEqual(MIN_BENCH_BYTES);
    expect((k - 1) * corpusBytes).toBeLessThan(MIN_BENCH_BYTES);
  });

  it('prints one JSON line from the command line, and exits 2 on a bad --repeat', async () => {
    const ok = await run(['--repeat', '1']);
    expect(ok.code).toBe(0);
    const lines = ok.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ bench: 'mapreduce', mode: 'plain', repeat: 1, bytes: corpusBytes });
    const bad = await run(['--repeat', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--repeat');
  });
});
