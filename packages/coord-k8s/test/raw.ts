// Direct API calls to the emulator, as kubectl or another tool would make them (over
// HTTPS, trusting the emulator's CA).
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Harness } from './helpers.js';

export function call(h: Harness, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<unknown> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { Authorization: `Bearer ${h.emulator.token ?? ''}` };
  if (payload !== undefined) {
    headers['Content-Type'] = contentType;
    headers['Content-Length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const url = `${h.emulator.url}${path}`;
    const ca = h.emulator.ca;
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const parsed: unknown = text === '' ? undefined : JSON.parse(text);
        if ((res.statusCode ?? 500) >= 300) reject(new Error(`${method} ${path}: HTTP ${res.statusCode}: ${text}`));
        else resolve(parsed);
      });
      res.on('error', reject);
    };
    const req = ca === undefined ? httpRequest(url, { method, headers, agent: false }, onResponse) : httpsRequest(url, { method, headers, agent: false, ca }, onResponse);
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
