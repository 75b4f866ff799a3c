/**
 * The data plane's security from flags and the config file: mutual TLS files and
 * the job secret file reach the transport URL (paths only), and a whole job runs as
 * separate OS processes on real etcd over grpcs:// with the job secret on top.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, startEtcd } from '@taskgraph/testkit';
import type { EtcdServer, Pki } from '@taskgraph/testkit';
import { JobRun, resolveConfig } from '../src/index.js';
import { securedTransportUrl } from '../src/config.js';

const tempDir = (): string => mkdtempSync(join(tmpdir(), 'tg-cli-sec-'));

describe('data-plane security options', () => {
  it('come from flags or the config file (paths made absolute), a flag replacing the file’s entry', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'taskgraph.config.json'), JSON.stringify({ tls: { ca: 'pki/ca.pem', cert: 'pki/node.pem', key: 'pki/key.pem' }, jobSecretFile: 'secret' }));
    expect(resolveConfig({}, {}, dir)).toEqual({
      tls: { ca: join(dir, 'pki/ca.pem'), cert: join(dir, 'pki/node.pem'), key: join(dir, 'pki/key.pem') },
      jobSecretFile: join(dir, 'secret'),
    });
    const flagged = resolveConfig({ 'tls-cert': '/etc/tg/other.pem', 'job-secret-file': '/run/secrets/job' }, {}, dir);
    expect(flagged.tls).toEqual({ ca: join(dir, 'pki/ca.pem'), cert: '/etc/tg/other.pem', key: join(dir, 'pki/key.pem') });
    expect(flagged.jobSecretFile).toBe('/run/secrets/job');
  });

  it('make the transport URL grpcs:// with the files as query options, never the secret itself', () => {
    const tls = { ca: '/p/ca.pem', cert: '/p/n.pem', key: '/p/k.pem' };
    expect(securedTransportUrl({ tls }, 'grpc://127.0.0.1:0')).toBe('grpcs://127.0.0.1:0?ca=%2Fp%2Fca.pem&cert=%2Fp%2Fn.pem&key=%2Fp%2Fk.pem');
    expect(securedTransportUrl({ transport: 'grpc://0.0.0.0:7000?advertise=10.0.0.5', jobSecretFile: '/s' }, 'x://')).toBe('grpc://0.0.0.0:7000?advertise=10.0.0.5&secretFile=%2Fs');
    expect(securedTransportUrl({ transport: 'grpc://127.0.0.1:0' }, 'x://')).toBe('grpc://127.0.0.1:0');
    // What a node spawned by `run` gets, with the same config file read again: unchanged.
    const once = securedTransportUrl({ tls }, 'grpc://127.0.0.1:0');
    expect(securedTransportUrl({ transport: once, tls }, 'x://')).toBe(once);
    expect(() => securedTransportUrl({ transport: 'grpcs://h:1?ca=/other.pem', tls }, 'x://')).toThrow('already gives another ca=');
    expect(() => securedTransportUrl({ jobSecretFile: '/s' }, 'local://')).toThrow('use grpc:// or grpcs://');
  });

  it('explain a bad config entry', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'taskgraph.config.json'), JSON.stringify({ tls: { ca: 'a', certificate: 'b' } }));
    expect(() => resolveConfig({}, {}, dir)).toThrow('tls must be { "ca": file, "cert": file, "key": file }');
    writeFileSync(join(dir, 'taskgraph.config.json'), JSON.stringify({ jobSecretFile: 7 }));
    expect(() => resolveConfig({}, {}, dir)).toThrow('jobSecretFile must be a file path, got 7');
  });
});

describe('a job as OS processes with mutual TLS and the job secret', () => {
  let etcd: EtcdServer;
  let pki: Pki;
  beforeAll(async () => {
    etcd = await startEtcd({ name: 'cli-secure' });
    pki = makeTestPki('cli');
  }, 60_000);
  afterAll(async () => {
    await etcd?.cleanup();
    pki?.remove();
  });

  it('finishes with the exact sums over grpcs://', async () => {
    const node = pki.issue('node');
    const secret = join(pki.dir, 'job-secret');
    writeFileSync(secret, 'a job secret of at least sixteen bytes\n', { mode: 0o600 });
    const lines: string[] = [];
    const run = new JobRun({
      app: 'regression',
      tasks: 7,
      standbys: 1,
      // Eight processes start at once on a busy machine: a TTL that tolerates slow starts.
      config: {
        coordinator: `etcd://${etcd.clientAddress}?namespace=cli-secure`,
        transport: 'grpc://127.0.0.1:0',
        sessionTtlMs: 5000,
        tls: { ca: pki.ca, cert: node.cert, key: node.key },
        jobSecretFile: secret,
      },
      print: (l) => void lines.push(l),
    });
    const result = await run.run();
    expect(result.verdict?.message, lines.join('\n')).toBe('sums are exact: 0, 21, 42, 63, 84, 105, 126, 147, 168, 189, 210');
    expect(lines.join('\n')).toContain('grpcs://127.0.0.1:0');
    expect(lines.join('\n')).not.toContain('sixteen bytes');
  }, 180_000);
});
