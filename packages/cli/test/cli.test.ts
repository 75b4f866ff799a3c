import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { InvalidArgumentError } from '@taskgraph/api';
import { createController, resolveCoordinator, silentLogger } from '@taskgraph/core';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT, JobRun, loadApp, main, parseAppArgs, readConfigFile, resolveConfig } from '../src/index.js';

const tempDirs: string[] = [];
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tg-cli-'));
  tempDirs.push(d);
  return d;
}

async function run(argv: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const code = await main(argv, (s) => void lines.push(s));
  return { code, out: lines.join('\n') };
}

describe('configuration', () => {
  it('takes flags over environment over the config file', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'taskgraph.config.json'), JSON.stringify({ coordinator: 'etcd://file:2379', transport: 'grpc://0.0.0.0:1', sessionTtlMs: 7000 }));
    expect(resolveConfig({}, {}, dir)).toEqual({ coordinator: 'etcd://file:2379', transport: 'grpc://0.0.0.0:1', sessionTtlMs: 7000 });
    expect(resolveConfig({}, { TASKGRAPH_COORDINATOR: 'consul://env:8500' }, dir).coordinator).toBe('consul://env:8500');
    expect(resolveConfig({ coordinator: 'k8s://?namespace=x' }, { TASKGRAPH_COORDINATOR: 'consul://env:8500' }, dir).coordinator).toBe('k8s://?namespace=x');
    expect(resolveConfig({ ttl: '3000' }, {}, dir).sessionTtlMs).toBe(3000);
  });

  it('takes plug-ins from flags, or the environment, or the file: the higher source replaces the list', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'taskgraph.config.json'), JSON.stringify({ plugins: ['./from-file.mjs', 'taskgraph-plugin-x'] }));
    expect(resolveConfig({}, {}, dir).plugins).toEqual(['./from-file.mjs', 'taskgraph-plugin-x']);
    expect(resolveConfig({}, { TASKGRAPH_PLUGINS: './a.mjs, b ,' }, dir).plugins).toEqual(['./a.mjs', 'b']);
    expect(resolveConfig({ plugin: ['./flag.mjs'] }, { TASKGRAPH_PLUGINS: './a.mjs' }, dir).plugins).toEqual(['./flag.mjs']);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ plugins: './not-a-list.mjs' }));
    expect(() => readConfigFile(join(dir, 'bad.json'), dir)).toThrow('plugins must be a list of module paths or package names, got "./not-a-list.mjs"');
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ plugins: ['ok', ''] }));
    expect(() => readConfigFile(join(dir, 'bad.json'), dir)).toThrow('plugins must be a list');
  });

  it('explains what is wrong with a config file or a value', () => {
    const dir = tempDir();
    const file = join(dir, 'bad.json');
    writeFileSync(file, '{ not json');
    expect(() => readConfigFile(file, dir)).toThrow('is not valid JSON');
    writeFileSync(file, JSON.stringify({ coordinatr: 'x' }));
    expect(() => readConfigFile(file, dir)).toThrow('unknown key(s) coordinatr');
    writeFileSync(file, JSON.stringify({ coordinator: 'localhost:2379' }));
    expect(() => readConfigFile(file, dir)).toThrow('coordinator must be a URL like etcd://127.0.0.1:2379');
    expect(() => readConfigFile(join(dir, 'missing.json'), dir)).toThrow('does not exist');
    expect(() => resolveConfig({ ttl: '-5' }, {}, dir)).toThrow('sessionTtlMs must be a positive integer');
    expect(() => resolveConfig({}, { TASKGRAPH_LOG_LEVEL: 'loud' }, dir)).toThrow('environment: logLevel must be one of');
    expect(parseAppArgs(['a=1', 'b=x=y'])).toEqual({ a: '1', b: 'x=y' });
    expect(() => parseAppArgs(['novalue'])).toThrow(InvalidArgumentError);
  });

  it('loads the built-in application and refuses what is not one', async () => {
    const app = await loadApp('regression');
    expect(app.name).toBe('regression');
    expect(app.linkTypes).toEqual(['Parents', 'Children']);
    await expect(loadApp('no-such-app-package')).rejects.toThrow('cannot load application "no-such-app-package"');
    const dir = tempDir();
    writeFileSync(join(dir, 'not-an-app.mjs'), 'export default { name: "x" };');
    await expect(loadApp('./not-an-app.mjs', dir)).rejects.toThrow('an application must have linkTypes, taskBuilder(), linkages()');
  });
});

describe('the taskgraph command', () => {
  it('prints usage, and exits 2 on bad usage with one sentence', async () => {
    expect((await run(['--help'])).code).toBe(0);
    expect((await run([])).code).toBe(2);
    const unknown = await run(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.out).toBe("error: unknown command 'frobnicate'");
    const noTasks = await run(['run', 'regression', '--coordinator', 'memory://x']);
    expect(noTasks).toMatchObject({ code: 2, out: 'taskgraph: run needs --tasks N (or --workers N for a master/worker application)' });
    const badUrl = await run(['job', 'status', 'j', '--coordinator', 'redis://h']);
    expect(badUrl.code).toBe(2);
    expect(badUrl.out).toContain('unknown scheme "redis"');
    const badJob = await run(['job', 'status', 'Bad_Name', '--coordinator', 'memory://x']);
    expect(badJob.out).toContain('job name "Bad_Name" is invalid');
    const noCoord = await run(['job', 'status', 'j']);
    expect(noCoord).toEqual({ code: EXIT.usage, out: "taskgraph: no coordinator: job status needs the job's store: pass --coordinator URL (e.g. etcd://127.0.0.1:2379) or set TASKGRAPH_COORDINATOR (memory:// lives inside one process, so only `taskgraph run` defaults to it)" });
    const localAcross = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'etcd://127.0.0.1:1', '--transport', 'local://']);
    expect(localAcross.out).toContain('local:// only connects nodes inside one process');
  });

  it('refuses a --count or --nodes-per-process that is not an integer from 1 to the maximum, with one sentence', async () => {
    for (const bad of ['0', '-2', '1.5', 'four', '1025', '']) {
      const node = await run(['node', 'regression', '--job', 'j', '--coordinator', 'memory://x', '--transport', 'local://', `--count=${bad}`]);
      expect(node).toEqual({ code: 2, out: `taskgraph: --count must be an integer from 1 to 1024 (nodes in one process), got ${JSON.stringify(bad)}` });
      const r = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'memory://x', `--nodes-per-process=${bad}`]);
      expect(r).toEqual({ code: 2, out: `taskgraph: --nodes-per-process must be an integer from 1 to 1024 (nodes in one process), got ${JSON.stringify(bad)}` });
    }
  });

  it('masks a password from a flag or the environment in every message, even one quoting the URL whole', async () => {
    const flag = await run(['job', 'status', 'j', '--coordinator', 'redis://admin:hunter2@h:1']);
    expect(flag.code).toBe(EXIT.usage);
    expect(flag.out).toContain('coordinator URL "redis://admin:***@h:1" has the unknown scheme "redis"');
    expect(flag.out).not.toContain('hunter2');
    const saved = process.env['TASKGRAPH_COORDINATOR'];
    process.env['TASKGRAPH_COORDINATOR'] = 'redis://admin:env-pw-7@h:1';
    try {
      const env = await run(['job', 'status', 'j']);
      expect(env.out).toContain('redis://admin:***@h:1');
      expect(env.out).not.toContain('env-pw-7');
    } finally {
      if (saved === undefined) delete process.env['TASKGRAPH_COORDINATOR'];
      else process.env['TASKGRAPH_COORDINATOR'] = saved;
    }
  });

  it('creates, shows, and deletes a job', async () => {
    const c = ['--coordinator', 'memory://cli-jobs'];
    expect(await run(['job', 'create', 'j1', '--tasks', '3', '--app', 'regression', ...c])).toEqual({
      code: 0,
      out: 'job j1 ready: 3 tasks, 0 backups each, link types Parents, Children',
    });
    const conflict = await run(['job', 'create', 'j1', '--tasks', '4', '--link-types', 'Parents,Children', ...c]);
    expect(conflict.code).toBe(2);
    expect(conflict.out).toContain('already exists with numTasks=3');
    const status = await run(['job', 'status', 'j1', ...c]);
    expect(status.code).toBe(0);
    expect(status.out).toContain('job j1: running, epoch 0, 3 tasks, link types Parents, Children');
    expect(status.out).toContain('nodes: 0 live, 0 standby');
    const json = await run(['job', 'status', 'j1', '-o', 'json', ...c]);
    expect(JSON.parse(json.out)).toMatchObject({ job: 'j1', epoch: 0, state: 'running' });
    expect((await run(['job', 'delete', 'j1', ...c])).code).toBe(0);
    expect(await run(['job', 'status', 'j1', ...c])).toEqual({ code: EXIT.usage, out: 'taskgraph: job j1 does not exist' });
    expect(await run(['job', 'delete', 'j1', ...c])).toEqual({ code: EXIT.usage, out: 'taskgraph: job j1 does not exist' });
  });

  it('master/worker applications take --workers (a job of N + 1 tasks, backups for the master only); task graphs take --tasks', async () => {
    const c = ['--coordinator', 'memory://cli-mw'];
    expect(await run(['job', 'create', 'mw1', '--workers', '3', '--backups', '1', '--app', 'mapreduce', ...c])).toEqual({
      code: 0,
      out: 'job mw1 ready: 4 tasks, 1 backup of task 0, link types master, workers',
    });
    expect((await run(['job', 'status', 'mw1', ...c])).out).toContain('job mw1: running, epoch 0, 4 tasks, 1 backup of task 0, link types master, workers');
    const tasksForMw = await run(['run', 'mapreduce', '--tasks', '3', ...c]);
    expect(tasksForMw).toEqual({ code: 2, out: 'taskgraph: mapreduce is a master/worker application: give --workers N (its job has N + 1 tasks: the master and N workers), not --tasks' });
    const workersForGraph = await run(['run', 'regression', '--workers', '3', ...c]);
    expect(workersForGraph).toEqual({ code: 2, out: 'taskgraph: regression is a task graph: give --tasks N (--workers is for master/worker applications)' });
    expect((await run(['job', 'create', 'mw2', '--workers', '3', '--link-types', 'a', ...c])).out).toContain('--workers needs --app');
    expect((await run(['run', 'mapreduce', '--workers', '2', '--arg', 'reducers=0', ...c])).out).toContain('reducers=0 must be an integer from 1');
  });

  it('runs mapreduce in-process on memory://: progress lines, then the exact count', async () => {
    const r = await run(['run', 'mapreduce', '--workers', '3', '--standbys', '1', '--coordinator', 'memory://cli-mr', '--arg', 'splits=8', '--arg', 'reducers=2']);
    expect(r.out).toMatch(/job mapreduce-\w+: mapreduce, a master and 3 workers \+ 1 standbys, memory:\/\/cli-mr/);
    expect(r.out).toContain('mapreduce: splits mapped 8/8 | reducers done 2/2 | re-executions 0 | master incarnation 1');
    expect(r.out).toMatch(/mapreduce: PASS: count exact \(equal to a single-process count\): 1013640 words, 43202 distinct, 8 splits, 2 reducers/);
    expect(r.code).toBe(0);
  });

  it('runs the regression job in-process on memory:// and verifies the sums', async () => {
    const r = await run(['run', 'regression', '--tasks', '7', '--standbys', '1', '--coordinator', 'memory://cli-run', '--arg', 'epochs=4']);
    expect(r.out).toContain('regression: sums are exact: 0, 21, 42, 63, 84');
    expect(r.code).toBe(0);
  });

  it('runs the regression job in-process as node hosts (--nodes-per-process) and verifies the sums', async () => {
    const r = await run(['run', 'regression', '--tasks', '7', '--standbys', '2', '--nodes-per-process', '3', '--coordinator', 'memory://cli-hosts', '--arg', 'epochs=4']);
    expect(r.out).toContain('regression: sums are exact: 0, 21, 42, 63, 84');
    expect(r.code).toBe(0);
  });

  it('fails a run whose answer does not verify, and a run whose nodes all fail', async () => {
    const r = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'memory://cli-bad', '--arg', 'fanout=0']);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain('fanout=0 must be an integer >= 1');
  });
});

describe('the in-process runner (memory://)', () => {
  it('stops at once with exit 2 and one sentence on a configuration error: a refused TTL, a bad --arg, an address in use', async () => {
    expect(await run(['run', 'regression', '--tasks', '2', '--coordinator', 'memory://cli-ttl', '--ttl', '50'])).toEqual({
      code: EXIT.usage,
      out: 'taskgraph: --ttl 50 ms is outside the range the coordinator accepts, [100, 3600000] ms',
    });
    expect(await run(['run', 'regression', '--tasks', '2', '--coordinator', 'memory://cli-arg', '--arg', 'epochs=x'])).toEqual({
      code: EXIT.usage,
      out: 'taskgraph: regression: --arg epochs=x must be an integer >= 0',
    });
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const r = await run(['run', 'regression', '--tasks', '2', '--coordinator', 'memory://cli-bind', '--transport', `grpc://127.0.0.1:${port}`]);
      expect(r.code).toBe(EXIT.usage);
      const lines = r.out.split('\n');
      expect(lines.at(-2)).toMatch(new RegExp(`^taskgraph: node-\\d cannot run: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
      expect(lines.at(-1)).toMatch(/^FAIL: job regression-[a-z0-9]+ did not run \(configuration\)$/);
      expect(r.out).not.toContain('started node-');
    } finally {
      server.close();
    }
  });

  it('restarts a node that failed in its slot, after a delay, and the job finishes exact', async () => {
    const r = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'memory://cli-restart', '--arg', 'epochs=5', '--arg', 'fail-enter-epoch=1:3']);
    expect(r.out).toMatch(/node-\d exited \(failed: task 1 fails in enterEpoch\(3\) \(injected\)\); started node-3 after \d+ ms/);
    expect(r.out).toContain('regression: sums are exact: 0, 3, 6, 9, 12, 15');
    expect(r.code).toBe(EXIT.ok);
  });

  it('interrupted: every node leaves, the job is deleted, the last line says so, exit 130', async () => {
    const lines: string[] = [];
    const job = 'cli-interrupted';
    const jobRun = new JobRun({
      app: 'regression',
      tasks: 3,
      standbys: 1,
      job,
      args: { epochs: '100000' },
      config: { coordinator: 'memory://cli-interrupt' },
      print: (l) => {
        lines.push(l);
        if (/^epoch 3 /.test(l)) jobRun.interrupt('SIGINT');
      },
    });
    const r = await jobRun.run();
    expect(r.exitCode).toBe(EXIT.interrupted);
    expect(r.interrupted).toBe('SIGINT');
    expect(lines.at(-1)).toMatch(/^FAIL: job cli-interrupted interrupted by SIGINT after [0-9.]+ s at epoch \d+: 4 node\(s\) stopped, the job deleted from the store$/);
    const probe = await resolveCoordinator('memory://cli-interrupt');
    try {
      expect(await createController({ coordinator: probe, job, logger: silentLogger }).status()).toBeUndefined();
    } finally {
      await probe.close();
    }
  });
});
