/**
 * `k8s://?namespace=default&context=...&prefix=tg&ca=<file>`: the API server and
 * credentials come from the usual kubeconfig places (KUBECONFIG, ~/.kube/config, or
 * the pod's service account), never from the URL; the URL may name the CA that
 * verifies the server.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import type { Clock, CoordinatorRuntimeOptions, Logger } from '@taskgraph/api';
import { silentLogger } from '@taskgraph/backend-kit';
import { K8sCoordinator } from './coordinator.js';
import { assertValidStorePrefix } from './names.js';

export interface K8sCoordinatorOptions extends CoordinatorRuntimeOptions {
  /** A loaded kubeconfig. Default: loaded from KUBECONFIG, ~/.kube/config, or in-cluster. */
  readonly kubeConfig?: KubeConfig;
  /** A kubeconfig file to load instead of the default places. */
  readonly kubeconfigPath?: string;
  /**
   * A CA certificate file (PEM) that verifies the API server, instead of the kubeconfig
   * cluster's `certificate-authority`; it also turns on verification where the kubeconfig
   * skips it. Default: the kubeconfig's.
   */
  readonly caFile?: string;
  /** The kubeconfig context to use. Default: the current context. */
  readonly context?: string;
  /** The Kubernetes namespace of every object. Default: the context's namespace, else "default". */
  readonly namespace?: string;
  /** The store prefix: part of every object name and label (1-40 of a-z, 0-9, "-"). Default "tg". */
  readonly prefix?: string;
  /** Deadline of each API request (default 10 000 ms). */
  readonly requestTimeoutMs?: number;
  /** Server-side timeout of each watch connection, picked at random in this range (default [300, 600] s). */
  readonly watchTimeoutSeconds?: readonly [number, number];
  /** A watch connection silent for this long is replaced (default: the largest watch timeout + 30 s). */
  readonly watchIdleTimeoutMs?: number;
  /** How often an idle key watch compares its state with the server's (default 300 000 ms; 0: never). */
  readonly watchAuditIntervalMs?: number;
  /** Whether this client removes other participants' expired sessions (default true). */
  readonly janitor?: boolean;
  /** How often the janitor looks for keys and locks of vanished sessions (default 60 000 ms). */
  readonly janitorSweepIntervalMs?: number;
  /** How long a waiting acquire sleeps without news before it looks again (default 2000 ms). */
  readonly lockPollMs?: number;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const URL_PARAMETERS = ['namespace', 'context', 'prefix', 'kubeconfig', 'ca'] as const;
const URL_SHAPE = 'k8s://?namespace=<ns>&context=<kubeconfig context>&prefix=<store prefix>&kubeconfig=<path>&ca=<CA file>';

/** What a `k8s://` URL says. */
export interface ParsedK8sUrl {
  readonly namespace?: string;
  readonly context?: string;
  readonly prefix?: string;
  readonly kubeconfigPath?: string;
  readonly caFile?: string;
}

/** Parses `k8s://[?namespace=..&context=..&prefix=..&kubeconfig=..&ca=..]`; anything else is an InvalidArgumentError. */
export function parseK8sUrl(url: string | URL): ParsedK8sUrl {
  const text = String(url);
  let parsed: URL;
  try {
    parsed = url instanceof URL ? url : new URL(text);
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(text)} is not a URL; expected ${URL_SHAPE}`);
  }
  if (parsed.protocol !== 'k8s:') {
    throw new InvalidArgumentError(`${JSON.stringify(text)} is not a k8s:// URL (scheme ${JSON.stringify(parsed.protocol.replace(/:$/, ''))}); expected ${URL_SHAPE}`);
  }
  if (parsed.host !== '' || parsed.username !== '' || parsed.password !== '') {
    throw new InvalidArgumentError(
      `k8s URL ${JSON.stringify(text)} names a host; the API server and credentials come from the kubeconfig (KUBECONFIG, ~/.kube/config or the pod's service account), so write ${URL_SHAPE}`,
    );
  }
  if (parsed.pathname !== '' && parsed.pathname !== '/') {
    throw new InvalidArgumentError(`k8s URL ${JSON.stringify(text)} has a path (${JSON.stringify(parsed.pathname)}); put the namespace and prefix in the query: ${URL_SHAPE}`);
  }
  if (parsed.hash !== '') throw new InvalidArgumentError(`k8s URL ${JSON.stringify(text)} must not have a #fragment`);
  for (const key of new Set(parsed.searchParams.keys())) {
    if (!(URL_PARAMETERS as readonly string[]).includes(key)) {
      throw new InvalidArgumentError(`k8s URL ${JSON.stringify(text)} has an unknown parameter ${JSON.stringify(key)}; known: ${URL_PARAMETERS.join(', ')}`);
    }
    if (parsed.searchParams.getAll(key).length > 1) throw new InvalidArgumentError(`k8s URL ${JSON.stringify(text)} gives ${JSON.stringify(key)} more than once`);
    if (parsed.searchParams.get(key) === '') throw new InvalidArgumentError(`k8s URL ${JSON.stringify(text)} gives an empty ${JSON.stringify(key)}`);
  }
  const out: { -readonly [K in keyof ParsedK8sUrl]: ParsedK8sUrl[K] } = {};
  const namespace = parsed.searchParams.get('namespace');
  const context = parsed.searchParams.get('context');
  const prefix = parsed.searchParams.get('prefix');
  const kubeconfig = parsed.searchParams.get('kubeconfig');
  if (namespace !== null) out.namespace = checkNamespace(namespace);
  if (context !== null) out.context = context;
  if (prefix !== null) {
    assertValidStorePrefix(prefix);
    out.prefix = prefix;
  }
  if (kubeconfig !== null) out.kubeconfigPath = kubeconfig;
  const ca = parsed.searchParams.get('ca');
  if (ca !== null) out.caFile = ca;
  return out;
}

function checkNamespace(namespace: unknown): string {
  if (typeof namespace !== 'string' || namespace.length > 63 || !DNS1123_LABEL.test(namespace)) {
    throw new InvalidArgumentError(
      `Kubernetes namespace ${JSON.stringify(namespace)} is invalid: a namespace is 1 to 63 lower-case letters, digits and "-", starting and ending with a letter or digit`,
    );
  }
  return namespace;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got ${String(value)}`);
  return value;
}

function loadKubeConfig(o: K8sCoordinatorOptions): KubeConfig {
  let kc = o.kubeConfig;
  if (kc === undefined) {
    kc = new KubeConfig();
    try {
      if (o.kubeconfigPath !== undefined) {
        if (!existsSync(o.kubeconfigPath)) throw new Error(`no such file ${JSON.stringify(o.kubeconfigPath)}`);
        kc.loadFromFile(o.kubeconfigPath);
      } else {
        kc.loadFromDefault();
      }
    } catch (err) {
      throw new InvalidArgumentError(`could not load the kubeconfig: ${(err as Error).message}`, { cause: err });
    }
  }
  if (o.context !== undefined) {
    if (kc.getContextObject(o.context) === null) {
      const known = kc.getContexts().map((c) => c.name);
      throw new InvalidArgumentError(`the kubeconfig has no context ${JSON.stringify(o.context)}; it has ${known.length === 0 ? 'none' : known.map((n) => JSON.stringify(n)).join(', ')}`);
    }
    kc.setCurrentContext(o.context);
  }
  const cluster = kc.getCurrentCluster();
  // With nothing to load, the client falls back to an unauthenticated http://localhost:8080.
  if (cluster === null || (cluster.name === 'cluster' && cluster.server === 'http://localhost:8080' && o.kubeConfig === undefined)) {
    throw new InvalidArgumentError(
      'no Kubernetes cluster is configured: set KUBECONFIG, write ~/.kube/config, run inside a pod with a service account, or pass kubeconfig=<path> in the k8s:// URL',
    );
  }
  return o.caFile === undefined ? kc : withCa(kc, o.caFile);
}

/**
 * A copy of the kubeconfig whose current cluster is verified with the CA in `path`
 * (the caller's KubeConfig is left as it was).
 */
function withCa(kc: KubeConfig, path: string): KubeConfig {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new InvalidArgumentError('the kubeconfig has no current cluster to verify with a CA');
  if (!cluster.server.startsWith('https:')) {
    throw new InvalidArgumentError(`a CA file was given, but the API server ${cluster.server} is not an https:// URL: a CA verifies only a server that speaks TLS`);
  }
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`could not read the CA file ${JSON.stringify(path)}: ${(err as Error).message}`, { cause: err });
  }
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new InvalidArgumentError(`the CA file ${JSON.stringify(path)} holds no PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  const copy = new KubeConfig();
  copy.loadFromOptions({
    clusters: kc.clusters.map((c) =>
      c.name === cluster.name ? { ...c, caData: Buffer.from(pem).toString('base64'), caFile: undefined, skipTLSVerify: false } : c,
    ),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.getCurrentContext(),
  });
  return copy;
}

/**
 * Creates a Kubernetes coordinator from a `k8s://` URL or options. The URL's
 * runtime (clock, logger) comes as the second argument.
 */
export async function createK8sCoordinator(target: string | URL | K8sCoordinatorOptions = {}, runtime: CoordinatorRuntimeOptions = {}): Promise<K8sCoordinator> {
  const options: K8sCoordinatorOptions = typeof target === 'string' || target instanceof URL ? { ...parseK8sUrl(target), ...runtime } : { ...runtime, ...target };
  if (options.prefix !== undefined) assertValidStorePrefix(options.prefix);
  if (options.namespace !== undefined) checkNamespace(options.namespace);
  const kubeConfig = loadKubeConfig(options);
  const contextNamespace = kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace;
  const namespace = options.namespace ?? (contextNamespace ? checkNamespace(contextNamespace) : 'default');
  const watchTimeoutSeconds = options.watchTimeoutSeconds ?? [300, 600];
  const [minWatch, maxWatch] = watchTimeoutSeconds;
  if (!(Number.isInteger(minWatch) && Number.isInteger(maxWatch) && minWatch >= 1 && maxWatch >= minWatch)) {
    throw new InvalidArgumentError(`watchTimeoutSeconds must be [min, max] whole seconds with 1 <= min <= max, got ${JSON.stringify(watchTimeoutSeconds)}`);
  }
  const auditMs = options.watchAuditIntervalMs ?? 300_000;
  if (typeof auditMs !== 'number' || !(auditMs >= 0)) throw new InvalidArgumentError(`watchAuditIntervalMs must be 0 or a positive number, got ${String(auditMs)}`);
  const clock: Clock = options.clock ?? systemClock;
  const logger: Logger = options.logger ?? silentLogger;
  return new K8sCoordinator({
    kubeConfig,
    namespace,
    prefix: options.prefix ?? 'tg',
    clock,
    logger,
    requestTimeoutMs: positive('requestTimeoutMs', options.requestTimeoutMs, 10_000),
    watchTimeoutSeconds: [minWatch, maxWatch],
    watchIdleTimeoutMs: positive('watchIdleTimeoutMs', options.watchIdleTimeoutMs, maxWatch * 1000 + 30_000),
    watchAuditIntervalMs: auditMs,
    janitor: options.janitor ?? true,
    janitorSweepIntervalMs: positive('janitorSweepIntervalMs', options.janitorSweepIntervalMs, 60_000),
    lockPollMs: positive('lockPollMs', options.lockPollMs, 2000),
  });
}
