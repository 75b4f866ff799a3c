import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, expect } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { createCoordinator, createEtcdCoordinator, parseEtcdUrl, DEFAULT_NAMESPACE } from '../src/index.js';

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(TaskGraphError.is(err, 'INVALID_ARGUMENT')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidArgumentError');
}

describe('etcd:// URLs', () => {
  it('parses hosts, the namespace, credentials and limits', () => {
    expect(parseEtcdUrl('etcd://h1:2379,h2:2380,[::1]:2381,h4?namespace=tg')).toEqual({
      hosts: ['http://h1:2379', 'http://h2:2380', 'http://[::1]:2381', 'http://h4:2379'],
      namespace: 'tg',
    });
    expect(parseEtcdUrl('etcd://h1?namespace=apps/tg&tls=true&username=u&password=p%40ss&requestTimeoutMs=2500&maxRequestBytes=4194304&minSessionTtlMs=1000')).toEqual({
      hosts: ['https://h1:2379'],
      namespace: 'apps/tg',
      auth: { username: 'u', password: 'p@ss' },
      requestTimeoutMs: 2500,
      maxRequestBytes: 4194304,
      minSessionTtlMs: 1000,
    });
    expect(parseEtcdUrl(new URL('etcd://user:secret@h1:2379/?namespace=tg'))).toMatchObject({ auth: { username: 'user', password: 'secret' } });
    // Without a namespace, the default one.
    expect(parseEtcdUrl('etcd://h1:2379')).toEqual({ hosts: ['http://h1:2379'], namespace: DEFAULT_NAMESPACE });
    expect(DEFAULT_NAMESPACE).toBe('taskgraph');
  });

  it('reads TLS files named in the URL', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tg-etcd-pem-'));
    try {
      for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(join(dir, f), f);
      const o = parseEtcdUrl(`etcd://h1:2379?namespace=tg&ca=${dir}/ca.pem&cert=${dir}/cert.pem&key=${dir}/key.pem`);
      expect(o.hosts).toEqual(['https://h1:2379']);
      expect(o.credentials?.rootCertificate.toString()).toBe('ca.pem');
      expect(o.credentials?.certChain?.toString()).toBe('cert.pem');
      expect(o.credentials?.privateKey?.toString()).toBe('key.pem');
      expect(invalid(() => parseEtcdUrl(`etcd://h1?namespace=tg&ca=${dir}/missing.pem`))).toMatch(/cannot be read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects bad URLs with one sentence that says how to fix them', () => {
    const cases: [string, RegExp][] = [
      ['http://h1:2379?namespace=tg', /scheme is "http"/],
      ['etcd://h1:2379?namespace=', /namespace is empty/],
      ['etcd://?namespace=tg', /names no host/],
      ['etcd://h1:99999?namespace=tg', /out of range/],
      ['etcd://h 1?namespace=tg', /not host\[:port\]/],
      ['etcd://h1/tg', /has a path/],
      ['etcd://h1?namespace=tg&colour=red', /unknown parameter "colour"/],
      ['etcd://h1?namespace=a//b', /empty segment/],
      ['etcd://h1?namespace=tg&tls=maybe', /tls must be true or false/],
      ['etcd://h1?namespace=tg&username=u', /username and password go together/],
      ['etcd://h1?namespace=tg&cert=/c.pem', /cert and key go together/],
      ['etcd://h1?namespace=tg&requestTimeoutMs=-1', /positive whole number/],
      ['not a url', /not a URL/],
    ];
    for (const [url, why] of cases) {
      const message = invalid(() => parseEtcdUrl(url));
      expect(message, url).toMatch(why);
      expect(message, url).toMatch(/use etcd:\/\/host:2379/);
    }
  });

  it('never repeats a password in an error', () => {
    expect(invalid(() => parseEtcdUrl('etcd://h1?namespace=tg&password=hunter2&colour=x'))).not.toMatch(/hunter2/);
    expect(invalid(() => parseEtcdUrl('etcd://me:hunter2@h1?colour=x'))).not.toMatch(/hunter2/);
  });

  it('the factories reject bad URLs and options the same way', async () => {
    await expect(createCoordinator('etcd://h1:2379?namespace=')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(createEtcdCoordinator({ hosts: [], namespace: 'tg' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(createEtcdCoordinator({ hosts: ['h1:2379'], namespace: '' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(createEtcdCoordinator({ hosts: ['h1:2379'], namespace: 'tg', requestTimeoutMs: 0 })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });

  it('creates a coordinator without contacting etcd, and closes it', async () => {
    const c = await createCoordinator('etcd://127.0.0.1:1?namespace=tg');
    expect(c.caps.backend).toBe('etcd');
    await c.close();
  });
});
