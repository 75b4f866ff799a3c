/**
 * The transport's configuration: the `grpc://host:port?...` (or `grpcs://`) URL, the
 * environment, and the options object, all resolved into one checked
 * `ResolvedOptions`, so that a bad value fails with one clear sentence before any
 * socket is opened.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { readFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { ChannelCredentials, ServerCredentials } from '@grpc/grpc-js';
import { JobCredential } from './auth.js';

export const DEFAULT_SERVICE = 'taskgraph.v1.Task';
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_KEEPALIVE_TIME_MS = 30_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_RECONNECT_BACKOFF_MS = 5_000;
export const DEFAULT_GRACE_MS = 5_000;
/** The environment variable naming the host other nodes dial when listening on a wildcard address. */
export const ADVERTISE_HOST_ENV = 'TASKGRAPH_ADVERTISE_HOST';
/** The default listen host: nothing off this machine reaches a node unless the user says so. */
export const DEFAULT_HOST = '127.0.0.1';
/**
 * The environment a `grpc://`/`grpcs://` URL falls back on. The TLS ones name PEM
 * files; the job secret is given as a file (preferred) or as the value itself, so it
 * never has to appear in a URL, a config file or a command line.
 */
export const SecurityEnv = {
  ca: 'TASKGRAPH_TLS_CA',
  cert: 'TASKGRAPH_TLS_CERT',
  key: 'TASKGRAPH_TLS_KEY',
  secretFile: 'TASKGRAPH_JOB_SECRET_FILE',
  secret: 'TASKGRAPH_JOB_SECRET',
} as const;

/** The job's TLS material, PEM: every node serves with `cert` and calls with it (mutual TLS). */
export interface GrpcTlsOptions {
  /** The job CA: servers accept only clients with a certificate it signed, and clients only such servers. */
  readonly ca: string | Uint8Array;
  /** This node's certificate chain, signed by `ca`. */
  readonly cert: string | Uint8Array;
  /** This node's private key. */
  readonly key: string | Uint8Array;
}

/** gRPC's own limit: a message length travels in 4 bytes, and grpc-js keeps it a signed 32-bit int. */
const MAX_MESSAGE_LIMIT = 2 ** 31 - 1;

export interface GrpcTransportOptions {
  /** The host to listen on (default "127.0.0.1"; "0.0.0.0" for every IPv4 interface, "::" for IPv6 too). */
  readonly host?: string;
  /** The port to listen on; 0 (the default) picks a free port per server. */
  readonly port?: number;
  /**
   * The host, or host:port, other nodes dial when this transport listens on a wildcard
   * address ("0.0.0.0" or "::"). Without a port the bound port is used. Default: the
   * TASKGRAPH_ADVERTISE_HOST environment variable, else "127.0.0.1".
   */
  readonly advertise?: string;
  /** The largest request or response payload, in bytes, both ways (default 16 MiB). */
  readonly maxMessageBytes?: number;
  /** The fully qualified gRPC service the task methods live in (default "taskgraph.v1.Task"). */
  readonly service?: string;
  /** How often a client pings an open connection (default 30 s); servers accept pings this often. */
  readonly keepaliveTimeMs?: number;
  /** How long a client waits for a ping's answer before it drops the connection (default 10 s). */
  readonly keepaliveTimeoutMs?: number;
  /** The longest wait between attempts to reconnect to a peer that refused (default 5 s). */
  readonly maxReconnectBackoffMs?: number;
  /** Default grace for `TransportServer.close()` without `graceMs` (default 5 s). */
  readonly defaultGraceMs?: number;
  /**
   * How this transport's calls travel: "stream" (the default) multiplexes every call to
   * a peer onto one long-lived bidirectional gRPC stream; "unary" makes each call its
   * own unary gRPC call (one HTTP/2 stream per call), as a foreign gRPC client does.
   * Servers always accept both.
   */
  readonly dataPlane?: 'stream' | 'unary';
  /** Mutual TLS with a job CA (what `grpcs://` sets up). Not with serverCredentials/channelCredentials. */
  readonly tls?: GrpcTlsOptions;
  /**
   * The job secret (at least 16 bytes; a string is taken as UTF-8): every request then
   * carries an HMAC proving its caller holds it, and every answer one proving the same
   * of the server. With or without TLS.
   */
  readonly secret?: string | Uint8Array;
  /** The servers' credentials (default insecure). Give `channelCredentials` to match. */
  readonly serverCredentials?: ServerCredentials;
  /** The clients' credentials (default insecure). */
  readonly channelCredentials?: ChannelCredentials;
  readonly logger?: Logger;
}

export interface ResolvedOptions {
  readonly host: string;
  readonly port: number;
  readonly advertise: string | undefined;
  readonly maxMessageBytes: number;
  readonly service: string;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly maxReconnectBackoffMs: number;
  readonly defaultGraceMs: number;
  readonly dataPlane: 'stream' | 'unary';
  readonly serverCredentials: ServerCredentials;
  readonly channelCredentials: ChannelCredentials;
  /** True when the server accepts only clients with a certificate from the job CA. */
  readonly mutualTls: boolean;
  /** The job credential, when a secret was given. */
  readonly credential: JobCredential | undefined;
  readonly logger: Logger;
}

const SERVICE_NAME = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/** The options a `grpc://` URL's query may carry, with how each is read. */
const QUERY_OPTIONS = {
  advertise: 'string',
  maxMessageBytes: 'integer',
  service: 'string',
  keepaliveTimeMs: 'integer',
  keepaliveTimeoutMs: 'integer',
  maxReconnectBackoffMs: 'integer',
  defaultGraceMs: 'integer',
  dataPlane: 'string',
} as const;

type QueryOption = keyof typeof QUERY_OPTIONS;

const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};

/** The query options that name files, read by `optionsFromUrl`. */
const FILE_OPTIONS = ['ca', 'cert', 'key', 'secretFile'] as const;
type FileOption = (typeof FILE_OPTIONS)[number];

/**
 * Parses `grpc://host:port?advertise=...` or `grpcs://host:port?ca=...&cert=...&key=...`
 * into options, falling back on the environment (`SecurityEnv`) for the TLS files and
 * the job secret. `grpcs://` is mutual TLS with the job CA; a `grpc://` URL never
 * turns TLS on from the environment, and says so rather than run in the clear.
 */
export function optionsFromUrl(input: string | URL, env: NodeJS.ProcessEnv = process.env): GrpcTransportOptions {
  const text = String(input);
  let url: URL;
  try {
    url = new URL(text);
  } catch (err) {
    throw new InvalidArgumentError(
      `gRPC transport URL ${JSON.stringify(text)} is not a URL: write it like grpc://127.0.0.1:0 or grpcs://0.0.0.0:0?advertise=10.0.0.5`,
      { cause: err },
    );
  }
  if (url.protocol !== 'grpc:' && url.protocol !== 'grpcs:') {
    throw new InvalidArgumentError(`gRPC transport URL ${JSON.stringify(text)} must start with grpc:// or grpcs:// (got "${url.protocol}//")`);
  }
  if (url.username !== '' || url.password !== '' || (url.pathname !== '' && url.pathname !== '/') || url.hash !== '') {
    throw new InvalidArgumentError(
      `gRPC transport URL ${JSON.stringify(text)} may only have a host, a port and query options, like grpc://0.0.0.0:0?advertise=10.0.0.5`,
    );
  }
  const out: Record<string, unknown> = {};
  const files: Partial<Record<FileOption, string>> = {};
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (host !== '') out['host'] = host;
  if (url.port !== '') out['port'] = Number(url.port);
  for (const [key, value] of url.searchParams) {
    const isFile = (FILE_OPTIONS as readonly string[]).includes(key);
    if (!(key in QUERY_OPTIONS) && !isFile) {
      throw new InvalidArgumentError(
        `gRPC transport URL ${JSON.stringify(text)} has the unknown option "${key}": known are ${[...Object.keys(QUERY_OPTIONS), ...FILE_OPTIONS].join(', ')}`,
      );
    }
    if (key in out || key in files) throw new InvalidArgumentError(`gRPC transport URL ${JSON.stringify(text)} gives the option "${key}" twice`);
    if (isFile) {
      if (value === '') throw new InvalidArgumentError(`gRPC transport URL option ${key} must name a file`);
      files[key as FileOption] = value;
    } else if (QUERY_OPTIONS[key as QueryOption] === 'integer') {
      if (!/^\d+$/.test(value)) {
        throw new InvalidArgumentError(`gRPC transport URL option ${key}=${JSON.stringify(value)} must be a non-negative integer`);
      }
      out[key] = Number(value);
    } else {
      out[key] = value;
    }
  }
  const fromEnv = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const tlsFiles = {
    ca: files.ca ?? fromEnv(SecurityEnv.ca),
    cert: files.cert ?? fromEnv(SecurityEnv.cert),
    key: files.key ?? fromEnv(SecurityEnv.key),
  };
  if (url.protocol === 'grpcs:') {
    const missing = (['ca', 'cert', 'key'] as const).filter((k) => tlsFiles[k] === undefined);
    if (missing.length > 0) {
      throw new InvalidArgumentError(
        `gRPC transport URL ${JSON.stringify(text)} is grpcs:// but has no ${missing.join(', ')}: give the job CA, this node's certificate and key ` +
          `as ?ca=&cert=&key= files or in ${SecurityEnv.ca}, ${SecurityEnv.cert}, ${SecurityEnv.key}`,
      );
    }
    out['tls'] = { ca: readPem('ca', tlsFiles.ca), cert: readPem('cert', tlsFiles.cert), key: readPem('key', tlsFiles.key) };
  } else if (files.ca !== undefined || files.cert !== undefined || files.key !== undefined) {
    throw new InvalidArgumentError(`gRPC transport URL ${JSON.stringify(text)} gives TLS files: write it grpcs:// to use them`);
  } else if (tlsFiles.ca !== undefined || tlsFiles.cert !== undefined || tlsFiles.key !== undefined) {
    throw new InvalidArgumentError(
      `${SecurityEnv.ca}/${SecurityEnv.cert}/${SecurityEnv.key} are set but the transport URL is grpc://: write it grpcs:// to use TLS`,
    );
  }
  const secretFile = files.secretFile ?? fromEnv(SecurityEnv.secretFile);
  if (secretFile !== undefined) out['secret'] = readSecret(secretFile);
  else if (fromEnv(SecurityEnv.secret) !== undefined) out['secret'] = fromEnv(SecurityEnv.secret);
  return out as GrpcTransportOptions;
}

function readFile(what: string, path: string | undefined): Buffer {
  try {
    return readFileSync(path ?? '');
  } catch (err) {
    // The error names the file, never its content.
    throw new InvalidArgumentError(`gRPC transport ${what} file ${JSON.stringify(path)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function readPem(what: string, path: string | undefined): Buffer {
  const pem = readFile(what, path);
  if (!pem.includes('-----BEGIN ')) throw new InvalidArgumentError(`gRPC transport ${what} file ${JSON.stringify(path)} is not PEM`);
  return pem;
}

/** A secret file's content, without the line end an editor or `echo` adds. */
function readSecret(path: string): Uint8Array {
  const raw = readFile('job secret', path);
  let end = raw.length;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  return raw.subarray(0, end);
}

function integerIn(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`gRPC transport option ${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

/** Checks the options and fills in the defaults. */
export function resolveOptions(options: GrpcTransportOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('gRPC transport options must be an object or a grpc:// URL');
  }
  const host = options.host ?? DEFAULT_HOST;
  if (typeof host !== 'string' || host === '' || /[\s/[\]]/.test(host)) {
    throw new InvalidArgumentError(`gRPC transport option host must be a host name or IP address, got ${JSON.stringify(host)}`);
  }
  const service = options.service ?? DEFAULT_SERVICE;
  if (typeof service !== 'string' || !SERVICE_NAME.test(service)) {
    throw new InvalidArgumentError(
      `gRPC transport option service must be a dotted name like "taskgraph.v1.Task", got ${JSON.stringify(service)}`,
    );
  }
  const advertise = options.advertise;
  if (advertise !== undefined) checkAdvertise(advertise);
  if (options.serverCredentials !== undefined && !(options.serverCredentials instanceof ServerCredentials)) {
    throw new InvalidArgumentError('gRPC transport option serverCredentials must come from grpc.ServerCredentials');
  }
  if (options.channelCredentials !== undefined && !(options.channelCredentials instanceof ChannelCredentials)) {
    throw new InvalidArgumentError('gRPC transport option channelCredentials must come from grpc.credentials');
  }
  const security = resolveSecurity(options);
  const keepaliveTimeMs = integerIn(options.keepaliveTimeMs ?? DEFAULT_KEEPALIVE_TIME_MS, 'keepaliveTimeMs', 1, 2 ** 31 - 1);
  return {
    host,
    port: integerIn(options.port ?? 0, 'port', 0, 65535),
    advertise,
    maxMessageBytes: integerIn(options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, 'maxMessageBytes', 1, MAX_MESSAGE_LIMIT),
    service,
    keepaliveTimeMs,
    keepaliveTimeoutMs: integerIn(options.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS, 'keepaliveTimeoutMs', 1, 2 ** 31 - 1),
    maxReconnectBackoffMs: integerIn(
      options.maxReconnectBackoffMs ?? DEFAULT_MAX_RECONNECT_BACKOFF_MS,
      'maxReconnectBackoffMs',
      100,
      2 ** 31 - 1,
    ),
    defaultGraceMs: integerIn(options.defaultGraceMs ?? DEFAULT_GRACE_MS, 'defaultGraceMs', 0, 2 ** 31 - 1),
    dataPlane: dataPlaneOf(options.dataPlane),
    ...security,
    logger: options.logger ?? silentLogger,
  };
}

type Security = Pick<ResolvedOptions, 'serverCredentials' | 'channelCredentials' | 'mutualTls' | 'credential'>;

function pemBytes(value: unknown, name: string): Buffer {
  if (typeof value === 'string' && value.includes('-----BEGIN ')) return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array && value.byteLength > 0) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new InvalidArgumentError(`gRPC transport option tls.${name} must be PEM text or bytes`);
}

function resolveSecurity(options: GrpcTransportOptions): Security {
  let secret: Uint8Array | undefined;
  if (options.secret !== undefined) {
    if (typeof options.secret === 'string') secret = Buffer.from(options.secret, 'utf8');
    else if (options.secret instanceof Uint8Array) secret = options.secret;
    else throw new InvalidArgumentError('gRPC transport option secret must be a string or bytes');
  }
  if (options.tls === undefined) {
    return {
      serverCredentials: options.serverCredentials ?? ServerCredentials.createInsecure(),
      channelCredentials: options.channelCredentials ?? ChannelCredentials.createInsecure(),
      mutualTls: false,
      // With custom credentials the payloads may or may not be protected: sign them to be sure.
      credential: secret === undefined ? undefined : new JobCredential(secret, true),
    };
  }
  if (typeof options.tls !== 'object' || options.tls === null) throw new InvalidArgumentError('gRPC transport option tls must be { ca, cert, key }');
  if (options.serverCredentials !== undefined || options.channelCredentials !== undefined) {
    throw new InvalidArgumentError('gRPC transport options tls and serverCredentials/channelCredentials exclude each other');
  }
  const ca = pemBytes(options.tls.ca, 'ca');
  const cert = pemBytes(options.tls.cert, 'cert');
  const key = pemBytes(options.tls.key, 'key');
  let serverCredentials: ServerCredentials;
  let channelCredentials: ChannelCredentials;
  try {
    serverCredentials = ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], true);
    // The job CA is the identity: any certificate it signed is a node of the job. Host
    // names prove nothing here (addresses come from the store, which is what a forger
    // writes), so the name check is off and the chain check does the work.
    channelCredentials = ChannelCredentials.createSsl(ca, key, cert, { checkServerIdentity: () => undefined });
  } catch (err) {
    throw new InvalidArgumentError(`gRPC transport TLS material is unusable: ${(err as Error).message}`, { cause: err });
  }
  return { serverCredentials, channelCredentials, mutualTls: true, credential: secret === undefined ? undefined : new JobCredential(secret, false) };
}

function dataPlaneOf(value: unknown): 'stream' | 'unary' {
  if (value === undefined || value === 'stream') return 'stream';
  if (value === 'unary') return 'unary';
  throw new InvalidArgumentError(`gRPC transport option dataPlane must be "stream" or "unary", got ${JSON.stringify(value)}`);
}

function checkAdvertise(advertise: unknown): void {
  if (typeof advertise !== 'string' || /[\s/]/.test(advertise) || splitHostPort(advertise) === undefined) {
    throw new InvalidArgumentError(
      `gRPC transport option advertise must be a host or host:port other nodes can dial, got ${JSON.stringify(advertise)}`,
    );
  }
}

/**
 * Splits "host", "host:port", "[v6]" or "[v6]:port". A bare IPv6 literal ("::1") is a
 * host without a port. Returns undefined when the text is none of these.
 */
export function splitHostPort(text: string): { host: string; port: number | undefined } | undefined {
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end < 0) return undefined;
    const host = text.slice(1, end);
    const rest = text.slice(end + 1);
    if (!isIPv6(host)) return undefined;
    if (rest === '') return { host, port: undefined };
    const port = parsePort(rest.startsWith(':') ? rest.slice(1) : undefined);
    return port === undefined ? undefined : { host, port };
  }
  const colons = text.split(':').length - 1;
  if (colons === 0) return text === '' ? undefined : { host: text, port: undefined };
  if (colons > 1) return isIPv6(text) ? { host: text, port: undefined } : undefined;
  const at = text.indexOf(':');
  const host = text.slice(0, at);
  const port = parsePort(text.slice(at + 1));
  return host === '' || port === undefined ? undefined : { host, port };
}

function parsePort(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

/** "host:port", with brackets around an IPv6 literal. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** True for the addresses that mean "every interface". */
export function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]' || host === '0:0:0:0:0:0:0:0';
}
