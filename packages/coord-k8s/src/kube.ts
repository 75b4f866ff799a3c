/**
 * The only place that talks to the API server: @kubernetes/client-node calls with a
 * per-request deadline (the client has none of its own) over reused connections (it
 * makes a new agent, so a new connection and TLS handshake, for every request),
 * Kubernetes errors turned into typed TaskGraph errors, and the list of API verbs the
 * backend uses, from which the RBAC Role in deploy/k8s is checked.
 */
import { setMaxListeners } from 'node:events';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  Observable,
  type ConfigurationOptions,
  type KubeConfig,
  type ObservableMiddleware,
  type RequestContext,
  type ResponseContext,
  type V1ConfigMap,
  type V1ConfigMapList,
  type V1Lease,
  type V1LeaseList,
} from '@kubernetes/client-node';
import {
  AlreadyExistsError,
  ClosedError,
  CompactedError,
  ConflictError,
  IndeterminateError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  TaskGraphError,
  UnavailableError,
} from '@taskgraph/api';

/** The API verbs the backend calls, per resource: the Role it needs grants exactly these. */
export const RBAC_RULES = [
  { apiGroups: [''], resources: ['configmaps'], verbs: ['create', 'delete', 'get', 'list', 'update', 'watch'] },
  { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create', 'delete', 'get', 'list', 'update', 'watch'] },
] as const;

type Resource = 'configmaps' | 'leases';
type Verb = (typeof RBAC_RULES)[number]['verbs'][number];

/** Whether the call changes state: if its answer is lost, the outcome is unknown. */
const WRITES: ReadonlySet<Verb> = new Set(['create', 'update', 'delete']);

/**
 * Connections one client opens to the API server at most (watches have their own).
 * Past it, requests wait for a free connection instead of each opening a new one (and a
 * TLS handshake) just when the server is slow to answer.
 */
const MAX_SOCKETS = 32;

interface StatusBody {
  readonly reason?: string;
  readonly message?: string;
  readonly code?: number;
}

function statusOf(err: ApiException<unknown>): StatusBody {
  const body = err.body;
  if (typeof body === 'string') {
    try {
      const parsed: unknown = JSON.parse(body);
      if (typeof parsed === 'object' && parsed !== null) return parsed as StatusBody;
    } catch {
      return { message: body };
    }
  }
  if (typeof body === 'object' && body !== null) return body as StatusBody;
  return {};
}

/**
 * OpenSSL's verdicts on a server certificate the client does not trust, and Node's
 * for one issued to another name. None heals by retrying: the kubeconfig (or the
 * k8s:// URL's `ca`) names the wrong CA, or the server is not the one it names.
 */
const UNTRUSTED_CERTIFICATE = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * The typed error for a request the client refused to send because the API server's
 * certificate did not verify; undefined for any other failure. Not retryable.
 */
export function untrustedServerError(err: unknown, server: string): InternalError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !UNTRUSTED_CERTIFICATE.has(code)) return undefined;
  const reason = (err as { message?: unknown }).message;
  return new InternalError(
    `the API server ${server} presented a certificate this client does not trust (${code}${typeof reason === 'string' ? `: ${reason}` : ''}); the kubeconfig's certificate-authority, or ca=<file> in the k8s:// URL, must name the CA that signed it`,
    { cause: err, retryable: false, details: { reason: 'UntrustedServerCertificate', tlsCode: code, server } },
  );
}

/** Whether a failed call is worth retrying (the server or the network, not the request). */
export function isTransient(err: unknown): boolean {
  return TaskGraphError.is(err, 'UNAVAILABLE', 'INDETERMINATE', 'DEADLINE_EXCEEDED');
}

export interface KubeApiOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  readonly requestTimeoutMs: number;
  /** Aborts every request in flight (the coordinator's close). */
  readonly closed: AbortSignal;
}

export interface ListOptions {
  readonly labelSelector: string;
  /** With `exact`, the state at exactly this resourceVersion (410 when compacted). */
  readonly resourceVersion?: string;
  readonly exact?: boolean;
  readonly limit?: number;
}

export class KubeApi {
  readonly namespace: string;
  readonly kubeConfig: KubeConfig;
  /** The API server's URL, for messages. */
  readonly server: string;
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private readonly timeoutMs: number;
  private readonly closed: AbortSignal;
  private shared: { agent: HttpAgent; options: Record<string, unknown> } | undefined;

  constructor(o: KubeApiOptions) {
    this.namespace = o.namespace;
    this.kubeConfig = o.kubeConfig;
    this.server = o.kubeConfig.getCurrentCluster()?.server ?? 'of the kubeconfig';
    this.core = o.kubeConfig.makeApiClient(CoreV1Api);
    this.coordination = o.kubeConfig.makeApiClient(CoordinationV1Api);
    this.timeoutMs = o.requestTimeoutMs;
    this.closed = o.closed;
    // Every request in flight listens on it; a busy node has far more than the warning's 10.
    setMaxListeners(0, o.closed);
  }

  getConfigMap(name: string): Promise<V1ConfigMap | undefined> {
    return this.orUndefined(this.call('configmaps', 'get', name, (options) => this.core.readNamespacedConfigMap({ name, namespace: this.namespace }, options)));
  }

  listConfigMaps(o: ListOptions): Promise<V1ConfigMapList> {
    return this.call('configmaps', 'list', o.labelSelector, (options) =>
      this.core.listNamespacedConfigMap({ namespace: this.namespace, ...listParams(o) }, options),
    );
  }

  createConfigMap(body: V1ConfigMap): Promise<V1ConfigMap> {
    return this.call('configmaps', 'create', body.metadata?.name ?? '', (options) =>
      this.core.createNamespacedConfigMap({ namespace: this.namespace, body }, options),
    );
  }

  replaceConfigMap(body: V1ConfigMap): Promise<V1ConfigMap> {
    const name = body.metadata?.name ?? '';
    return this.call('configmaps', 'update', name, (options) => this.core.replaceNamespacedConfigMap({ name, namespace: this.namespace, body }, options));
  }

  deleteConfigMap(name: string, preconditions: { resourceVersion?: string; uid?: string } = {}): Promise<void> {
    return this.call('configmaps', 'delete', name, async (options) => {
      await this.core.deleteNamespacedConfigMap({ name, namespace: this.namespace, body: { preconditions } }, options);
    });
  }

  getLease(name: string): Promise<V1Lease | undefined> {
    return this.orUndefined(this.call('leases', 'get', name, (options) => this.coordination.readNamespacedLease({ name, namespace: this.namespace }, options)));
  }

  listLeases(o: ListOptions): Promise<V1LeaseList> {
    return this.call('leases', 'list', o.labelSelector, (options) =>
      this.coordination.listNamespacedLease({ namespace: this.namespace, ...listParams(o) }, options),
    );
  }

  createLease(body: V1Lease): Promise<V1Lease> {
    return this.call('leases', 'create', body.metadata?.name ?? '', (options) =>
      this.coordination.createNamespacedLease({ namespace: this.namespace, body }, options),
    );
  }

  /**
   * Replaces a Lease. The body must carry metadata.uid and resourceVersion: on a Lease
   * (which the server creates on update when missing) the uid is what makes an update
   * of a deleted Lease fail instead of silently re-creating it.
   */
  replaceLease(body: V1Lease): Promise<V1Lease> {
    const name = body.metadata?.name ?? '';
    if (!body.metadata?.uid || !body.metadata.resourceVersion) {
      throw new InternalError(`refusing to replace Lease ${name} without its uid and resourceVersion`);
    }
    return this.call('leases', 'update', name, (options) => this.coordination.replaceNamespacedLease({ name, namespace: this.namespace, body }, options));
  }

  deleteLease(name: string, preconditions: { resourceVersion?: string; uid?: string } = {}): Promise<void> {
    return this.call('leases', 'delete', name, async (options) => {
      await this.coordination.deleteNamespacedLease({ name, namespace: this.namespace, body: { preconditions } }, options);
    });
  }

  /** Closes the kept connections (after close has aborted what was in flight). */
  destroy(): void {
    this.shared?.agent.destroy();
    this.shared = undefined;
  }

  /**
   * One keep-alive agent for all requests, made like the one client-node made for this
   * request (same TLS options). Proxy agents are left as they are.
   */
  private reuse(made: HttpAgent): HttpAgent {
    const ctor = made.constructor;
    if (ctor !== HttpAgent && ctor !== HttpsAgent) return made;
    // Node keeps an agent's constructor options in `options` (not in its typings).
    const options = { ...((made as unknown as { options?: Record<string, unknown> }).options ?? {}) };
    const current = this.shared;
    if (current !== undefined && current.agent.constructor === ctor && sameTls(current.options, options)) return current.agent;
    current?.agent.destroy();
    // Idle connections close after a second: nothing lingers once the traffic stops.
    const agent = new (ctor as typeof HttpAgent)({ ...options, keepAlive: true, timeout: 1000, maxSockets: MAX_SOCKETS });
    this.shared = { agent, options };
    return agent;
  }

  /** The URL path of a collection, for watches. */
  collectionPath(resource: Resource): string {
    const ns = encodeURIComponent(this.namespace);
    return resource === 'configmaps' ? `/api/v1/namespaces/${ns}/configmaps` : `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`;
  }

  private async orUndefined<T>(p: Promise<T>): Promise<T | undefined> {
    try {
      return await p;
    } catch (err) {
      if (TaskGraphError.is(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  private async call<T>(resource: Resource, verb: Verb, name: string, run: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
    if (this.closed.aborted) throw new ClosedError('the Kubernetes coordinator is closed');
    // One controller with our own timer, not AbortSignal.any([AbortSignal.timeout(..), ..]):
    // Node 20 may collect a timeout signal held only by a composite, so the request would
    // never time out (nodejs/node#57736); a request stuck on a partitioned connection then
    // hangs for good.
    const deadline = new AbortController();
    const signal = deadline.signal;
    const timer = setTimeout(() => deadline.abort(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    timer.unref();
    const onClosed = (): void => deadline.abort(this.closed.reason);
    this.closed.addEventListener('abort', onClosed, { once: true });
    const middleware: ObservableMiddleware = {
      pre: (ctx: RequestContext) => {
        ctx.setSignal(signal);
        const made = ctx.getAgent();
        if (made !== undefined && !this.closed.aborted) ctx.setAgent(this.reuse(made as HttpAgent));
        return new Observable(Promise.resolve(ctx));
      },
      post: (rsp: ResponseContext) => new Observable(Promise.resolve(rsp)),
    };
    try {
      return await run({ middleware: [middleware], middlewareMergeStrategy: 'append' });
    } catch (err) {
      throw this.translate(err, resource, verb, name, signal);
    } finally {
      clearTimeout(timer);
      this.closed.removeEventListener('abort', onClosed);
    }
  }

  private translate(err: unknown, resource: Resource, verb: Verb, name: string, signal: AbortSignal): TaskGraphError {
    const what = `${verb} ${resource}${name === '' ? '' : ` ${JSON.stringify(name)}`}`;
    const write = WRITES.has(verb);
    if (this.closed.aborted) return new ClosedError(`the Kubernetes coordinator was closed during ${what}`, { cause: err });
    if (err instanceof ApiException) {
      const status = statusOf(err);
      const details = { status: err.code, reason: status.reason ?? '' };
      const message = `${what}: ${status.message ?? `HTTP ${err.code}`}`;
      switch (err.code) {
        case 404:
          return new NotFoundError(message, { cause: err, details });
        case 409:
          return status.reason === 'AlreadyExists' ? new AlreadyExistsError(message, { cause: err, details }) : new ConflictError(message, { cause: err, details });
        case 410:
          return new CompactedError(message, { cause: err, details });
        case 422:
          return new InvalidArgumentError(message, { cause: err, details });
        case 401:
        case 403:
          return new InternalError(`${message} (the API server refused the credentials or the Role: see deploy/k8s for the RBAC this backend needs)`, {
            cause: err,
            details,
          });
        case 429:
        case 503:
          return new UnavailableError(message, { cause: err, details });
        default:
          if (err.code >= 500) {
            // A 500 or 504 may come after storage applied the write (an etcd timeout).
            return write ? new IndeterminateError(message, { cause: err, details }) : new UnavailableError(message, { cause: err, details });
          }
          return new InternalError(message, { cause: err, details });
      }
    }
    if (TaskGraphError.is(err)) return err;
    const untrusted = untrustedServerError(err, this.server);
    if (untrusted !== undefined) return untrusted;
    const e = err as { name?: string; code?: string; message?: string };
    const timedOut = signal.aborted;
    const detail = timedOut ? `no answer within ${this.timeoutMs} ms` : (e.message ?? String(err));
    // Refused connections never carried the request; anything else may have.
    const notSent = e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN';
    if (write && !notSent) return new IndeterminateError(`${what}: ${detail}`, { cause: err });
    return new UnavailableError(`${what}: ${detail}`, { cause: err });
  }
}

const TLS_FIELDS = ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername'] as const;

function sameTls(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  return TLS_FIELDS.every((f) => {
    const x = a[f];
    const y = b[f];
    if (Buffer.isBuffer(x) && Buffer.isBuffer(y)) return x.equals(y);
    return x === y;
  });
}

function listParams(o: ListOptions): {
  labelSelector: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
  limit?: number;
} {
  const params: { labelSelector: string; resourceVersion?: string; resourceVersionMatch?: string; limit?: number } = { labelSelector: o.labelSelector };
  if (o.resourceVersion !== undefined) params.resourceVersion = o.resourceVersion;
  if (o.exact === true) params.resourceVersionMatch = 'Exact';
  if (o.limit !== undefined) params.limit = o.limit;
  return params;
}
