/**
 * The transport's configuration: the `grpc://host:port?...` URL and the options
 * object, both resolved into one checked `ResolvedOptions`, so that a bad value
 * fails with one clear sentence before any socket is opened.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import type { Logger } from '@taskgraph/api';
import { isIPv6 } from 'node:net';
import { ChannelCredentials, ServerCredentials } from '@grpc/grpc-js';

export const DEFAULT_SERVICE = 'taskgraph.v1.Task';
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_KEEPALIVE_TIME_MS = 30_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_RECONNECT_BACKOFF_MS = 5_000;
export const DEFAULT_GRACE_MS = 5_000;
/** The environment variable naming the host other nodes dial when listening on a wildcard address. */
export const ADVERTISE_HOST_ENV = 'TASKGRAPH_ADVERTISE_HOST';

/** gRPC's own limit: a message length travels in 4 bytes, and grpc-js keeps it a signed 32-bit int. */
const MAX_MESSAGE_LIMIT = 2 ** 31 - 1;

export interface GrpcTransportOptions {
  /** The host to listen on (default "0.0.0.0": every IPv4 interface; "::" for IPv6 too). */
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
  readonly serverCredentials: ServerCredentials;
  readonly channelCredentials: ChannelCredentials;
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
} as const;

type QueryOption = keyof typeof QUERY_OPTIONS;

const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};

/** Parses `grpc://host:port?advertise=...&maxMessageBytes=...` into options. */
export function optionsFromUrl(input: string | URL): GrpcTransportOptions {
  const text = String(input);
  let url: URL;
  try {
    url = new URL(text);
  } catch (err) {
    throw new InvalidArgumentError(
      `gRPC transport URL ${JSON.stringify(text)} is not a URL: write it like grpc://0.0.0.0:0?advertise=10.0.0.5`,
      { cause: err },
    );
  }
  if (url.protocol !== 'grpc:') {
    throw new InvalidArgumentError(`gRPC transport URL ${JSON.stringify(text)} must start with grpc:// (got "${url.protocol}//")`);
  }
  if (url.username !== '' || url.password !== '' || (url.pathname !== '' && url.pathname !== '/') || url.hash !== '') {
    throw new InvalidArgumentError(
      `gRPC transport URL ${JSON.stringify(text)} may only have a host, a port and query options, like grpc://0.0.0.0:0?advertise=10.0.0.5`,
    );
  }
  const out: Record<string, unknown> = {};
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (host !== '') out['host'] = host;
  if (url.port !== '') out['port'] = Number(url.port);
  for (const [key, value] of url.searchParams) {
    if (!(key in QUERY_OPTIONS)) {
      throw new InvalidArgumentError(
        `gRPC transport URL ${JSON.stringify(text)} has the unknown option "${key}": known are ${Object.keys(QUERY_OPTIONS).join(', ')}`,
      );
    }
    if (key in out) throw new InvalidArgumentError(`gRPC transport URL ${JSON.stringify(text)} gives the option "${key}" twice`);
    if (QUERY_OPTIONS[key as QueryOption] === 'integer') {
      if (!/^\d+$/.test(value)) {
        throw new InvalidArgumentError(`gRPC transport URL option ${key}=${JSON.stringify(value)} must be a non-negative integer`);
      }
      out[key] = Number(value);
    } else {
      out[key] = value;
    }
  }
  return out as GrpcTransportOptions;
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
  const host = options.host ?? '0.0.0.0';
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
    serverCredentials: options.serverCredentials ?? ServerCredentials.createInsecure(),
    channelCredentials: options.channelCredentials ?? ChannelCredentials.createInsecure(),
    logger: options.logger ?? silentLogger,
  };
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
