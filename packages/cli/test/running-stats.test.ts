/**
 * The running-statistics app, as built, run by the built command with a primary and
 * a backup per task and a cold standby, on every coordinator: memory (nodes inside
 * the command's process), a real etcd, the Consul emulator and the Kubernetes API
 * emulator (nodes as OS processes over gRPC). In each run one primary kills itself
 * mid-job; the run must pass with the exact answer and a promoted backup.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startConsulEmulator, startK8sEmulator } from '@taskgraph/emulators';
import type { ConsulEmulator, K8sEmulator } from '@taskgraph/emulators';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobRun, defaultCliEntry } from '../src/index.js';

const APP = fileURLToPath(new URL('../../../apps/running-stats/dist/app.js', import.meta.url));
const TIMEOUT = 180_000;

/** Task 1's primary kills itself in epoch 2 once its fold is acknowledged: its backup holds 3 folds, seq 3. */
const PASS = /running-stats: PASS: exact statistics for 4 tasks over 7 epochs .*; 1 promotion\(s\) with the state: task 1 at seq 3 in epoch 2;/;

function runCli(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [defaultCliEntry(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

/** `taskgraph run <the built app> --tasks 4 --backups 1 --standbys 1` with one primary kill. */
function runWithKill(coordinator: string): Promise<{ code: number | null; out: string }> {
  return runCli([
    'run', APP, '--tasks', '4', '--backups', '1', '--standbys', '1',
    '--arg', 'epochs=6', '--arg', 'kill-at=2:1',
    '--timeout', '150', '--coordinator', coordinator,
  ]);
}

function expectPassWithPromotion(r: { code: number | null; out: string }): void {
  expect(r.out, r.out).toMatch(PASS);
  expect(r.out).toMatch(/job \S+ done after [\d.]+ s, epoch 6, 1 failover\(s\)/);
  expect(r.code).toBe(0);
}

describe('running-stats with --backups 1, one primary killed, on every coordinator', () => {
  let etcd: EtcdServer;
  let consul: ConsulEmulator;
  let k8s: K8sEmulator;
  let dir: string;

  beforeAll(async () => {
    if (!existsSync(APP)) throw new Error(`${APP} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(join(tmpdir(), 'cli-running-stats-'));
    [etcd, consul, k8s] = await Promise.all([startEtcd(), startConsulEmulator(), startK8sEmulator()]);
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled([etcd?.cleanup(), consul?.close(), k8s?.close()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('memory:// (the nodes inside the command)', async () => {
    expectPassWithPromotion(await runWithKill('memory://running-stats'));
  }, TIMEOUT);

  it('a real etcd (every node an OS process over gRPC)', async () => {
    expectPassWithPromotion(await runWithKill(`etcd://${etcd.clientAddress}?namespace=running-stats`));
  }, TIMEOUT);

  it('the Consul emulator', async () => {
    expectPassWithPromotion(await runWithKill(`consul://127.0.0.1:${consul.port}?namespace=running-stats`));
  }, TIMEOUT);

  it('the Kubernetes API emulator', async () => {
    const kubeconfig = join(dir, 'kubeconfig');
    await k8s.writeKubeconfig(kubeconfig);
    expectPassWithPromotion(await runWithKill(`k8s://?namespace=default&prefix=running-stats&kubeconfig=${encodeURIComponent(kubeconfig)}`));
  }, TIMEOUT);

  it('without backups the same kill loses task 1’s state, and the command fails saying so', async () => {
    const r = await runCli(['run', APP, '--tasks', '4', '--standbys', '1', '--arg', 'epochs=6', '--arg', 'kill-at=2:1', '--timeout', '150', '--coordinator', `etcd://${etcd.clientAddress}?namespace=running-stats-cold`]);
    expect(r.out, r.out).toMatch(/running-stats: FAIL: state LOST: task 1 holds 5 of 7 epochs \(restarted cold in epoch 2, incarnation 2\)/);
    expect(r.code).toBe(1);
  }, TIMEOUT);

  it('an in-process run with --metrics-port serves the job on /metrics and counts the promotion there', async () => {
    const lines: string[] = [];
    const scrapes: Array<Promise<{ status: number; text: string }>> = [];
    const run = new JobRun({
      app: APP,
      tasks: 4,
      backups: 1,
      standbys: 1,
      args: { epochs: '6', 'kill-at': '2:1' },
      config: { coordinator: 'memory://running-stats-metrics' },
      metrics: { port: 0 },
      print: (line) => {
        lines.push(line);
        // Scraped the moment the server says where it is (before any node starts).
        const m = /^metrics: (http:\/\/127\.0\.0\.1:\d+)\/metrics and \/healthz/.exec(line);
        if (m) scrapes.push(fetch(`${m[1]}/metrics`).then(async (r) => ({ status: r.status, text: await r.text() })));
      },
    });
    const result = await run.run();
    expect(result.exitCode, lines.join('\n')).toBe(0);
    expect(scrapes).toHaveLength(1);
    expect((await scrapes[0])?.status).toBe(200);
    const text = (await run.metrics?.registry.metrics()) ?? '';
    const sum = (name: string, filter = ''): number =>
      text
        .split('\n')
        .filter((l) => l.startsWith(name) && l.includes(filter))
        .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    expect(sum('taskgraph_failovers_total{', 'kind="promotion"')).toBe(1);
    expect(Math.max(...text.split('\n').filter((l) => l.startsWith('taskgraph_epoch{')).map((l) => Number(l.split(' ').at(-1))))).toBe(6);
    expect(sum('taskgraph_data_requests_served_total{')).toBeGreaterThan(0);
  });
});
