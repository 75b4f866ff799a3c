import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerCredentials, credentials } from '@grpc/grpc-js';
import { ErrorCodes, TaskGraphError } from '@taskgraph/api';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport } from '../src/index.js';
import { bytes, meta, text } from './helpers.js';

/** A throwaway self-signed certificate for 127.0.0.1, made with the openssl command. */
function selfSigned(dir: string): { key: Buffer; cert: Buffer } {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(key), cert: readFileSync(cert) };
}

describe('TLS credentials', () => {
  let dir: string;
  let secure: GrpcTransport;
  let plain: GrpcTransport;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tg-grpc-tls-'));
    const { key, cert } = selfSigned(dir);
    secure = await createGrpcTransport({
      host: '127.0.0.1',
      serverCredentials: ServerCredentials.createSsl(null, [{ private_key: key, cert_chain: cert }]),
      channelCredentials: credentials.createSsl(cert),
    });
    plain = await createGrpcTransport({ host: '127.0.0.1' });
  });
  afterAll(async () => {
    await Promise.all([secure.close(), plain.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves and calls over TLS', async () => {
    const server = await secure.listen({ methods: ['Echo'], handler: async (req) => req.payload });
    expect(text(await secure.call(server.address, 'Echo', meta(), bytes('sealed'), { timeoutMs: 10_000 }))).toBe('sealed');
    expect(secure.peerStats(server.address)?.connections).toHaveLength(1);
  });

  it('an insecure caller cannot reach a TLS server: UnavailableError', async () => {
    const server = await secure.listen({ methods: ['Echo'], handler: async (req) => req.payload });
    let caught: unknown;
    try {
      await plain.call(server.address, 'Echo', meta(), bytes('x'), { timeoutMs: 10_000 });
    } catch (err) {
      caught = err;
    }
    expect(TaskGraphError.is(caught, ErrorCodes.Unavailable)).toBe(true);
  });
});
