/**
 * An HTTP server that answers the Kubernetes API subset TaskGraph's Kubernetes
 * backend uses (ConfigMaps and coordination.k8s.io/v1 Leases in namespaces), with the
 * real API server's semantics, plus fault switches for tests. See K8S.md for how it
 * differs from a real API server.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { makeServingCertificates, type ServingCertificates } from './certificates.js';
import { kubeconfigText, writeKubeconfigFile, type WrittenKubeconfig } from './kubeconfig.js';
import { isPlainObject } from './merge-patch.js';
import { parseResourceVersion, Registry, type Result } from './registry.js';
import { configMaps, leases, type ResourceDef } from './resources.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import {
  badRequest,
  entityTooLarge,
  failure,
  faultStatus,
  invalid,
  methodNotAllowed,
  pathNotFound,
  StatusError,
  unauthorized,
  unsupportedMediaType,
  type FieldError,
} from './status.js';
import { ObjectStore } from './store.js';
import { WatchStream, type WatchStart } from './watch.js';

export interface K8sEmulatorOptions {
  /** Port to listen on; 0 (the default) picks a free one. */
  readonly port?: number;
  /** Address to listen on; default 127.0.0.1 (loopback only). */
  readonly host?: string;
  /**
   * HTTPS, as a real API server serves (the default): a CA and a serving certificate
   * made at start, for localhost, 127.0.0.1, ::1, `host` and `tlsNames`. Give
   * certificates to use those instead; `false` serves plain HTTP, for clients that need it.
   */
  readonly tls?: boolean | ServingCertificates;
  /** More names (DNS names or IP addresses) the generated serving certificate is valid for. */
  readonly tlsNames?: readonly string[];
  /**
   * How many change events are retained for watches to resume from (default 10 000).
   * A watch from an older resourceVersion gets an ERROR event with a 410 Expired Status.
   */
  readonly watchRetention?: number;
  /** How often open watches that allow them get a BOOKMARK (default 60 000 ms, as the real server). */
  readonly bookmarkIntervalMs?: number;
  /** Namespaces that exist (default: default, kube-system, kube-public, kube-node-lease). */
  readonly namespaces?: readonly string[];
  /** The bearer token every API request must carry (default "taskgraph-emulator"); false accepts anything. */
  readonly token?: string | false;
  /** Watch timeout when the client gives no timeoutSeconds: random in [min, max] seconds (default [1800, 3600]). */
  readonly defaultWatchTimeoutSeconds?: readonly [number, number];
  /** The revision the counter starts from (default 1000). */
  readonly initialResourceVersion?: number;
}

export type WatchLineFault = 'omit' | 'garble';

export interface FailOptions {
  /** HTTP status to answer with (default 503). */
  readonly status?: number;
  /** Only requests with this HTTP method. */
  readonly method?: string;
  /** Only requests for this resource. */
  readonly resource?: 'configmaps' | 'leases';
  /** Only watch requests (true) or only non-watch requests (false). */
  readonly watch?: boolean;
}

export interface K8sEmulatorFaults {
  /** Ends every open watch stream cleanly now, as a server timeout or a proxy's idle cut does. Returns how many. */
  closeWatches(): number;
  /** Drops the connection of every open watch stream without ending it, as a crash or a reset does. */
  resetWatches(): number;
  /**
   * The next `count` event lines of watch streams are lost: `omit` does not write them;
   * `garble` writes them as invalid JSON, which @kubernetes/client-node's Watch skips silently.
   */
  dropWatchLines(count: number, mode?: WatchLineFault): void;
  /** The next event line is cut halfway and its connection dropped (a partial last line). */
  truncateNextWatchLine(): void;
  /**
   * While on, every request is answered with `status` (503 by default) and, unless
   * `closeWatches` is false, open watch streams are cut: a partition from the server.
   */
  setUnavailable(on: boolean, options?: { readonly status?: number; readonly closeWatches?: boolean }): void;
  /** The next `count` matching requests are answered with an error status (503 by default). */
  failNext(count: number, options?: FailOptions): void;
  /**
   * The next `count` matching API requests (watches excepted) are handled as usual, writes
   * applied, and then their connection is cut with no answer: the client cannot tell
   * whether a write took effect (an unknown outcome). `status` is ignored.
   */
  dropAnswerNext(count: number, options?: FailOptions): void;
  /** Every answer (and the start of every watch) is delayed by `ms`. */
  setLatency(ms: number): void;
  /** Turns every fault off. */
  reset(): void;
}

export interface K8sEmulator {
  /** `https://host:port` (`http://` when TLS is off), the server URL a kubeconfig names. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** The CA certificate (PEM) that signed the serving certificate; undefined over plain HTTP. */
  readonly ca: string | undefined;
  /** The bearer token clients must present (undefined when any is accepted). */
  readonly token: string | undefined;
  readonly faults: K8sEmulatorFaults;
  /** A kubeconfig for this emulator, as YAML text (the CA inline, as `certificate-authority-data`). */
  kubeconfig(namespace?: string): string;
  /**
   * Writes a kubeconfig to `path` (directories created, mode 0600) and the CA next to
   * it, at `<path>.ca.crt`, which the kubeconfig names as `certificate-authority`.
   */
  writeKubeconfig(path: string, namespace?: string): Promise<WrittenKubeconfig>;
  /** The newest resourceVersion. */
  resourceVersion(): string;
  /** Forgets every retained change: watches from any earlier resourceVersion now get 410 Expired. */
  compact(): void;
  /** Makes a namespace exist (objects can only be created in existing namespaces). */
  createNamespace(name: string): void;
  /** Sends a bookmark to every open watch that allows them. */
  sendBookmarks(): void;
  /** How many watch streams are open. */
  openWatches(): number;
  /** The API verbs requested so far (also those a fault answered), as `resource:verb` (e.g. `leases:update`), with counts. */
  verbsUsed(): ReadonlyMap<string, number>;
  /** Stops the server: open watches are ended, connections closed. */
  close(): Promise<void>;
}

const MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024;
const DEFAULT_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];
const PUBLIC_PATHS = new Set(['/version', '/healthz', '/livez', '/readyz']);

interface Route {
  readonly def: ResourceDef;
  readonly namespace: string;
  readonly name: string | undefined;
  /** The deprecated `/watch/` path form. */
  readonly watchPath: boolean;
}

/** The first of `rules` with calls left that matches the request, its count taken down by one. */
function takeMatch(
  rules: readonly { count: number; options: FailOptions }[],
  method: string,
  resource: string | undefined,
  watch: boolean,
): { count: number; options: FailOptions } | undefined {
  for (const f of rules) {
    const o = f.options;
    if (f.count <= 0) continue;
    if (o.method !== undefined && o.method.toUpperCase() !== method) continue;
    if (o.resource !== undefined && o.resource !== resource) continue;
    if (o.watch !== undefined && o.watch !== watch) continue;
    f.count--;
    return f;
  }
  return undefined;
}

class Faults implements K8sEmulatorFaults {
  unavailableStatus: number | undefined;
  latencyMs = 0;
  private failures: { count: number; options: FailOptions }[] = [];
  private answerDrops: { count: number; options: FailOptions }[] = [];
  private drops = 0;
  private dropMode: WatchLineFault = 'omit';
  private truncate = false;

  constructor(private readonly watches: () => WatchStream[]) {}

  closeWatches(): number {
    const open = this.watches();
    for (const w of open) w.end();
    return open.length;
  }
  resetWatches(): number {
    const open = this.watches();
    for (const w of open) w.reset();
    return open.length;
  }
  dropWatchLines(count: number, mode: WatchLineFault = 'omit'): void {
    this.drops = count;
    this.dropMode = mode;
  }
  truncateNextWatchLine(): void {
    this.truncate = true;
  }
  setUnavailable(on: boolean, options: { readonly status?: number; readonly closeWatches?: boolean } = {}): void {
    this.unavailableStatus = on ? (options.status ?? 503) : undefined;
    if (on && options.closeWatches !== false) this.resetWatches();
  }
  failNext(count: number, options: FailOptions = {}): void {
    this.failures.push({ count, options });
  }
  dropAnswerNext(count: number, options: FailOptions = {}): void {
    this.answerDrops.push({ count, options });
  }
  setLatency(ms: number): void {
    this.latencyMs = ms;
  }
  reset(): void {
    this.unavailableStatus = undefined;
    this.latencyMs = 0;
    this.failures = [];
    this.answerDrops = [];
    this.drops = 0;
    this.truncate = false;
  }

  /** The status an injected failure answers this request with, if any. */
  failureFor(method: string, resource: string | undefined, watch: boolean): number | undefined {
    if (this.unavailableStatus !== undefined) return this.unavailableStatus;
    const f = takeMatch(this.failures, method, resource, watch);
    if (f === undefined) return undefined;
    this.failures = this.failures.filter((x) => x.count > 0);
    return f.options.status ?? 503;
  }

  /** Whether this request's answer is to be dropped after it is handled. */
  dropsAnswer(method: string, resource: string | undefined): boolean {
    if (takeMatch(this.answerDrops, method, resource, false) === undefined) return false;
    this.answerDrops = this.answerDrops.filter((x) => x.count > 0);
    return true;
  }

  lineFate(): 'write' | 'omit' | 'garble' | 'truncate' {
    if (this.truncate) {
      this.truncate = false;
      return 'truncate';
    }
    if (this.drops > 0) {
      this.drops--;
      return this.dropMode;
    }
    return 'write';
  }
}

function parseRoute(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter((p) => p !== '');
  let def: ResourceDef;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') {
    def = configMaps;
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts[1] === leases.group && parts[2] === 'v1') {
    def = leases;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  let watchPath = false;
  if (rest[0] === 'watch') {
    watchPath = true;
    rest = rest.slice(1);
  }
  if (rest[0] !== 'namespaces' || rest.length < 3 || rest.length > 4 || rest[2] !== def.resource) return undefined;
  const namespace = decodeURIComponent(rest[1] ?? '');
  const name = rest[3] === undefined ? undefined : decodeURIComponent(rest[3]);
  return { def, namespace, name, watchPath };
}

function flag(value: string | null): boolean | undefined {
  if (value === null) return undefined;
  if (value === 'true' || value === '1' || value === 'True') return true;
  if (value === 'false' || value === '0' || value === 'False' || value === '') return false;
  throw badRequest(`invalid boolean value ${JSON.stringify(value)}`);
}

function discovery(host: string): Map<string, unknown> {
  const verbs = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];
  return new Map<string, unknown>([
    ['/version', { major: '1', minor: '31', gitVersion: 'v1.31.0-taskgraph-emulator', platform: `${process.platform}/${process.arch}` }],
    ['/api', { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: host }] }],
    [
      '/api/v1',
      {
        kind: 'APIResourceList',
        groupVersion: 'v1',
        resources: [{ name: 'configmaps', singularName: 'configmap', namespaced: true, kind: 'ConfigMap', verbs, shortNames: ['cm'] }],
      },
    ],
    [
      '/apis',
      {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: [
          {
            name: 'coordination.k8s.io',
            versions: [{ groupVersion: 'coordination.k8s.io/v1', version: 'v1' }],
            preferredVersion: { groupVersion: 'coordination.k8s.io/v1', version: 'v1' },
          },
        ],
      },
    ],
    [
      '/apis/coordination.k8s.io',
      {
        kind: 'APIGroup',
        apiVersion: 'v1',
        name: 'coordination.k8s.io',
        versions: [{ groupVersion: 'coordination.k8s.io/v1', version: 'v1' }],
        preferredVersion: { groupVersion: 'coordination.k8s.io/v1', version: 'v1' },
      },
    ],
    [
      '/apis/coordination.k8s.io/v1',
      {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'coordination.k8s.io/v1',
        resources: [{ name: 'leases', singularName: 'lease', namespaced: true, kind: 'Lease', verbs }],
      },
    ],
  ]);
}

/** Starts the emulator; resolves once it listens. */
export async function startK8sEmulator(options: K8sEmulatorOptions = {}): Promise<K8sEmulator> {
  const host = options.host ?? '127.0.0.1';
  const token = options.token === false ? undefined : (options.token ?? 'taskgraph-emulator');
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 60_000;
  const [minTimeout, maxTimeout] = options.defaultWatchTimeoutSeconds ?? [1800, 3600];
  const store = new ObjectStore({ retention: options.watchRetention ?? 10_000, initialRevision: options.initialResourceVersion ?? 1000 });
  const registry = new Registry(store, new Set(options.namespaces ?? DEFAULT_NAMESPACES));
  const watches = new Set<WatchStream>();
  const sockets = new Set<Socket>();
  const pending = new Set<NodeJS.Timeout>();
  const verbs = new Map<string, number>();
  const faults = new Faults(() => [...watches]);
  let docs = new Map<string, unknown>();
  let closing = false;

  const countVerb = (resource: string, verb: string) => {
    const k = `${resource}:${verb}`;
    verbs.set(k, (verbs.get(k) ?? 0) + 1);
  };

  const delay = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        pending.delete(t);
        resolve();
      }, ms);
      pending.add(t);
    });

  const send = (res: ServerResponse, code: number, body: unknown, headers: Readonly<Record<string, string>> = {}, warnings: readonly string[] = []) => {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    const h: Record<string, string | string[]> = { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', ...headers };
    if (warnings.length > 0) h['Warning'] = warnings.map((w) => `299 - ${JSON.stringify(w)}`);
    res.writeHead(code, h);
    res.end(text);
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_REQUEST_BODY_BYTES) {
          reject(entityTooLarge(MAX_REQUEST_BODY_BYTES));
          req.resume();
          return;
        }
        chunks.push(chunk);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });

  const parseJson = (raw: Buffer, optional: boolean): unknown => {
    if (raw.length === 0) {
      if (optional) return undefined;
      throw badRequest('the body of the request was empty');
    }
    try {
      return JSON.parse(raw.toString('utf8')) as unknown;
    } catch (err) {
      throw badRequest(`couldn't get version/kind; json parse error: ${(err as Error).message}`);
    }
  };

  const requireJson = (req: IncomingMessage, accepted: readonly string[]) => {
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (!accepted.includes(type)) throw unsupportedMediaType(type);
    return type;
  };

  const startWatch = (req: IncomingMessage, res: ServerResponse, route: Route, url: URL) => {
    const q = url.searchParams;
    const fieldSelectorText = route.name === undefined ? (q.get('fieldSelector') ?? undefined) : `metadata.name=${route.name}`;
    const labels = parseLabelSelector(q.get('labelSelector') ?? undefined);
    const fields = parseFieldSelector(fieldSelectorText);
    const allowBookmarks = flag(q.get('allowWatchBookmarks')) === true;
    const sendInitialEvents = flag(q.get('sendInitialEvents'));
    const rvText = q.get('resourceVersion') ?? '';
    const match = q.get('resourceVersionMatch') ?? '';
    const errs: FieldError[] = [];
    if (sendInitialEvents !== undefined) {
      if (match !== 'NotOlderThan') {
        errs.push({ type: 'FieldValueForbidden', field: 'resourceVersionMatch', detail: 'Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan' });
      }
      if (sendInitialEvents && !allowBookmarks) {
        errs.push({ type: 'FieldValueForbidden', field: 'allowWatchBookmarks', detail: 'Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true' });
      }
    } else if (match !== '') {
      errs.push({ type: 'FieldValueForbidden', field: 'resourceVersionMatch', detail: 'Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided' });
    }
    if (errs.length > 0) throw invalid('ListOptions', 'meta.k8s.io', '', errs);
    const requested = rvText === '' ? 0 : parseResourceVersion(rvText);
    let start: WatchStart;
    if (sendInitialEvents === true) start = { after: requested === 0 ? undefined : requested, initialEvents: true };
    else start = { after: requested === 0 ? undefined : requested, initialEvents: false };
    const timeoutText = q.get('timeoutSeconds');
    let timeoutMs: number;
    if (timeoutText !== null && timeoutText !== '') {
      const seconds = Number(timeoutText);
      if (!Number.isInteger(seconds) || seconds < 0) throw badRequest(`invalid timeoutSeconds ${JSON.stringify(timeoutText)}`);
      timeoutMs = seconds === 0 ? (minTimeout + Math.random() * (maxTimeout - minTimeout)) * 1000 : seconds * 1000;
    } else {
      timeoutMs = (minTimeout + Math.random() * (maxTimeout - minTimeout)) * 1000;
    }
    const stream = new WatchStream(res, {
      def: route.def,
      namespace: route.namespace,
      labels,
      fields,
      allowBookmarks,
      timeoutMs,
      bookmarkIntervalMs,
      start,
      store,
      faults,
      onEnd: (s) => watches.delete(s),
    });
    watches.add(stream);
    req.on('close', () => stream.end());
    stream.begin();
  };

  /** Answers that `dropAnswerNext` picked: the request is handled, then its connection cut. */
  const dropped = new WeakSet<ServerResponse>();
  const dispatch = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (!PUBLIC_PATHS.has(path) && token !== undefined) {
      if (req.headers.authorization !== `Bearer ${token}`) throw unauthorized();
    }
    const route = parseRoute(path);
    const isWatch = route !== undefined && method === 'GET' && (route.watchPath || flag(url.searchParams.get('watch')) === true);
    if (route !== undefined) {
      const verb = isWatch ? 'watch' : verbOf(method, route.name !== undefined);
      if (verb !== undefined) countVerb(route.def.resource, verb);
    }
    const injected = faults.failureFor(method, route?.def.resource, isWatch);
    if (injected !== undefined) {
      const err = faultStatus(injected);
      send(res, err.code, err.status, err.headers);
      return;
    }
    if (route !== undefined && !isWatch && faults.dropsAnswer(method, route.def.resource)) dropped.add(res);
    if (route === undefined) {
      if (path === '/healthz' || path === '/livez' || path === '/readyz') {
        res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end('ok');
        return;
      }
      const doc = docs.get(path);
      if (doc !== undefined && method === 'GET') {
        send(res, 200, doc);
        return;
      }
      throw pathNotFound();
    }
    const { def, namespace, name } = route;
    if (isWatch) {
      startWatch(req, res, route, url);
      return;
    }
    if (route.watchPath) throw methodNotAllowed();
    let result: Result;
    if (name === undefined) {
      if (method === 'GET') {
          const q = url.searchParams;
        result = registry.list(def, namespace, {
          labelSelector: q.get('labelSelector') ?? undefined,
          fieldSelector: q.get('fieldSelector') ?? undefined,
          resourceVersion: q.get('resourceVersion') ?? undefined,
          resourceVersionMatch: q.get('resourceVersionMatch') ?? undefined,
          limit: q.get('limit') ?? undefined,
          continue: q.get('continue') ?? undefined,
        });
      } else if (method === 'POST') {
          requireJson(req, ['application/json']);
        rejectDryRun(url);
        result = registry.create(def, namespace, parseJson(await readBody(req), false));
      } else {
        throw methodNotAllowed();
      }
    } else if (method === 'GET') {
      result = registry.get(def, namespace, name);
    } else if (method === 'PUT') {
      requireJson(req, ['application/json']);
      rejectDryRun(url);
      result = registry.update(def, namespace, name, parseJson(await readBody(req), false));
    } else if (method === 'PATCH') {
      requireJson(req, ['application/merge-patch+json']);
      rejectDryRun(url);
      result = registry.patch(def, namespace, name, parseJson(await readBody(req), false));
    } else if (method === 'DELETE') {
      rejectDryRun(url);
      const raw = await readBody(req);
      const body = parseJson(raw, true);
      if (body !== undefined && !isPlainObject(body)) throw badRequest('DeleteOptions must be a JSON object');
      result = registry.delete(def, namespace, name, body);
    } else {
      throw methodNotAllowed();
    }
    if (dropped.has(res)) {
      res.socket?.destroy();
      return;
    }
    send(res, result.code, result.body, {}, result.warnings);
  };

  const tls = await servingIdentity(options, host);
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://emulator');
    const run = async () => {
      if (faults.latencyMs > 0) await delay(faults.latencyMs);
      if (closing) {
        res.socket?.destroy();
        return;
      }
      await dispatch(req, res, url);
    };
    run().catch((err: unknown) => {
      if (dropped.has(res)) res.socket?.destroy();
      else if (err instanceof StatusError) send(res, err.code, err.status, err.headers);
      else send(res, 500, failure(500, 'InternalError', `Internal error occurred: ${(err as Error).message}`));
    });
  };
  const server: Server = tls === undefined ? createHttpServer(handler) : createHttpsServer({ cert: tls.cert, key: tls.key }, handler);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `${tls === undefined ? 'http' : 'https'}://${urlHost}:${port}`;
  docs = discovery(`${urlHost}:${port}`);
  const kubeconfigOptions = (namespace: string) => ({ server: url, token: token ?? 'anonymous', namespace, name: 'taskgraph-emulator', ca: tls?.ca });

  return {
    url,
    host,
    port,
    ca: tls?.ca,
    token,
    faults,
    kubeconfig: (namespace = 'default') => kubeconfigText(kubeconfigOptions(namespace)),
    writeKubeconfig: (path, namespace = 'default') => writeKubeconfigFile(path, kubeconfigOptions(namespace)),
    resourceVersion: () => String(store.currentRevision),
    compact: () => store.compact(),
    createNamespace: (name) => {
      registry.namespaces.add(name);
    },
    sendBookmarks: () => {
      for (const w of watches) w.bookmark();
    },
    openWatches: () => [...watches].filter((w) => w.isOpen).length,
    verbsUsed: () => new Map(verbs),
    close: async () => {
      if (closing) return;
      closing = true;
      for (const t of pending) clearTimeout(t);
      pending.clear();
      for (const w of [...watches]) w.end();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** The certificates to serve: given, made now (the default), or none for plain HTTP. */
async function servingIdentity(options: K8sEmulatorOptions, host: string): Promise<ServingCertificates | undefined> {
  if (options.tls === false) return undefined;
  if (typeof options.tls === 'object') return options.tls;
  // The listen address is a name clients dial, unless it is a wildcard.
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  return makeServingCertificates([...(wildcard ? [] : [host]), ...(options.tlsNames ?? [])]);
}

/** The RBAC verb of a request (watches are decided before). */
function verbOf(method: string, named: boolean): string | undefined {
  switch (method) {
    case 'GET':
      return named ? 'get' : 'list';
    case 'POST':
      return named ? undefined : 'create';
    case 'PUT':
      return named ? 'update' : undefined;
    case 'PATCH':
      return named ? 'patch' : undefined;
    case 'DELETE':
      return named ? 'delete' : 'deletecollection';
    default:
      return undefined;
  }
}

function rejectDryRun(url: URL): void {
  if (url.searchParams.has('dryRun')) throw badRequest('dryRun is not supported by this emulator');
}

