/**
 * A small Consul HTTP client over node:http/https. It knows when a request left
 * the process, so a failure can be told apart as "not applied" (UnavailableError:
 * connection refused, reset before the request was sent, 5xx that Consul answers
 * before applying) or "sent, outcome unknown" (IndeterminateError: the answer to a
 * write was lost or late).
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import {
  IndeterminateError,
  InvalidArgumentError,
  TaskGraphError,
  UnavailableError,
  abortError,
} from '@taskgraph/api';
import type { Clock } from '@taskgraph/api';
import type { ConsulTlsOptions } from './options.js';

export interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface HttpCall {
  readonly method: 'GET' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly query?: Readonly<Record<string, string | true>>;
  readonly body?: string | Uint8Array;
  /** True when the call may change state: a lost answer is then Indeterminate. */
  readonly write: boolean;
  /** What the caller is doing, for error messages ("create of \"a/b\""). */
  readonly what: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface ConsulHttpOptions {
  readonly base: URL;
  readonly tls: ConsulTlsOptions | undefined;
  readonly token: string | undefined;
  readonly datacenter: string | undefined;
  readonly clock: Clock;
  readonly requestTimeoutMs: number;
}

/** Consul's 500 answers that mean the request was refused before it was applied. */
const NOT_APPLIED_500 =
  /No cluster leader|No known Consul servers|No path to datacenter|Remote DC has no server|Not ready to serve consistent reads|rate limit|Raft leader not found|Leader not found|rpc error making call: EOF/i;

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);

class TimedOut extends Error {}

const IDLE_SOCKET_MS = 4_000;

export class ConsulHttp {
  readonly #options: ConsulHttpOptions;
  readonly #agent: HttpAgent;
  readonly #secure: boolean;
  #closed = false;

  constructor(options: ConsulHttpOptions) {
    this.#options = options;
    this.#secure = options.base.protocol === 'https:';
    if (this.#secure) {
      const tls = options.tls ?? {};
      this.#agent = new HttpsAgent({
        keepAlive: true,
        // Idle pooled connections are dropped before a server or proxy is likely to close them under us.
        timeout: IDLE_SOCKET_MS,
        ...(tls.ca === undefined ? {} : { ca: tls.ca as string | Buffer | (string | Buffer)[] }),
        ...(tls.cert === undefined ? {} : { cert: tls.cert }),
        ...(tls.key === undefined ? {} : { key: tls.key }),
        ...(tls.servername === undefined ? {} : { servername: tls.servername }),
        rejectUnauthorized: tls.rejectUnauthorized ?? true,
      });
    } else {
      this.#agent = new HttpAgent({ keepAlive: true, timeout: IDLE_SOCKET_MS });
    }
  }

  /**
   * Sends one request. A read that meets a kept-alive connection the agent has
   * closed meanwhile is sent again on a fresh one; a write is not, since a reset
   * connection cannot tell "never read" from "applied, answer lost".
   */
  async request(call: HttpCall): Promise<HttpAnswer> {
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new UnavailableError(`${call.what}: the Consul client is closed`);
      try {
        return await this.#once(call);
      } catch (err) {
        if (!(err instanceof StaleSocket)) throw err;
        if (attempt >= 2) throw new UnavailableError(`${call.what}: Consul kept closing the connection`, { cause: err });
      }
    }
  }

  #once(call: HttpCall): Promise<HttpAnswer> {
    const { clock, base } = this.#options;
    const signal = call.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal, call.what));
    const url = new URL(call.path, base);
    for (const [k, v] of Object.entries(call.query ?? {})) url.searchParams.append(k, v === true ? '' : v);
    if (this.#options.datacenter !== undefined) url.searchParams.set('dc', this.#options.datacenter);
    // Consul reads a bare flag (`?recurse`) the same as `?recurse=`; keep the short form in logs and traces.
    const search = url.search.replace(/=(?=&|$)/g, '');
    const body = call.body === undefined ? undefined : typeof call.body === 'string' ? Buffer.from(call.body) : Buffer.from(call.body);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.#options.token !== undefined) headers['X-Consul-Token'] = this.#options.token;
    if (body !== undefined) {
      headers['Content-Length'] = String(body.length);
      headers['Content-Type'] = 'application/octet-stream';
    } else if (call.method !== 'GET') {
      headers['Content-Length'] = '0';
    }
    const timeoutMs = call.timeoutMs ?? this.#options.requestTimeoutMs;

    return new Promise<HttpAnswer>((resolve, reject) => {
      let sent = false;
      let answered = false;
      let settled = false;
      const pending: { req?: ClientRequest } = {};
      const timer = clock.setTimeout(() => pending.req?.destroy(new TimedOut()), timeoutMs);
      timer.unref?.();
      const onAbort = (): void => {
        pending.req?.destroy(abortError(signal as AbortSignal, call.what));
      };
      const finish = (outcome: { answer: HttpAnswer } | { error: unknown }): void => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if ('answer' in outcome) resolve(outcome.answer);
        else reject(this.#mapError(outcome.error, call, sent, answered, pending.req, timeoutMs));
      };
      const send = this.#secure ? httpsRequest : httpRequest;
      const req = send(
        {
          agent: this.#agent,
          protocol: base.protocol,
          hostname: base.hostname.replace(/^\[|\]$/g, ''),
          port: base.port,
          method: call.method,
          path: `${url.pathname}${search}`,
          headers,
        },
        (res: IncomingMessage) => {
          answered = true;
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => finish({ answer: { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) } }));
          res.on('error', (err) => finish({ error: err }));
          res.on('aborted', () => finish({ error: new Error('the answer was cut off') }));
        },
      );
      pending.req = req;
      req.on('finish', () => {
        sent = true;
      });
      req.on('error', (err) => finish({ error: err }));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end(body);
    });
  }

  #mapError(err: unknown, call: HttpCall, sent: boolean, answered: boolean, req: ClientRequest | undefined, timeoutMs: number): unknown {
    if (TaskGraphError.is(err)) return err;
    const code = (err as { code?: unknown }).code;
    const message = err instanceof Error ? err.message : String(err);
    if (err instanceof TimedOut) {
      if (call.write && sent) {
        return new IndeterminateError(`${call.what}: Consul did not answer within ${timeoutMs} ms; the write may have been applied`, { cause: err });
      }
      return new UnavailableError(`${call.what}: Consul did not answer within ${timeoutMs} ms`, { cause: err });
    }
    // A kept-alive connection the agent had already closed: a read is safe to send again.
    if (!call.write && !answered && req?.reusedSocket === true && code === 'ECONNRESET') return new StaleSocket();
    if (typeof code === 'string' && CONNECT_ERRORS.has(code)) {
      return new UnavailableError(`${call.what}: cannot reach Consul at ${this.#options.base.host} (${code})`, { cause: err });
    }
    // OpenSSL's verification codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, SELF_SIGNED_CERT_IN_CHAIN, ...) and Node's ERR_TLS_*/ERR_SSL_*.
    if (typeof code === 'string' && /CERT|SIGNATURE|ISSUER|^ERR_TLS|^ERR_SSL|HANDSHAKE/.test(code)) {
      return new UnavailableError(`${call.what}: TLS handshake with Consul at ${this.#options.base.host} failed: ${message}`, { cause: err });
    }
    if (call.write && sent) {
      return new IndeterminateError(`${call.what}: the connection to Consul broke before the answer came (${message}); the write may have been applied`, {
        cause: err,
      });
    }
    return new UnavailableError(`${call.what}: the connection to Consul broke (${message})`, { cause: err });
  }

  /** Closes pooled connections; requests still running fail. */
  close(): void {
    this.#closed = true;
    this.#agent.destroy();
  }
}

class StaleSocket extends Error {}

/** The error for an answer the caller does not expect (anything but the statuses it handles). */
export function statusError(answer: HttpAnswer, call: Pick<HttpCall, 'what' | 'write'>): TaskGraphError {
  const text = answer.body.toString('utf8').trim().slice(0, 500);
  const said = text === '' ? `HTTP ${answer.status}` : `HTTP ${answer.status}: ${text}`;
  const s = answer.status;
  if (s === 400 || s === 404 || s === 405 || s === 413) return new InvalidArgumentError(`${call.what}: Consul refused the request (${said})`);
  if (s === 401 || s === 403) return new InvalidArgumentError(`${call.what}: Consul refused the ACL token (${said}); check the token and its policy`);
  if (s === 429 || s === 503) return new UnavailableError(`${call.what}: Consul is unavailable or rate-limiting (${said})`);
  if (s === 500 && NOT_APPLIED_500.test(text)) return new UnavailableError(`${call.what}: Consul could not serve the request (${said})`);
  if (s >= 500 && call.write) {
    return new IndeterminateError(`${call.what}: Consul failed while applying the write (${said}); it may have been applied`);
  }
  if (s >= 500) return new UnavailableError(`${call.what}: Consul failed (${said})`);
  return new InvalidArgumentError(`${call.what}: unexpected answer from Consul (${said})`);
}

/** True when `err` says the request was not applied and may be sent again as is. */
export function retryable(err: unknown): boolean {
  return TaskGraphError.is(err) && err.retryable;
}

/** The Consul index a version or revision this backend handed out stands for, or undefined when it cannot be one. */
export function parseIndex(text: string): number | undefined {
  return /^[1-9]\d{0,15}$/.test(text) ? Number(text) : undefined;
}

/** X-Consul-Index, with Consul's rule that 0 (or nothing) counts as 1. */
export function consulIndex(answer: HttpAnswer): number {
  const raw = answer.headers['x-consul-index'];
  const n = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : 0;
  return n > 0 ? n : 1;
}
