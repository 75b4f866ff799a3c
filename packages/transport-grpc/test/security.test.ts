/**
 * The authenticated data plane: a job secret (HMAC both ways) and mutual TLS with a
 * job CA, each against real servers. Forged requests, and servers that do not hold
 * the job's credentials (what a forged address record points at), are refused.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Metadata, status as Status } from '@grpc/grpc-js';
import { ErrorCodes, NotOwnerError, TaskGraphError } from '@taskgraph/api';
import type { InboundRequest, RequestMeta } from '@taskgraph/api';
import { makeTestPki as makePki, rejection } from '@taskgraph/testkit';
import type { Pki } from '@taskgraph/testkit';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport } from '../src/index.js';
import { optionsFromUrl } from '../src/options.js';
import { bytes, goodHeaders, plainCall, plainClient, plainMetadata, text } from './helpers.js';

const SECRET = 'a job secret of thirty-two bytes';
/** What the server's handler knows and must never reach an unauthenticated caller. */
const JOB = 'payroll-7f3a';
const TOKEN = '987654321987';
const EPOCH = 4242;
const opts = { timeoutMs: 10_000 };
const request = (): RequestMeta => ({ job: JOB, from: 0, to: 1, epoch: EPOCH, token: TOKEN, requestId: 'r-1' });

/** A handler that echoes, and records each request it saw; `Leak` answers with everything it knows. */
function recorder() {
  const seen: InboundRequest[] = [];
  const handler = async (req: InboundRequest): Promise<Uint8Array> => {
    seen.push(req);
    if (req.method === 'Leak') throw new NotOwnerError(`job ${JOB} token ${TOKEN} epoch ${EPOCH}`, { details: { job: JOB, token: TOKEN, current: EPOCH } });
    return req.payload;
  };
  return { seen, handler };
}

/** Everything an answer carries a caller could read. */
function answerText(error: { details?: string; metadata?: Metadata } | null, trailers: Metadata | undefined): string {
  const parts = [error?.details ?? ''];
  for (const md of [error?.metadata, trailers]) {
    for (const [k, v] of Object.entries(md?.getMap() ?? {})) parts.push(k, Buffer.isBuffer(v) ? v.toString('utf8') : String(v));
  }
  return parts.join('\n');
}

const transports: GrpcTransport[] = [];
async function transport(options: Parameters<typeof createGrpcTransport>[0]): Promise<GrpcTransport> {
  const t = await createGrpcTransport(options);
  transports.push(t);
  return t;
}
afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
});

describe('job secret', () => {
  it('serves a caller holding the secret, and the handler knows the caller is authenticated', async () => {
    const { seen, handler } = recorder();
    const node = await transport({ secret: SECRET });
    const server = await node.listen({ methods: ['Echo'], handler });
    expect(text(await node.call(server.address, 'Echo', request(), bytes('hello'), opts))).toBe('hello');
    expect(seen.map((r) => r.authenticated)).toEqual([true]);
  });

  it('without a secret nothing is authenticated', async () => {
    const { seen, handler } = recorder();
    const node = await transport({});
    const server = await node.listen({ methods: ['Echo'], handler });
    await node.call(server.address, 'Echo', request(), bytes('x'), opts);
    expect(seen.map((r) => r.authenticated)).toEqual([false]);
  });

  it('a forged request (no credential, a bad one, a replayed one for another method) gets UNAUTHENTICATED naming no job, token or epoch', async () => {
    const { seen, handler } = recorder();
    const node = await transport({ secret: SECRET });
    const server = await node.listen({ methods: ['Echo', 'Leak'], handler });
    const client = plainClient(server.address);
    const headers = { ...goodHeaders, 'tg-job': JOB, 'tg-token': TOKEN, 'tg-epoch': String(EPOCH) };
    const forgeries = [
      plainMetadata(headers),
      plainMetadata({ ...headers, 'tg-auth': `v1.${Date.now()}.AAAAAAAAAAAAAAAA.${'A'.repeat(43)}` }),
      plainMetadata({ ...headers, 'tg-auth': 'garbage' }),
      plainMetadata({ 'tg-env': 'not;an;envelope' }),
    ];
    try {
      for (const md of forgeries) {
        for (const method of ['Echo', 'Leak']) {
          const { error, trailers } = await plainCall(client, `/taskgraph.v1.Task/${method}`, Buffer.from('x'), md);
          expect(error?.code).toBe(Status.UNAUTHENTICATED);
          const answer = answerText(error, trailers);
          expect(answer).toContain('UNAUTHENTICATED');
          for (const secret of [JOB, TOKEN, String(EPOCH)]) expect(answer).not.toContain(secret);
        }
      }
    } finally {
      client.close();
    }
    expect(seen).toEqual([]);
  });

  it('a caller with another secret is refused and learns nothing (its own transport reports UNAUTHENTICATED)', async () => {
    const { seen, handler } = recorder();
    const node = await transport({ secret: SECRET });
    const server = await node.listen({ methods: ['Leak'], handler });
    const outsider = await transport({ secret: 'another secret, also long enough' });
    const err = await rejection(outsider.call(server.address, 'Leak', request(), bytes('x'), opts));
    expect(err.code).toBe(ErrorCodes.Unauthenticated);
    for (const secret of [JOB, TOKEN, String(EPOCH)]) expect(JSON.stringify({ m: err.message, d: err.details })).not.toContain(secret);
    expect(seen).toEqual([]);
  });

  it('a server without the secret (a forged address record points at it) is refused: its answer, success or error, is dropped', async () => {
    const impostorSeen = recorder();
    const plainImpostor = await transport({});
    const wrongImpostor = await transport({ secret: 'not the job secret, but as long' });
    const caller = await transport({ secret: SECRET });
    for (const impostor of [plainImpostor, wrongImpostor]) {
      const server = await impostor.listen({ methods: ['Echo', 'Leak'], handler: impostorSeen.handler });
      for (const method of ['Echo', 'Leak']) {
        const err = await rejection(caller.call(server.address, method, request(), bytes('forged answer'), opts));
        expect(err).toBeInstanceOf(TaskGraphError);
        expect(err.code).toBe(ErrorCodes.Unauthenticated);
        expect(err.retryable).toBe(true);
        expect(err.message).toContain('dropped');
      }
    }
    // The plain impostor ran its handler (it authenticates no one); the caller still used nothing of it.
    expect(impostorSeen.seen.length).toBe(2);
  });

  it('errors from a genuine node keep their code and details for the authenticated caller', async () => {
    const { handler } = recorder();
    const node = await transport({ secret: SECRET });
    const server = await node.listen({ methods: ['Leak'], handler });
    const err = await rejection(node.call(server.address, 'Leak', request(), bytes('x'), opts));
    expect(err.code).toBe(ErrorCodes.NotOwner);
    expect(err.details).toEqual({ job: JOB, token: TOKEN, current: EPOCH });
    const missing = await rejection(node.call(server.address, 'Nope', request(), bytes('x'), opts));
    expect(missing.code).toBe(ErrorCodes.MethodNotFound);
  });

  it('is refused when shorter than 16 bytes', async () => {
    await expect(createGrpcTransport({ secret: 'short' })).rejects.toThrow(/at least 16 bytes/);
  });
});

describe('mutual TLS with a job CA', () => {
  let job: Pki;
  let other: Pki;
  beforeAll(() => {
    job = makePki('job');
    other = makePki('other');
  });
  afterAll(() => {
    job?.remove();
    other?.remove();
  });

  const tlsOf = (pki: Pki, name: string, ca = pki.ca) => {
    const files = pki.issue(name);
    return { ca: pki.pem(ca), cert: pki.pem(files.cert), key: pki.pem(files.key) };
  };

  it('nodes with certificates from the job CA call each other, authenticated', async () => {
    const { seen, handler } = recorder();
    const a = await transport({ tls: tlsOf(job, 'node-a') });
    const b = await transport({ tls: tlsOf(job, 'node-b') });
    const server = await a.listen({ methods: ['Echo'], handler });
    expect(text(await b.call(server.address, 'Echo', request(), bytes('sealed'), opts))).toBe('sealed');
    expect(seen.map((r) => r.authenticated)).toEqual([true]);
  });

  it('a caller without a job certificate never reaches the handler', async () => {
    const { seen, handler } = recorder();
    const node = await transport({ tls: tlsOf(job, 'node-a') });
    const server = await node.listen({ methods: ['Leak'], handler });
    // A certificate from another CA, though it trusts the job CA; and a plain caller.
    const outsider = await transport({ tls: { ...tlsOf(other, 'outsider'), ca: job.pem(job.ca) } });
    const plain = await transport({});
    for (const t of [outsider, plain]) {
      const err = await rejection(t.call(server.address, 'Leak', request(), bytes('x'), { timeoutMs: 5_000 }));
      expect([ErrorCodes.Unavailable, ErrorCodes.DeadlineExceeded]).toContain(err.code);
      for (const secret of [JOB, TOKEN, String(EPOCH)]) expect(JSON.stringify({ m: err.message, d: err.details })).not.toContain(secret);
    }
    expect(seen).toEqual([]);
  });

  it('a server without a job certificate (a forged address record) fails the handshake: the caller sends it nothing', async () => {
    const { seen, handler } = recorder();
    const impostor = await transport({ tls: { ...tlsOf(other, 'impostor'), ca: job.pem(job.ca) } });
    const server = await impostor.listen({ methods: ['Echo'], handler });
    const caller = await transport({ tls: tlsOf(job, 'node-a') });
    const err = await rejection(caller.call(server.address, 'Echo', request(), bytes('x'), { timeoutMs: 5_000 }));
    expect([ErrorCodes.Unavailable, ErrorCodes.DeadlineExceeded]).toContain(err.code);
    expect(seen).toEqual([]);
  });
});

describe('configuration by URL and environment', () => {
  let job: Pki;
  beforeAll(() => {
    job = makePki('url');
  });
  afterAll(() => job?.remove());

  it('grpcs:// takes the job CA, certificate and key as files, from the URL or the environment', async () => {
    const a = job.issue('a');
    const b = job.issue('b');
    const { seen, handler } = recorder();
    const byUrl = await transport(`grpcs://127.0.0.1:0?ca=${job.ca}&cert=${a.cert}&key=${a.key}`);
    const byEnv = await transport(optionsFromUrl('grpcs://127.0.0.1:0', { TASKGRAPH_TLS_CA: job.ca, TASKGRAPH_TLS_CERT: b.cert, TASKGRAPH_TLS_KEY: b.key }));
    const server = await byUrl.listen({ methods: ['Echo'], handler });
    expect(text(await byEnv.call(`grpcs://${server.address}`, 'Echo', request(), bytes('ok'), opts))).toBe('ok');
    expect(seen.map((r) => r.authenticated)).toEqual([true]);
  });

  it('the job secret comes from a file (URL or environment) or the environment, never the URL itself', async () => {
    const file = join(job.dir, 'secret');
    writeFileSync(file, `${SECRET}\n`);
    const fromFile = optionsFromUrl(`grpc://127.0.0.1:0?secretFile=${file}`, {});
    expect(Buffer.from(fromFile.secret as Uint8Array).toString()).toBe(SECRET);
    expect(Buffer.from(optionsFromUrl('grpc://127.0.0.1:0', { TASKGRAPH_JOB_SECRET_FILE: file }).secret as Uint8Array).toString()).toBe(SECRET);
    expect(optionsFromUrl('grpc://127.0.0.1:0', { TASKGRAPH_JOB_SECRET: SECRET }).secret).toBe(SECRET);
    expect(() => optionsFromUrl(`grpc://127.0.0.1:0?secret=${SECRET}`, {})).toThrow(/unknown option "secret"/);
    // Two transports configured the two ways talk to each other.
    const { handler } = recorder();
    const a = await transport(fromFile);
    const b = await transport(optionsFromUrl('grpc://127.0.0.1:0', { TASKGRAPH_JOB_SECRET: SECRET }));
    const server = await a.listen({ methods: ['Echo'], handler });
    expect(text(await b.call(server.address, 'Echo', request(), bytes('ok'), opts))).toBe('ok');
  });

  it('says what is wrong, naming files but never their content', () => {
    const { cert, key } = job.issue('c');
    const cases: Array<[string, NodeJS.ProcessEnv, RegExp]> = [
      ['grpcs://127.0.0.1:0', {}, /grpcs:\/\/ but has no ca, cert, key/],
      [`grpcs://127.0.0.1:0?ca=${job.ca}&cert=${cert}`, {}, /has no key/],
      [`grpc://127.0.0.1:0?ca=${job.ca}&cert=${cert}&key=${key}`, {}, /write it grpcs:\/\//],
      ['grpc://127.0.0.1:0', { TASKGRAPH_TLS_CERT: cert }, /are set but the transport URL is grpc:\/\//],
      [`grpcs://127.0.0.1:0?ca=/nonexistent/ca.pem&cert=${cert}&key=${key}`, {}, /ca file "\/nonexistent\/ca.pem" cannot be read \(ENOENT\)/],
      [`grpcs://127.0.0.1:0?ca=${join(job.dir, 'c.ext')}&cert=${cert}&key=${key}`, {}, /is not PEM/],
      ['grpc://127.0.0.1:0?secretFile=', {}, /secretFile must name a file/],
    ];
    for (const [url, env, message] of cases) expect(() => optionsFromUrl(url, env)).toThrow(message);
  });

  it('refuses a secret file holding fewer than 16 bytes', async () => {
    const weak = join(job.dir, 'weak');
    writeFileSync(weak, 'hunter2\n');
    await expect(createGrpcTransport(`grpc://127.0.0.1:0?secretFile=${weak}`)).rejects.toThrow(/at least 16 bytes/);
  });
});
