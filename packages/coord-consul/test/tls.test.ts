import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejection } from '@taskgraph/testkit';
import type { ConsulEmulator } from '@taskgraph/emulators';
import { createConsulCoordinator } from '../src/index.js';
import type { ConsulCoordinator } from '../src/index.js';
import { bytes, emulator, freshNamespace, text } from './helpers.js';

const fixture = (name: string): Promise<Buffer> => readFile(fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)));
const fixturePath = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

let ca: Buffer;
let consul: ConsulEmulator;
let mutual: ConsulEmulator;

beforeAll(async () => {
  ca = await fixture('ca.crt');
  const tls = { key: await fixture('server.key'), cert: await fixture('server.crt') };
  consul = await emulator({ tls });
  mutual = await emulator({ tls: { ...tls, ca, requireClientCert: true } });
});

afterAll(async () => {
  await consul.close();
  await mutual.close();
});

async function roundTrip(c: ConsulCoordinator): Promise<string> {
  try {
    await c.create('tls/k', bytes('over TLS'));
    return text((await c.get('tls/k'))!.value);
  } finally {
    await c.close();
  }
}

describe('Consul over TLS', () => {
  it('verifies the agent against the CA given, by the address’s name or by servername', async () => {
    expect(consul.url.startsWith('https://')).toBe(true);
    const byIp = await createConsulCoordinator({ address: consul.url, namespace: freshNamespace(), tls: { ca } });
    expect(await roundTrip(byIp)).toBe('over TLS');
    const byName = await createConsulCoordinator({ address: `127.0.0.1:${consul.port}`, namespace: freshNamespace(), tls: { ca, servername: 'consul.test' } });
    expect(await roundTrip(byName)).toBe('over TLS');
  });

  it('takes the CA, client certificate and key from a consul:// URL', async () => {
    const url = `consul://127.0.0.1:${mutual.port}?namespace=${freshNamespace()}&caFile=${fixturePath('ca.crt')}&certFile=${fixturePath('client.crt')}&keyFile=${fixturePath('client.key')}&serverName=consul.test`;
    expect(await roundTrip(await createConsulCoordinator(url))).toBe('over TLS');
  });

  it('refuses an agent whose certificate the CA did not sign, and a wrong servername: UnavailableError saying TLS', async () => {
    const untrusted = await createConsulCoordinator({ address: consul.url, namespace: freshNamespace(), tls: true });
    const err = await rejection(untrusted.get('k'));
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toMatch(/TLS|certificate/);
    await untrusted.close();
    const wrongName = await createConsulCoordinator({ address: consul.url, namespace: freshNamespace(), tls: { ca, servername: 'other.test' } });
    expect((await rejection(wrongName.get('k'))).code).toBe('UNAVAILABLE');
    await wrongName.close();
  });

  it('an agent that verifies clients refuses one without a certificate', async () => {
    const anonymous = await createConsulCoordinator({ address: mutual.url, namespace: freshNamespace(), tls: { ca } });
    expect((await rejection(anonymous.get('k'))).code).toBe('UNAVAILABLE');
    await anonymous.close();
    const known = await createConsulCoordinator({
      address: mutual.url,
      namespace: freshNamespace(),
      tls: { ca, cert: await fixture('client.crt'), key: await fixture('client.key') },
    });
    expect(await roundTrip(known)).toBe('over TLS');
  });
});
