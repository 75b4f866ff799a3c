/**
 * Configuration from flags, environment and a config file, in that order of
 * precedence, validated with errors that say what to fix.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError } from '@taskgraph/api';

export interface CliConfig {
  readonly coordinator?: string;
  readonly transport?: string;
  readonly sessionTtlMs?: number;
  readonly logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Modules (paths or package names) that register more URL schemes; loaded before any URL is used. */
  readonly plugins?: readonly string[];
  /** The data plane's mutual TLS: the job CA, this node's certificate and key (PEM files, absolute paths). */
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string };
  /** A file holding the job secret (absolute path). */
  readonly jobSecretFile?: string;
}

const KEYS = ['coordinator', 'transport', 'sessionTtlMs', 'logLevel', 'plugins', 'tls', 'jobSecretFile'] as const;
const TLS_KEYS = ['ca', 'cert', 'key'] as const;
const LEVELS = ['debug', 'info', 'warn', 'error', 'silent'];

export const DEFAULT_CONFIG_FILE = 'taskgraph.config.json';

/** Reads a config file: `--config path`, or ./taskgraph.config.json when it exists. */
export function readConfigFile(path: string | undefined, cwd = process.cwd()): CliConfig {
  const file = path ? resolve(cwd, path) : resolve(cwd, DEFAULT_CONFIG_FILE);
  if (!existsSync(file)) {
    if (path) throw new InvalidArgumentError(`config file ${file} does not exist`);
    return {};
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InvalidArgumentError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new InvalidArgumentError(`config file ${file} must hold a JSON object`);
  const obj = raw as Record<string, unknown>;
  const unknown = Object.keys(obj).filter((k) => !(KEYS as readonly string[]).includes(k));
  if (unknown.length) throw new InvalidArgumentError(`config file ${file}: unknown key(s) ${unknown.join(', ')} (known: ${KEYS.join(', ')})`);
  return validate(obj, `config file ${file}`, dirname(file));
}

/** A file path, made absolute against `base` (a config file's dir, or the working dir). */
function filePath(v: unknown, what: string, where: string, base: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw new InvalidArgumentError(`${where}: ${what} must be a file path, got ${JSON.stringify(v)}`);
  return resolve(base, v);
}

function validate(obj: Record<string, unknown>, where: string, base = process.cwd()): CliConfig {
  const out: { -readonly [K in keyof CliConfig]: CliConfig[K] } = {};
  for (const k of ['coordinator', 'transport'] as const) {
    const v = obj[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' || !/^[a-z0-9+.-]+:\/\//i.test(v)) throw new InvalidArgumentError(`${where}: ${k} must be a URL like ${k === 'coordinator' ? 'etcd://127.0.0.1:2379' : 'grpc://0.0.0.0:0'}, got ${JSON.stringify(v)}`);
    out[k] = v;
  }
  if (obj['sessionTtlMs'] !== undefined) {
    const n = Number(obj['sessionTtlMs']);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${where}: sessionTtlMs must be a positive integer (ms), got ${JSON.stringify(obj['sessionTtlMs'])}`);
    out.sessionTtlMs = n;
  }
  if (obj['logLevel'] !== undefined) {
    if (typeof obj['logLevel'] !== 'string' || !LEVELS.includes(obj['logLevel'])) throw new InvalidArgumentError(`${where}: logLevel must be one of ${LEVELS.join(', ')}`);
    out.logLevel = obj['logLevel'] as CliConfig['logLevel'] & string;
  }
  if (obj['plugins'] !== undefined) {
    const v = obj['plugins'];
    if (!Array.isArray(v) || !v.every((p): p is string => typeof p === 'string' && p.trim() !== '')) {
      throw new InvalidArgumentError(`${where}: plugins must be a list of module paths or package names, got ${JSON.stringify(v)}`);
    }
    out.plugins = v.map((p) => p.trim());
  }
  if (obj['tls'] !== undefined) {
    const v = obj['tls'];
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.keys(v).every((k) => (TLS_KEYS as readonly string[]).includes(k))) {
      throw new InvalidArgumentError(`${where}: tls must be { "ca": file, "cert": file, "key": file }, got ${JSON.stringify(v)}`);
    }
    const t = v as Record<string, unknown>;
    const tls: { ca?: string; cert?: string; key?: string } = {};
    for (const k of TLS_KEYS) if (t[k] !== undefined) tls[k] = filePath(t[k], `tls.${k}`, where, base);
    out.tls = tls;
  }
  if (obj['jobSecretFile'] !== undefined) out.jobSecretFile = filePath(obj['jobSecretFile'], 'jobSecretFile', where, base);
  return out;
}

/**
 * The transport URL with the data plane's security from flags or the config file
 * added as query options (file paths only: the secret itself never goes into a URL).
 * TLS files make it `grpcs://`; either needs a gRPC transport. Without them the URL
 * is as given (the transport still reads TASKGRAPH_TLS_* and TASKGRAPH_JOB_SECRET*).
 */
export function securedTransportUrl(config: CliConfig, fallback: string): string {
  const url = config.transport ?? fallback;
  const tls = config.tls ?? {};
  const hasTls = TLS_KEYS.some((k) => tls[k] !== undefined);
  if (!hasTls && config.jobSecretFile === undefined) return url;
  const m = /^(grpcs?):\/\/([^?#]*)(?:\?([^#]*))?$/i.exec(url);
  if (!m) {
    throw new InvalidArgumentError(`the TLS and job secret options secure the gRPC transport; the transport is ${JSON.stringify(url)}: use grpc:// or grpcs://`);
  }
  const params = new URLSearchParams(m[3] ?? '');
  const set = (key: string, value: string | undefined): void => {
    // The same value again is fine: a node process spawned by `run` gets the secured URL and reads the same config file.
    if (value === undefined || params.get(key) === value) return;
    if (params.has(key)) throw new InvalidArgumentError(`the transport URL already gives another ${key}=; give it once (the URL or the option)`);
    params.set(key, value);
  };
  for (const k of TLS_KEYS) set(k, tls[k]);
  set('secretFile', config.jobSecretFile);
  const scheme = hasTls ? 'grpcs' : (m[1] as string).toLowerCase();
  const query = params.toString();
  return `${scheme}://${m[2] as string}${query === '' ? '' : `?${query}`}`;
}

/** Flags over environment over file; a list (plugins) from a higher source replaces a lower one's. */
export function resolveConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): CliConfig {
  const file = readConfigFile(typeof flags['config'] === 'string' ? flags['config'] : undefined, cwd);
  const fromEnv = validate(
    {
      ...(env['TASKGRAPH_COORDINATOR'] ? { coordinator: env['TASKGRAPH_COORDINATOR'] } : {}),
      ...(env['TASKGRAPH_TRANSPORT'] ? { transport: env['TASKGRAPH_TRANSPORT'] } : {}),
      ...(env['TASKGRAPH_SESSION_TTL_MS'] ? { sessionTtlMs: env['TASKGRAPH_SESSION_TTL_MS'] } : {}),
      ...(env['TASKGRAPH_LOG_LEVEL'] ? { logLevel: env['TASKGRAPH_LOG_LEVEL'] } : {}),
      ...(env['TASKGRAPH_PLUGINS'] ? { plugins: env['TASKGRAPH_PLUGINS'].split(',').filter((p) => p.trim() !== '') } : {}),
    },
    'environment',
  );
  const fromFlags = validate(
    {
      ...(flags['coordinator'] !== undefined ? { coordinator: flags['coordinator'] } : {}),
      ...(flags['transport'] !== undefined ? { transport: flags['transport'] } : {}),
      ...(flags['ttl'] !== undefined ? { sessionTtlMs: flags['ttl'] } : {}),
      ...(flags['log-level'] !== undefined ? { logLevel: flags['log-level'] } : {}),
      ...(flags['plugin'] !== undefined ? { plugins: flags['plugin'] } : {}),
      ...(flags['tls-ca'] !== undefined || flags['tls-cert'] !== undefined || flags['tls-key'] !== undefined
        ? { tls: { ca: flags['tls-ca'], cert: flags['tls-cert'], key: flags['tls-key'] } }
        : {}),
      ...(flags['job-secret-file'] !== undefined ? { jobSecretFile: flags['job-secret-file'] } : {}),
    },
    'flags',
    cwd,
  );
  // TLS files merge per file: a flag replaces the config file's entry, not the others.
  const tls = file.tls !== undefined || fromFlags.tls !== undefined ? { tls: { ...file.tls, ...fromFlags.tls } } : {};
  return { ...file, ...fromEnv, ...fromFlags, ...tls };
}

/** `--arg k=v` pairs. */
export function parseAppArgs(values: readonly string[] | undefined): Record<string, string> {
  const out = new Map<string, string>();
  for (const v of values ?? []) {
    const i = v.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`--arg ${JSON.stringify(v)} must be key=value`);
    out.set(v.slice(0, i), v.slice(i + 1));
  }
  // Own entries whatever the key: an assignment of "__proto__" would be lost (found by fuzzing).
  return Object.fromEntries(out);
}
