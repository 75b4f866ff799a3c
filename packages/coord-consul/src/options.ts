/**
 * The backend's options and the `consul://` URL that carries them.
 */
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, assertValidPrefix } from '@taskgraph/api';
import type { Clock, Logger } from '@taskgraph/api';

export interface ConsulTlsOptions {
  /** CA certificate(s) (PEM) that sign the agent's certificate. Default: Node's bundled roots. */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /** Client certificate (PEM), when the agent verifies clients (`verify_incoming`). */
  readonly cert?: string | Buffer;
  /** The client certificate's private key (PEM). */
  readonly key?: string | Buffer;
  /** The name the agent's certificate must carry, when it differs from the host in the address. */
  readonly servername?: string;
  /** Default true. Turning it off accepts any certificate: for throwaway test setups only. */
  readonly rejectUnauthorized?: boolean;
}

export interface ConsulCoordinatorOptions {
  /** The agent's HTTP(S) address: `http://127.0.0.1:8500`, `https://consul:8501`, or `host:port`. */
  readonly address: string | URL;
  /** Every key lives under `<namespace>/` in Consul's KV store. Default "taskgraph". */
  readonly namespace?: string;
  /** Talk to this datacenter (`?dc=`). Default: the agent's own. */
  readonly datacenter?: string;
  /** The ACL token, sent as `X-Consul-Token`. */
  readonly token?: string;
  /** HTTPS settings; `true` means HTTPS with the default roots. An `https:` address implies it. */
  readonly tls?: boolean | ConsulTlsOptions;
  /**
   * Default true: `get` and `list` use `?consistent` (the leader confirms it still
   * leads before answering), which the contract's linearizable reads need.
   */
  readonly consistentReads?: boolean;
  /** How long a non-blocking request may take. Default 10 s. */
  readonly requestTimeoutMs?: number;
  /** The `wait` of the blocking queries behind `watch` and `acquire`. Default 60 s. */
  readonly blockingWaitMs?: number;
  /**
   * The sessions' lock-delay. Default 0: fencing tokens and the local deadline
   * already keep an old holder from acting; see the README.
   */
  readonly lockDelayMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

export const DEFAULT_NAMESPACE = 'taskgraph';
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_BLOCKING_WAIT_MS = 60_000;
export const DEFAULT_LOCK_DELAY_MS = 0;
/** Consul caps a session's lock-delay at 60 s. */
export const MAX_LOCK_DELAY_MS = 60_000;

const URL_PARAMS = ['namespace', 'dc', 'token', 'tls', 'caFile', 'certFile', 'keyFile', 'serverName', 'consistent', 'timeout', 'wait', 'lockDelay'];

function bad(sentence: string): InvalidArgumentError {
  return new InvalidArgumentError(sentence);
}

function flag(name: string, value: string): boolean {
  if (['1', 'true', 'yes', 'on'].includes(value.toLowerCase())) return true;
  if (['0', 'false', 'no', 'off'].includes(value.toLowerCase())) return false;
  throw bad(`consul:// parameter ${name} must be 1 or 0 (true or false), got ${JSON.stringify(value)}.`);
}

/** Milliseconds from "1500", "1500ms", "10s" or "2m". */
function milliseconds(name: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value);
  if (!m) throw bad(`consul:// parameter ${name} must be a duration such as 500ms, 10s or 2m, got ${JSON.stringify(value)}.`);
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  return unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n;
}

/**
 * Reads `consul://host:8500?namespace=tg&dc=dc1&token=...&tls=1` into options.
 * TLS files are named by `caFile`, `certFile`, `keyFile` and read here.
 */
export async function parseConsulUrl(input: string | URL): Promise<ConsulCoordinatorOptions> {
  if (typeof input === 'string' && /^consul:\/\/[^/?#]*,/i.test(input)) {
    throw bad('consul:// takes one agent address (Consul clients talk to their local agent), not a list.');
  }
  let url: URL;
  try {
    url = input instanceof URL ? input : new URL(input);
  } catch {
    throw bad(`${JSON.stringify(String(input))} is not a URL; use consul://host:8500?namespace=<name>.`);
  }
  if (url.protocol !== 'consul:') throw bad(`a Consul URL starts with consul://, got ${JSON.stringify(url.protocol)}.`);
  if (url.username || url.password) throw bad('put the Consul ACL token in ?token=, not in the URL’s user part.');
  if (url.hostname.includes(',')) throw bad('consul:// takes one agent address (Consul clients talk to their local agent), not a list.');
  if (url.pathname !== '' && url.pathname !== '/') throw bad(`a consul:// URL has no path; use ?namespace= for the key prefix (got ${JSON.stringify(url.pathname)}).`);
  for (const name of url.searchParams.keys()) {
    if (!URL_PARAMS.includes(name)) throw bad(`unknown consul:// parameter ${JSON.stringify(name)}; known ones are ${URL_PARAMS.join(', ')}.`);
  }
  const p = url.searchParams;
  const tlsFlag = p.has('tls') ? flag('tls', p.get('tls') ?? '') : p.has('caFile') || p.has('certFile') || p.has('keyFile');
  const tls: { -readonly [K in keyof ConsulTlsOptions]: ConsulTlsOptions[K] } = {};
  const read = async (param: string): Promise<Buffer> => {
    const path = p.get(param) ?? '';
    try {
      return await readFile(path);
    } catch (err) {
      throw bad(`cannot read the ${param} ${JSON.stringify(path)} named in the consul:// URL: ${(err as Error).message}.`);
    }
  };
  if (p.has('caFile')) tls.ca = await read('caFile');
  if (p.has('certFile')) tls.cert = await read('certFile');
  if (p.has('keyFile')) tls.key = await read('keyFile');
  if (p.has('serverName')) tls.servername = p.get('serverName') ?? '';
  const host = url.hostname === '' ? '127.0.0.1' : url.hostname;
  const port = url.port === '' ? (tlsFlag ? '8501' : '8500') : url.port;
  const options: { -readonly [K in keyof ConsulCoordinatorOptions]: ConsulCoordinatorOptions[K] } = {
    address: `${tlsFlag ? 'https' : 'http'}://${host}:${port}`,
  };
  if (tlsFlag) options.tls = Object.keys(tls).length > 0 ? tls : true;
  const namespace = p.get('namespace');
  if (namespace !== null) options.namespace = namespace;
  const dc = p.get('dc');
  if (dc !== null) options.datacenter = dc;
  const token = p.get('token');
  if (token !== null) options.token = token;
  if (p.has('consistent')) options.consistentReads = flag('consistent', p.get('consistent') ?? '');
  if (p.has('timeout')) options.requestTimeoutMs = milliseconds('timeout', p.get('timeout') ?? '');
  if (p.has('wait')) options.blockingWaitMs = milliseconds('wait', p.get('wait') ?? '');
  if (p.has('lockDelay')) options.lockDelayMs = milliseconds('lockDelay', p.get('lockDelay') ?? '');
  return options;
}

export interface ResolvedOptions {
  readonly base: URL;
  readonly namespace: string;
  readonly datacenter: string | undefined;
  readonly token: string | undefined;
  readonly tls: ConsulTlsOptions | undefined;
  readonly consistentReads: boolean;
  readonly requestTimeoutMs: number;
  readonly blockingWaitMs: number;
  readonly lockDelayMs: number;
}

function positive(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw bad(`Consul option ${name} must be a number from ${min} to ${max}, got ${String(value)}.`);
  }
  return value;
}

/** Checks the options and fills in the defaults. */
export function resolveOptions(options: ConsulCoordinatorOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw bad('createConsulCoordinator needs a consul:// URL or an options object.');
  const raw = options.address instanceof URL ? options.address.href : options.address;
  if (typeof raw !== 'string' || raw === '') throw bad('Consul option address must be the agent address, such as http://127.0.0.1:8500.');
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `${options.tls ? 'https' : 'http'}://${raw}`;
  let base: URL;
  try {
    base = new URL(withScheme);
  } catch {
    throw bad(`Consul address ${JSON.stringify(raw)} is not a host:port or http(s) URL.`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw bad(`Consul address ${JSON.stringify(raw)} must use http:// or https:// (or be host:port).`);
  }
  if (base.pathname !== '/' || base.search !== '') throw bad(`Consul address ${JSON.stringify(raw)} must not have a path or query.`);
  if (base.port === '') base.port = base.protocol === 'https:' ? '8501' : '8500';
  if (options.tls === false && base.protocol === 'https:') throw bad('Consul option tls is false but the address is https://.');
  const tls = base.protocol === 'https:' ? (typeof options.tls === 'object' ? options.tls : {}) : undefined;
  if (options.tls && base.protocol === 'http:' && /^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    throw bad(`Consul option tls is set but the address ${JSON.stringify(raw)} is http://; use https://.`);
  }
  const namespace = options.namespace ?? DEFAULT_NAMESPACE;
  try {
    assertValidPrefix(namespace, 256);
  } catch (err) {
    throw bad(`Consul namespace ${JSON.stringify(namespace)} is not usable as a key prefix: ${(err as Error).message}.`);
  }
  if (namespace.endsWith('/')) throw bad(`Consul namespace ${JSON.stringify(namespace)} must not end with "/".`);
  if (options.token !== undefined && (typeof options.token !== 'string' || /[\r\n]/.test(options.token))) {
    throw bad('Consul option token must be a string without line breaks.');
  }
  if (options.datacenter !== undefined && (typeof options.datacenter !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(options.datacenter))) {
    throw bad(`Consul datacenter ${JSON.stringify(options.datacenter)} must be letters, digits, "_", "-" or ".".`);
  }
  return {
    base,
    namespace,
    datacenter: options.datacenter === '' ? undefined : options.datacenter,
    token: options.token === '' ? undefined : options.token,
    tls,
    consistentReads: options.consistentReads ?? true,
    requestTimeoutMs: positive('requestTimeoutMs', options.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 1, 600_000),
    blockingWaitMs: positive('blockingWaitMs', options.blockingWaitMs, DEFAULT_BLOCKING_WAIT_MS, 1000, 600_000),
    lockDelayMs: positive('lockDelayMs', options.lockDelayMs, DEFAULT_LOCK_DELAY_MS, 0, MAX_LOCK_DELAY_MS),
  };
}
