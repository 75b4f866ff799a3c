import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { ConsulCoordinator, createConsulCoordinator, createCoordinator, parseConsulUrl } from '../src/index.js';

async function invalid(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(TaskGraphError.is(err, 'INVALID_ARGUMENT')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidArgumentError');
}

describe('consul:// URLs', () => {
  it('reads host, port and every parameter', async () => {
    expect(await parseConsulUrl('consul://consul.internal:8600?namespace=tg&dc=dc2&token=abc&consistent=0&timeout=5s&wait=2m&lockDelay=1500ms')).toEqual({
      address: 'http://consul.internal:8600',
      namespace: 'tg',
      datacenter: 'dc2',
      token: 'abc',
      consistentReads: false,
      requestTimeoutMs: 5000,
      blockingWaitMs: 120_000,
      lockDelayMs: 1500,
    });
  });

  it('defaults to the local agent on 8500, and to 8501 with tls', async () => {
    expect((await parseConsulUrl('consul://')).address).toBe('http://127.0.0.1:8500');
    expect(await parseConsulUrl('consul://10.0.0.1?tls=1')).toEqual({ address: 'https://10.0.0.1:8501', tls: true });
    expect((await parseConsulUrl('consul://[::1]:8500')).address).toBe('http://[::1]:8500');
  });

  it('reads TLS files named in the URL', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'coord-consul-'));
    try {
      await writeFile(join(dir, 'ca.pem'), 'CA');
      await writeFile(join(dir, 'cert.pem'), 'CERT');
      await writeFile(join(dir, 'key.pem'), 'KEY');
      const url = `consul://consul:8501?caFile=${join(dir, 'ca.pem')}&certFile=${join(dir, 'cert.pem')}&keyFile=${join(dir, 'key.pem')}&serverName=consul.test`;
      const options = await parseConsulUrl(url);
      expect(options.address).toBe('https://consul:8501');
      const tls = options.tls as { ca: Buffer; cert: Buffer; key: Buffer; servername: string };
      expect([tls.ca.toString(), tls.cert.toString(), tls.key.toString(), tls.servername]).toEqual(['CA', 'CERT', 'KEY', 'consul.test']);
      expect(await invalid(parseConsulUrl(`consul://consul?caFile=${join(dir, 'missing.pem')}`))).toContain('cannot read the caFile');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad URLs with one clear sentence', async () => {
    expect(await invalid(parseConsulUrl('not a url'))).toContain('is not a URL');
    expect(await invalid(parseConsulUrl('etcd://localhost:2379'))).toContain('starts with consul://');
    expect(await invalid(parseConsulUrl('consul://a:8500,b:8500'))).toContain('one agent address');
    expect(await invalid(parseConsulUrl('consul://localhost/some/path'))).toContain('has no path');
    expect(await invalid(parseConsulUrl('consul://localhost?namspace=x'))).toContain('unknown consul:// parameter "namspace"');
    expect(await invalid(parseConsulUrl('consul://localhost?tls=maybe'))).toContain('must be 1 or 0');
    expect(await invalid(parseConsulUrl('consul://localhost?timeout=soon'))).toContain('must be a duration');
    expect(await invalid(parseConsulUrl('consul://user:secret@localhost'))).toContain('?token=');
    for (const message of [await invalid(parseConsulUrl('consul://localhost?namspace=x')), await invalid(parseConsulUrl('not a url'))]) {
      expect(message.trim().split(/(?<=[.!?])\s+/)).toHaveLength(1);
    }
  });

  it('createConsulCoordinator and createCoordinator take the URL; no request is made until a call', async () => {
    const c = await createConsulCoordinator('consul://127.0.0.1:1?namespace=probe');
    expect(c).toBeInstanceOf(ConsulCoordinator);
    expect(c.namespace).toBe('probe');
    await c.close();
    const d = await createCoordinator('consul://127.0.0.1:1');
    expect(d.caps.backend).toBe('consul');
    await d.close();
  });
});

describe('ConsulCoordinator options', () => {
  it('accepts host:port, http and https addresses', async () => {
    for (const address of ['127.0.0.1:8500', 'http://localhost:8500', 'https://consul.example:8501', new URL('http://127.0.0.1:8500')]) {
      const c = new ConsulCoordinator({ address });
      await c.close();
    }
  });

  it('refuses bad options before any request', async () => {
    expect(await invalid(() => new ConsulCoordinator({ address: '' }))).toContain('address');
    expect(await invalid(() => new ConsulCoordinator({ address: 'ftp://x:1' }))).toContain('http:// or https://');
    expect(await invalid(() => new ConsulCoordinator({ address: 'http://x:1/v1' }))).toContain('path');
    expect(await invalid(() => new ConsulCoordinator({ address: 'https://x:1', tls: false }))).toContain('tls is false');
    expect(await invalid(() => new ConsulCoordinator({ address: 'http://x:1', tls: true }))).toContain('use https://');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', namespace: 'a//b' }))).toContain('namespace');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', namespace: 'tg/' }))).toContain('must not end with');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', datacenter: 'dc 1' }))).toContain('datacenter');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', token: 'a\nb' }))).toContain('token');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', requestTimeoutMs: 0 }))).toContain('requestTimeoutMs');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', blockingWaitMs: 100 }))).toContain('blockingWaitMs');
    expect(await invalid(() => new ConsulCoordinator({ address: 'x:1', lockDelayMs: 61_000 }))).toContain('lockDelayMs');
  });

  it('host:port with tls options means https', async () => {
    const c = new ConsulCoordinator({ address: 'consul.test:8501', tls: { servername: 'consul.test' } });
    await c.close();
  });
});
