import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { runK8sEmulatorCommand } from '../src/index.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-command-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('runK8sEmulatorCommand', () => {
  it('serves until SIGTERM, after writing a kubeconfig for the first namespace given', async () => {
    const path = join(dir, 'kubeconfig');
    const before = new Set(process.listeners('SIGTERM'));
    const running = runK8sEmulatorCommand(['--port', '0', '--kubeconfig', path, '--namespace', 'jobs', '--token=secret']);
    await eventually('the kubeconfig is written', () => existsSync(path));
    const text = await readFile(path, 'utf8');
    expect(text).toContain('namespace: "jobs"');
    expect(text).toContain('token: "secret"');
    const server = /server: "(http:\/\/[^"]+)"/.exec(text)?.[1] ?? '';
    const list = await fetch(`${server}/api/v1/namespaces/jobs/configmaps`, { headers: { Authorization: 'Bearer secret' } });
    expect(list.status).toBe(200);
    const created = await fetch(`${server}/api/v1/namespaces/jobs/configmaps`, {
      method: 'POST',
      headers: { Authorization: 'Bearer secret', 'Content-Type': 'application/json' },
      body: JSON.stringify({ metadata: { name: 'x' } }),
    });
    expect(created.status).toBe(201);
    // Only the command's own handler is called: the test runner's stay out of it.
    const added = process.listeners('SIGTERM').filter((l) => !before.has(l));
    expect(added).toHaveLength(1);
    for (const l of added) (l as () => void)();
    await running;
    expect(process.listeners('SIGTERM').filter((l) => !before.has(l))).toHaveLength(0);
    await expect(fetch(`${server}/version`)).rejects.toThrow();
  });

  it('rejects bad arguments with the usage', async () => {
    await expect(runK8sEmulatorCommand(['--port', 'eighty'])).rejects.toThrow(/--port needs an integer/);
    await expect(runK8sEmulatorCommand(['--what'])).rejects.toThrow(/unknown argument "--what"\nusage: taskgraph-emulator k8s/);
  });
});
