import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { runK8sEmulatorCommand } from '../src/index.js';

/** An HTTPS request that trusts only `ca`; resolves with the status. */
function httpsStatus(url: string, ca: string, init: { method?: string; token?: string; body?: string } = {}): Promise<number> {
  const headers: Record<string, string> = {};
  if (init.token !== undefined) headers['Authorization'] = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['Content-Type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers, ca, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

/** Calls the SIGTERM handlers the command added (not the test runner's), then waits for it to end. */
async function stop(running: Promise<void>, before: ReadonlySet<NodeJS.SignalsListener>): Promise<void> {
  const added = process.listeners('SIGTERM').filter((l) => !before.has(l));
  expect(added).toHaveLength(1);
  for (const l of added) l('SIGTERM');
  await running;
  expect(process.listeners('SIGTERM').filter((l) => !before.has(l))).toHaveLength(0);
}

/** Runs `run` with stdout captured; `output()` is what was printed so far. */
async function printed(run: (output: () => string) => Promise<void>): Promise<string> {
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    await run(() => chunks.join(''));
  } finally {
    process.stdout.write = write;
  }
  return chunks.join('');
}

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-command-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('runK8sEmulatorCommand', () => {
  it('serves HTTPS until SIGTERM, after writing a kubeconfig for the first namespace given and the CA next to it', async () => {
    const path = join(dir, 'kubeconfig');
    const before = new Set(process.listeners('SIGTERM'));
    let server = '';
    const output = await printed(async () => {
      const running = runK8sEmulatorCommand(['--port', '0', '--kubeconfig', path, '--namespace', 'jobs', '--token=secret']);
      await eventually('the kubeconfig is written', () => existsSync(path));
      const text = await readFile(path, 'utf8');
      expect(text).toContain('namespace: "jobs"');
      expect(text).toContain('token: "secret"');
      expect(text).not.toContain('insecure-skip-tls-verify');
      expect(text).toContain(`certificate-authority: ${JSON.stringify(`${path}.ca.crt`)}`);
      server = /server: "(https:\/\/[^"]+)"/.exec(text)?.[1] ?? '';
      const ca = await readFile(`${path}.ca.crt`, 'utf8');
      expect(await httpsStatus(`${server}/api/v1/namespaces/jobs/configmaps`, ca, { token: 'secret' })).toBe(200);
      expect(await httpsStatus(`${server}/api/v1/namespaces/jobs/configmaps`, ca, { method: 'POST', token: 'secret', body: JSON.stringify({ metadata: { name: 'x' } }) })).toBe(201);
      // A client that trusts only the usual roots refuses the emulator's certificate.
      await expect(fetch(`${server}/version`)).rejects.toThrow();
      await stop(running, before);
    });
    expect(output).toContain(`listening on ${server}\n`);
    expect(output).toContain(`kubeconfig: ${path} (export KUBECONFIG=${path})\n`);
    expect(output).toContain(`CA certificate: ${path}.ca.crt\n`);
    const ca = await readFile(`${path}.ca.crt`, 'utf8');
    await expect(httpsStatus(`${server}/version`, ca)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('serves plain HTTP only when asked, and without --kubeconfig writes one to a temporary directory it removes', async () => {
    const before = new Set(process.listeners('SIGTERM'));
    let path = '';
    const output = await printed(async (output) => {
      const running = runK8sEmulatorCommand(['--plain-http', '--token', 'secret']);
      await eventually('the kubeconfig is announced', () => /kubeconfig: (\S+)/.exec(output()) !== null);
      path = /kubeconfig: (\S+)/.exec(output())?.[1] ?? '';
      const text = await readFile(path, 'utf8');
      expect(text).toContain('insecure-skip-tls-verify: true');
      const server = /server: "(http:\/\/127\.0\.0\.1:\d+)"/.exec(text)?.[1] ?? '';
      const list = await fetch(`${server}/api/v1/namespaces/default/configmaps`, { headers: { Authorization: 'Bearer secret' } });
      expect(list.status).toBe(200);
      await stop(running, before);
    });
    expect(output).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+\n/);
    expect(output).toContain('plain HTTP');
    expect(output).not.toContain('CA certificate');
    expect(existsSync(path)).toBe(false);
  });

  it('rejects bad arguments with the usage', async () => {
    await expect(runK8sEmulatorCommand(['--port', 'eighty'])).rejects.toThrow(/--port needs an integer/);
    await expect(runK8sEmulatorCommand(['--what'])).rejects.toThrow(/unknown argument "--what"\nusage: taskgraph-emulator k8s/);
    await expect(runK8sEmulatorCommand(['--plain-http', '--tls-name', 'api.local'])).rejects.toThrow(/exclude each other/);
  });
});
