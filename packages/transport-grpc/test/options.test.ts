import { describe, expect, it } from 'vitest';
import { ServerCredentials } from '@grpc/grpc-js';
import { ErrorCodes } from '@taskgraph/api';
import type { TransportFactory } from '@taskgraph/api';
import { rejection } from '@taskgraph/testkit';
import { GrpcTransport, createGrpcTransport, createTransport } from '../src/index.js';
import { optionsFromUrl, resolveOptions, splitHostPort } from '../src/options.js';

describe('createGrpcTransport', () => {
  it('is the package factory core resolves by scheme', async () => {
    const factory: TransportFactory = createTransport;
    const t = await factory('grpc://0.0.0.0:0');
    expect(t).toBeInstanceOf(GrpcTransport);
    expect(t.kind).toBe('grpc');
    await t.close();
  });

  it('reads host, port and query options from the URL', () => {
    expect(
      optionsFromUrl('grpc://10.1.2.3:7000?advertise=node-1:7001&maxMessageBytes=1024&service=a.B&keepaliveTimeMs=5000&keepaliveTimeoutMs=2000&maxReconnectBackoffMs=3000&defaultGraceMs=100'),
    ).toEqual({
      host: '10.1.2.3',
      port: 7000,
      advertise: 'node-1:7001',
      maxMessageBytes: 1024,
      service: 'a.B',
      keepaliveTimeMs: 5000,
      keepaliveTimeoutMs: 2000,
      maxReconnectBackoffMs: 3000,
      defaultGraceMs: 100,
    });
    expect(optionsFromUrl('grpc://[::]:0')).toEqual({ host: '::', port: 0 });
    expect(optionsFromUrl('grpc://')).toEqual({});
    expect(optionsFromUrl(new URL('grpc://localhost'))).toEqual({ host: 'localhost' });
  });

  it('fills in defaults: loopback only, no TLS, no job credential', () => {
    const r = resolveOptions({});
    expect(r).toMatchObject({
      host: '127.0.0.1',
      mutualTls: false,
      credential: undefined,
      port: 0,
      maxMessageBytes: 16 * 1024 * 1024,
      service: 'taskgraph.v1.Task',
      keepaliveTimeMs: 30_000,
      keepaliveTimeoutMs: 10_000,
    });
  });

  const badUrls: Array<[string, RegExp]> = [
    ['not a url', /is not a URL/],
    ['http://0.0.0.0:0', /must start with grpc:\/\//],
    ['grpc://0.0.0.0:0/path', /may only have a host, a port and query options/],
    ['grpc://user@0.0.0.0:0', /may only have a host/],
    ['grpc://0.0.0.0:0?advertize=x', /unknown option "advertize"/],
    ['grpc://0.0.0.0:0?maxMessageBytes=lots', /maxMessageBytes="lots" must be a non-negative integer/],
    ['grpc://0.0.0.0:0?maxMessageBytes=0', /maxMessageBytes must be an integer in/],
    ['grpc://0.0.0.0:0?service=a..b', /service must be a dotted name/],
    ['grpc://0.0.0.0:0?service=x&service=y', /gives the option "service" twice/],
    ['grpc://0.0.0.0:0?advertise=a:b:c:99999x', /advertise/],
    ['grpc://0.0.0.0:0?advertise=host:70000', /advertise must be a host or host:port/],
    ['grpc://0.0.0.0:0?keepaliveTimeMs=0', /keepaliveTimeMs/],
  ];
  for (const [url, message] of badUrls) {
    it(`refuses ${url} with one clear sentence`, async () => {
      const err = await rejection(createGrpcTransport(url));
      expect(err.code).toBe(ErrorCodes.InvalidArgument);
      expect(err.message).toMatch(message);
      expect(err.message).not.toContain('\n');
    });
  }

  it('refuses bad option objects', async () => {
    for (const bad of [
      { port: -1 },
      { port: 70000 },
      { host: '' },
      { host: 'a b' },
      { maxMessageBytes: 2 ** 31 },
      { serverCredentials: {} as ServerCredentials },
      { channelCredentials: ServerCredentials.createInsecure() as never },
    ]) {
      expect((await rejection(createGrpcTransport(bad))).code).toBe(ErrorCodes.InvalidArgument);
    }
  });

  it('splits hosts and ports, IPv6 included', () => {
    expect(splitHostPort('a:1')).toEqual({ host: 'a', port: 1 });
    expect(splitHostPort('a')).toEqual({ host: 'a', port: undefined });
    expect(splitHostPort('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(splitHostPort('[::1]')).toEqual({ host: '::1', port: undefined });
    expect(splitHostPort('::1')).toEqual({ host: '::1', port: undefined });
    expect(splitHostPort(':80')).toBeUndefined();
    expect(splitHostPort('a:')).toBeUndefined();
    expect(splitHostPort('[::1]x')).toBeUndefined();
  });
});
