/**
 * What a user who wants etcd gets: the packed tarballs of @taskgraph/cli,
 * @taskgraph/coord-etcd and @taskgraph/transport-grpc (and the packages of ours
 * they need) installed with npm in a directory outside the workspace, third-party
 * packages from the npm registry. Nothing else of ours is installed, and the
 * command runs a user's application on a real etcd over gRPC.
 *
 * npm needs the registry (or a warm cache); when it cannot install, this test
 * fails with npm's own words rather than being skipped.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const WANTED = ['@taskgraph/cli', '@taskgraph/coord-etcd', '@taskgraph/transport-grpc'];

interface Manifest {
  name: string;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

function workspacePackages(): Map<string, string> {
  const out = new Map<string, string>();
  for (const group of ['packages', 'apps']) {
    for (const entry of readdirSync(join(ROOT, group))) {
      const file = join(ROOT, group, entry, 'package.json');
      if (existsSync(file)) out.set((JSON.parse(readFileSync(file, 'utf8')) as Manifest).name, join(ROOT, group, entry));
    }
  }
  return out;
}

/** The wanted packages and every package of ours they need at run time. */
function closure(wanted: readonly string[], dirs: Map<string, string>): string[] {
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    seen.add(name);
    const m = JSON.parse(readFileSync(join(dirs.get(name)!, 'package.json'), 'utf8')) as Manifest;
    for (const dep of Object.keys({ ...m.dependencies, ...m.peerDependencies })) if (dirs.has(dep)) visit(dep);
  };
  wanted.forEach(visit);
  return [...seen].sort();
}

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function exec(cmd: string, args: readonly string[], cwd: string): Promise<Ran> {
  // Outside the workspace, npm must not see the npm_* settings of a surrounding `npm test`.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const APP = `import { defineApp, defineMethod, jsonCodec, serve } from '@taskgraph/core';

const square = defineMethod('square', { output: jsonCodec((v) => typeof v === 'number') });

// Task 0 asks every other task for the square of its id, reports the sum and ends the job.
class Star {
  constructor(numTasks) { this.numTasks = numTasks; }
  setTaskId(id) { this.id = id; }
  getNeighbors() { return this.id === 0 ? Array.from({ length: this.numTasks - 1 }, (_, i) => i + 1) : [0]; }
}

class SquareTask {
  constructor(id, ctx) {
    this.ctx = ctx;
    this.methods = [serve(square, () => id * id)];
  }
  init(taskId, framework) { this.id = taskId; this.fw = framework; }
  async enterEpoch(ec) {
    if (this.id !== 0) return;
    const others = this.fw.getTopology().get('Spokes').getNeighbors(ec.epoch);
    const squares = await Promise.all(others.map((t) => this.fw.dataRequest(ec, t, square, null)));
    this.ctx.report({ sum: squares.reduce((a, b) => a + b, 0) });
    await this.fw.shutdownJob();
  }
  metaReady() {}
  exit() {}
}

export default defineApp({
  name: 'squares',
  linkTypes: ['Spokes'],
  taskBuilder: (ctx) => ({ getTask: (id) => new SquareTask(id, ctx) }),
  linkages: (ctx) => ({ Spokes: new Star(ctx.numTasks) }),
  verify: (ctx, results) => {
    let want = 0;
    for (let i = 1; i < ctx.numTasks; i++) want += i * i;
    const ok = results.length > 0 && results.every((r) => r.sum === want);
    return { ok, message: ok ? 'sum of squares is ' + want : 'wrong: ' + JSON.stringify(results) };
  },
});
`;

describe('installed from packed tarballs, etcd only', () => {
  const dirs = workspacePackages();
  const ours = closure(WANTED, dirs);
  let dir = '';
  let etcd: EtcdServer | undefined;
  let taskgraph = '';

  beforeAll(async () => {
    dir = realpathSync(mkdtempSync(join(tmpdir(), 'tg-packed-')));
    if (!relative(ROOT, dir).startsWith('..')) throw new Error(`the temporary directory ${dir} is inside the workspace ${ROOT}: set TMPDIR elsewhere`);
    for (const name of ours) {
      if (!existsSync(join(dirs.get(name)!, 'dist'))) throw new Error(`${name} is not built: run \`npm run build\` first`);
    }
    const packed = await exec('npm', ['pack', '--json', '--pack-destination', dir, ...ours.map((n) => dirs.get(n)!)], ROOT);
    expect(packed.code, `npm pack failed:\n${packed.stderr}`).toBe(0);
    const tarballs = new Map((JSON.parse(packed.stdout) as Array<{ name: string; filename: string }>).map((p) => [p.name, `file:./${p.filename}`]));
    // What the user asks for, as the user would; the rest of ours comes in as their
    // dependencies, from the tarballs instead of the registry (they are not published).
    const manifest = {
      name: 'taskgraph-user',
      private: true,
      type: 'module',
      dependencies: Object.fromEntries(WANTED.map((n) => [n, tarballs.get(n)!])),
      overrides: Object.fromEntries(ours.filter((n) => !WANTED.includes(n)).map((n) => [n, tarballs.get(n)!])),
    };
    writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2));
    const installed = await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], dir);
    expect(installed.code, `npm install of the packed tarballs failed (is the npm registry reachable?):\n${installed.stderr}`).toBe(0);
    taskgraph = join(dir, 'node_modules', '.bin', 'taskgraph');
    writeFileSync(join(dir, 'app.mjs'), APP);
    etcd = await startEtcd();
  }, 300_000);

  afterAll(async () => {
    await etcd?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('holds our packages the user needs and no other backend, transport or app', () => {
    expect(ours).toEqual(expect.arrayContaining(['@taskgraph/api', '@taskgraph/core', ...WANTED]));
    const scope = readdirSync(join(dir, 'node_modules', '@taskgraph')).map((n) => `@taskgraph/${n}`).sort();
    expect(scope).toEqual(ours);
    for (const absent of ['coord-memory', 'coord-consul', 'coord-k8s', 'transport-local', 'app-regression']) {
      expect(existsSync(join(dir, 'node_modules', '@taskgraph', absent)), absent).toBe(false);
    }
    expect(existsSync(join(dir, 'node_modules', '@kubernetes'))).toBe(false);
  });

  it('prints its usage', async () => {
    const help = await exec(taskgraph, ['--help'], dir);
    expect(help.stdout).toMatch(/^Usage: taskgraph \[options\] \[command\]\n\nRun TaskGraph jobs/);
    expect(help.code).toBe(0);
    const expected = (JSON.parse(readFileSync(join(ROOT, 'packages', 'cli', 'package.json'), 'utf8')) as { version: string }).version;
    const version = await exec(taskgraph, ['--version'], dir);
    expect(version.stdout.trim()).toBe(expected);
    // As the README says: `npx @taskgraph/cli` runs the package's one bin (offline: the installed package).
    const npx = await exec('npx', ['--no-install', '@taskgraph/cli', '--version'], dir);
    expect(npx.stdout.trim(), npx.stderr).toBe(expected);
  });

  it("runs the user's application as OS processes on a real etcd over gRPC", async () => {
    const r = await exec(
      taskgraph,
      ['run', './app.mjs', '--tasks', '3', '--coordinator', `etcd://${etcd!.clientAddress}?namespace=packed`, '--transport', 'grpc://127.0.0.1:0', '--timeout', '120'],
      dir,
    );
    expect(r.stdout, r.stderr).toContain('squares: sum of squares is 5');
    expect(r.code).toBe(0);
  }, 180_000);

  it('says in one line which package to install for a backend or app that is not installed', async () => {
    const consul = await exec(taskgraph, ['job', 'status', 'j', '--coordinator', 'consul://127.0.0.1:8500'], dir);
    expect(consul).toEqual({
      code: 2,
      stdout: 'taskgraph: the coordinator consul:// needs the package @taskgraph/coord-consul, which is not installed: run `npm install @taskgraph/coord-consul`\n',
      stderr: '',
    });
    const regression = await exec(taskgraph, ['run', 'regression', '--tasks', '3', '--coordinator', `etcd://${etcd!.clientAddress}`], dir);
    expect(regression.stdout).toBe(
      'taskgraph: the application regression needs the package @taskgraph/app-regression, which is not installed: run `npm install @taskgraph/app-regression`\n',
    );
    expect(regression.code).toBe(2);
  });
});
