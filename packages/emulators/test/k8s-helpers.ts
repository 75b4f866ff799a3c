// Raw HTTP helpers for the Kubernetes emulator tests: plain requests and a watch
// reader that keeps every line (parsed or not) so tests can see exactly what the
// server wrote.
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { eventually } from '@taskgraph/testkit';
import type { K8sEmulator } from '../src/k8s/index.js';

export interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: unknown;
  readonly text: string;
}

/** A request to the emulator over its own scheme, trusting exactly its CA. */
export function send(em: K8sEmulator, path: string, options: RequestOptions, onResponse: (res: IncomingMessage) => void): ClientRequest {
  const url = `${em.url}${path}`;
  if (em.ca === undefined) return httpRequest(url, { ...options, agent: false }, onResponse);
  return httpsRequest(url, { ...options, agent: false, ca: em.ca }, onResponse);
}

export function call(
  em: K8sEmulator,
  method: string,
  path: string,
  body?: unknown,
  options: { contentType?: string; token?: string | null; raw?: string | Buffer } = {},
): Promise<Answer> {
  const payload = options.raw ?? (body === undefined ? undefined : JSON.stringify(body));
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? em.token : options.token;
  if (token !== undefined && token !== null) headers['Authorization'] = `Bearer ${token}`;
  if (payload !== undefined) {
    headers['Content-Type'] = options.contentType ?? 'application/json';
    headers['Content-Length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = send(em, path, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = undefined;
        try {
          parsed = text === '' ? undefined : JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed, text });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

export const CM = (ns = 'default') => `/api/v1/namespaces/${ns}/configmaps`;
export const LEASES = (ns = 'default') => `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`;

export interface WatchReader {
  readonly status: number;
  /** Every complete line, as written. */
  readonly lines: string[];
  /** The lines that parsed as JSON. */
  readonly events: unknown[];
  /** The bytes after the last newline when the stream ended. */
  tail: string;
  readonly ended: Promise<'end' | 'error'>;
  waitForEvents(n: number, timeoutMs?: number): Promise<unknown[]>;
  close(): void;
}

export function watch(em: K8sEmulator, path: string): Promise<WatchReader> {
  return new Promise((resolve, reject) => {
    const req = send(em, path, { method: 'GET', headers: em.token === undefined ? {} : { Authorization: `Bearer ${em.token}` } }, (res) => {
      let buffer = '';
      let settle!: (v: 'end' | 'error') => void;
      const ended = new Promise<'end' | 'error'>((r) => (settle = r));
      const reader: WatchReader = {
        status: res.statusCode ?? 0,
        lines: [],
        events: [],
        tail: '',
        ended,
        async waitForEvents(n, timeoutMs = 10_000) {
          await eventually(`${n} events arrive`, () => {
            // Thrown, not returned, so a timeout shows the lines that did arrive.
            if (reader.events.length < n) throw new Error(`got ${JSON.stringify(reader.lines)}`);
            return true;
          }, { timeoutMs });
          return reader.events.slice(0, n);
        },
        close() {
          req.destroy();
        },
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let i: number;
        while ((i = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, i);
          buffer = buffer.slice(i + 1);
          reader.lines.push(line);
          try {
            reader.events.push(JSON.parse(line));
          } catch {
            // Kept in `lines` only: tests look at garbled lines there.
          }
        }
      });
      res.on('end', () => {
        reader.tail = buffer;
        settle('end');
      });
      res.on('error', () => {
        reader.tail = buffer;
        settle('error');
      });
      res.on('aborted', () => {
        reader.tail = buffer;
        settle('error');
      });
      resolve(reader);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The open TCP handles of this process (servers and sockets). */
export function tcpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length;
}

/**
 * The TCP handle count once closed handles have been released (Node frees them a
 * tick or a few after `close`): polls until two samples 25 ms apart agree.
 */
export async function settledTcpHandles(): Promise<number> {
  let last = tcpHandles();
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 25));
    const now = tcpHandles();
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** The value at a path inside parsed JSON (undefined when any step is missing). */
export function pick(value: unknown, ...path: (string | number)[]): unknown {
  let v: unknown = value;
  for (const p of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

/** The string at a path inside parsed JSON; throws when it is not a string. */
export function str(value: unknown, ...path: (string | number)[]): string {
  const v = pick(value, ...path);
  if (typeof v !== 'string') throw new Error(`expected a string at ${path.join('.')}, got ${JSON.stringify(v)}`);
  return v;
}
