/**
 * The etcd coordinator's options, and the `etcd://` URL that spells them:
 *
 *   etcd://host:2379,host2:2379[?namespace=tg][&tls=true][&username=u&password=p]
 *
 * Without `namespace` the keys live under DEFAULT_NAMESPACE ("taskgraph").
 *       [&ca=/path/ca.pem&cert=/path/client.pem&key=/path/client-key.pem]
 *       [&requestTimeoutMs=5000][&maxRequestBytes=1572864][&minSessionTtlMs=2000]
 */
import { readFileSync } from 'node:fs';
import type { IOptions } from 'etcd3';
import { InvalidArgumentError, assertValidKey } from '@taskgraph/api';
import type { Clock, Logger } from '@taskgraph/api';

/** etcd's default `--max-request-bytes`. */
export const DEFAULT_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/**
 * etcd's smallest lease TTL with its default timing (heartbeat 100 ms, election
 * 1000 ms): 1.5 election timeouts, rounded up to whole seconds. etcd raises
 * shorter TTLs to it without saying so.
 */
export const DEFAULT_MIN_SESSION_TTL_MS = 2000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
export const MAX_NAMESPACE_BYTES = 256;

/**
 * Options of `createEtcdCoordinator`. Everything the etcd3 client takes
 * (`hosts`, `credentials`, `auth`, `grpcOptions`, `dialTimeout`,
 * `defaultCallOptions`) passes through, except `faultHandling`: the coordinator
 * owns retries, because the client's default retry of a write whose answer was
 * lost would turn an applied create into an AlreadyExists.
 */
export interface EtcdCoordinatorOptions extends Omit<IOptions, 'faultHandling'> {
  /** Every key and lock lives under `<namespace>/`. Required. */
  readonly namespace: string;
  /** Deadline of each call to etcd. Default 5000 ms. */
  readonly requestTimeoutMs?: number;
  /** etcd's `--max-request-bytes`, from which `caps.maxValueBytes` follows. Default 1.5 MiB. */
  readonly maxRequestBytes?: number;
  /** The smallest TTL etcd grants (see DEFAULT_MIN_SESSION_TTL_MS). Default 2000 ms. */
  readonly minSessionTtlMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

const URL_HINT = 'use etcd://host:2379[,host2:2379][?namespace=<name>]';

/** The namespace of an `etcd://` URL that names none. */
export const DEFAULT_NAMESPACE = 'taskgraph';

function bad(url: string, reason: string): InvalidArgumentError {
  return new InvalidArgumentError(`etcd URL ${JSON.stringify(redact(url))} is invalid: ${reason}; ${URL_HINT}.`);
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  return url.replace(/([?&]password=)[^&#]*/i, '$1***').replace(/\/\/([^/@?#:]*):[^/@?#]*@/, '//$1:***@');
}

function positiveInt(url: string, name: string, value: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(value)) throw bad(url, `${name} must be a positive whole number, got ${JSON.stringify(value)}`);
  return Number(value);
}

function readPem(url: string, name: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw bad(url, `${name} file ${JSON.stringify(path)} cannot be read (${(err as Error).message})`);
  }
}

/** Parses an `etcd://` URL into options. Bad URLs get one InvalidArgumentError sentence. */
export function parseEtcdUrl(input: string | URL): EtcdCoordinatorOptions {
  const url = typeof input === 'string' ? input : input.href;
  // WHATWG URL cannot parse a comma-separated host list, so this is done by hand.
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?(#.*)?$/i.exec(url);
  if (!m) throw bad(url, 'it is not a URL');
  const [, scheme, authority = '', path = '', query = ''] = m;
  if (scheme?.toLowerCase() !== 'etcd') throw bad(url, `the scheme is "${String(scheme)}", not "etcd"`);
  if (path !== '' && path !== '/') throw bad(url, `it has a path (${path}); the namespace goes in ?namespace=`);

  let hostList = authority;
  let username: string | undefined;
  let password: string | undefined;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    hostList = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    username = decodeURIComponent(colon >= 0 ? userinfo.slice(0, colon) : userinfo);
    password = colon >= 0 ? decodeURIComponent(userinfo.slice(colon + 1)) : undefined;
  }
  if (hostList === '') throw bad(url, 'it names no host');
  const hosts = hostList.split(',').map((h) => {
    const hm = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(h);
    if (!hm) throw bad(url, `host ${JSON.stringify(h)} is not host[:port]`);
    const port = hm[2] === undefined ? 2379 : Number(hm[2]);
    if (port < 1 || port > 65535) throw bad(url, `port ${port} is out of range`);
    return `${hm[1] as string}:${port}`;
  });

  const params = new URLSearchParams(query);
  const known = new Set(['namespace', 'tls', 'username', 'password', 'ca', 'cert', 'key', 'requestTimeoutMs', 'maxRequestBytes', 'minSessionTtlMs']);
  for (const k of params.keys()) if (!known.has(k)) throw bad(url, `it has an unknown parameter "${k}" (known: ${[...known].join(', ')})`);

  const namespace = params.get('namespace') ?? DEFAULT_NAMESPACE;
  if (namespace === '') throw bad(url, `its namespace is empty (leave namespace= out for the default, "${DEFAULT_NAMESPACE}")`);
  checkNamespace(namespace, (reason) => bad(url, reason));

  const tlsParam = params.get('tls');
  if (tlsParam !== null && !['true', 'false', '1', '0'].includes(tlsParam)) throw bad(url, `tls must be true or false, got ${JSON.stringify(tlsParam)}`);
  const ca = params.get('ca');
  const cert = params.get('cert');
  const key = params.get('key');
  if ((cert === null) !== (key === null)) throw bad(url, 'cert and key go together');
  const tls = tlsParam === 'true' || tlsParam === '1' || ca !== null || cert !== null;
  if (tlsParam !== null && !tls && (ca !== null || cert !== null)) throw bad(url, 'tls=false contradicts ca/cert/key');

  username = params.get('username') ?? username;
  password = params.get('password') ?? password;
  if ((username === undefined) !== (password === undefined)) throw bad(url, 'username and password go together');

  const options: {
    -readonly [K in keyof EtcdCoordinatorOptions]: EtcdCoordinatorOptions[K];
  } = {
    hosts: hosts.map((h) => `${tls ? 'https' : 'http'}://${h}`),
    namespace,
  };
  if (username !== undefined && password !== undefined) options.auth = { username, password };
  if (cert !== null && ca === null) throw bad(url, 'a client cert needs ca= too (the CA that signed the server certificate)');
  if (ca !== null) {
    options.credentials = {
      rootCertificate: readPem(url, 'ca', ca),
      ...(cert !== null && key !== null ? { certChain: readPem(url, 'cert', cert), privateKey: readPem(url, 'key', key) } : {}),
    };
  }
  const requestTimeoutMs = params.get('requestTimeoutMs');
  if (requestTimeoutMs !== null) options.requestTimeoutMs = positiveInt(url, 'requestTimeoutMs', requestTimeoutMs);
  const maxRequestBytes = params.get('maxRequestBytes');
  if (maxRequestBytes !== null) options.maxRequestBytes = positiveInt(url, 'maxRequestBytes', maxRequestBytes);
  const minSessionTtlMs = params.get('minSessionTtlMs');
  if (minSessionTtlMs !== null) options.minSessionTtlMs = positiveInt(url, 'minSessionTtlMs', minSessionTtlMs);
  return options;
}

/** A namespace is a key-like path: `/`-separated, non-empty segments, no control characters. */
export function checkNamespace(namespace: unknown, fail: (reason: string) => Error = (r) => new InvalidArgumentError(`etcd namespace is invalid: ${r}`)): asserts namespace is string {
  if (typeof namespace !== 'string' || namespace === '') throw fail('a namespace is required (every key lives under one)');
  try {
    assertValidKey(namespace, MAX_NAMESPACE_BYTES, 'namespace');
  } catch (err) {
    throw fail((err as Error).message);
  }
}
