/**
 * Backends that are not built in reach the command through plug-ins: a module
 * named with --plugin registers its schemes before any URL is resolved, in the
 * command's process and in every node process it starts.
 */
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEtcd } from '@taskgraph/testkit';
import type { EtcdServer } from '@taskgraph/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultCliEntry, main } from '../src/index.js';
import { writeCountingPlugin } from './counting-plugin.js';

async function run(argv: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const code = await main(argv, (s) => void lines.push(s));
  return { code, out: lines.join('\n') };
}

function runCli(args: string[], cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [defaultCliEntry(), ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

describe('plug-ins', () => {
  const plugin = writeCountingPlugin();
  afterAll(() => rmSync(plugin.dir, { recursive: true, force: true }));

  it('a transport registered by a plug-in carries an in-process run', async () => {
    const r = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'memory://cli-plugin', '--transport', 'counted+local://', '--plugin', plugin.path, '--arg', 'epochs=2']);
    expect(r.out).toContain('regression: sums are exact: 0, 3, 6');
    expect(r.code).toBe(0);
    const opened = plugin.opened().filter((o) => o.kind === 'transport');
    // One transport per node, every one through the plug-in, all in this process.
    expect(opened.length).toBeGreaterThanOrEqual(3);
    expect(new Set(opened.map((o) => `${o.pid} ${o.url}`))).toEqual(new Set([`${process.pid} counted+local://`]));
  });

  it('says what is wrong with a plug-in, and where schemes come from', async () => {
    const missing = await run(['job', 'status', 'j', '--coordinator', 'memory://x', '--plugin', './no-such-plugin.mjs']);
    expect(missing.code).toBe(2);
    expect(missing.out).toContain('taskgraph: cannot load plug-in "./no-such-plugin.mjs": Cannot find module');
    const odd = join(plugin.dir, 'odd-plugin.mjs');
    writeFileSync(odd, 'export default { redis: true };');
    const notAFunction = await run(['job', 'status', 'j', '--coordinator', 'memory://x', '--plugin', odd]);
    expect(notAFunction).toEqual({
      code: 2,
      out: `taskgraph: plug-in ${odd}: its default export must be a function that takes { registerCoordinator, registerTransport }`,
    });
    const unknown = await run(['job', 'status', 'j', '--coordinator', 'redis://h:6379']);
    expect(unknown.code).toBe(2);
    expect(unknown.out).toContain('has the unknown scheme "redis": supported are memory, etcd, consul, k8s');
    expect(unknown.out).toContain('(a plug-in adds more with registerCoordinator())');
  });

  describe('as OS processes on a real etcd', () => {
    let etcd: EtcdServer;
    beforeAll(async () => {
      etcd = await startEtcd();
    }, 60_000);
    afterAll(async () => {
      await etcd?.cleanup();
    });

    it('the command and every node process it starts open the backends through the plug-in', async () => {
      const before = plugin.opened().length;
      const r = await runCli(
        [
          'run', 'regression', '--tasks', '3', '--no-restart', '--timeout', '120', '--arg', 'epochs=2',
          '--coordinator', `counted+etcd://${etcd.clientAddress}?namespace=plugins`,
          '--transport', 'counted+grpc://127.0.0.1:0',
          '--plugin', plugin.path,
        ],
        plugin.dir,
      );
      expect(r.out).toContain('regression: sums are exact: 0, 3, 6');
      expect(r.code).toBe(0);
      const opened = plugin.opened().slice(before);
      const transportPids = new Set(opened.filter((o) => o.kind === 'transport').map((o) => o.pid));
      const coordinatorPids = new Set(opened.filter((o) => o.kind === 'coordinator').map((o) => o.pid));
      // Three node processes, each with a transport and a coordinator, and the
      // command itself, whose controller has only a coordinator.
      expect(transportPids.size).toBe(3);
      expect(coordinatorPids.size).toBe(4);
      for (const pid of transportPids) expect(coordinatorPids.has(pid)).toBe(true);
      expect(transportPids.has(process.pid)).toBe(false);
      expect(new Set(opened.map((o) => o.url.replace(/:\/\/.*/, '://')))).toEqual(new Set(['counted+etcd://', 'counted+grpc://']));
    }, 180_000);
  });
});
