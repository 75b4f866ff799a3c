import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { status as Status } from '@grpc/grpc-js';
import type { Client } from '@grpc/grpc-js';
import type { InboundRequest } from '@taskgraph/api';
import { createGrpcTransport } from '../src/index.js';
import type { GrpcTransport, GrpcTransportServer } from '../src/index.js';
import { bytes, goodHeaders, plainCall, plainClient, plainMetadata, text } from './helpers.js';

describe('a plain grpc-js client calling a task method', () => {
  let transport: GrpcTransport;
  let server: GrpcTransportServer;
  let client: Client;
  const seen: InboundRequest[] = [];

  beforeEach(async () => {
    seen.length = 0;
    transport = await createGrpcTransport('grpc://127.0.0.1:0');
    server = await transport.listen({
      methods: ['Echo', 'Upper'],
      handler: async (req) => {
        seen.push(req);
        if (req.method === 'Upper') return bytes(text(req.payload).toUpperCase());
        return req.payload;
      },
    });
    client = plainClient(server.address);
  });

  afterEach(async () => {
    client.close();
    await transport.close();
  });

  it('gets exactly the bytes the handler returned, and the handler gets exactly the bytes sent', async () => {
    const payload = Buffer.from([0, 1, 2, 250, 255, 0]);
    const r = await plainCall(client, '/taskgraph.v1.Task/Echo', payload, plainMetadata(goodHeaders));
    expect(r.error).toBeNull();
    expect(r.value).toEqual(payload);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.method).toBe('Echo');
    expect(Buffer.from(seen[0]!.payload)).toEqual(payload);
    expect(seen[0]!.meta).toEqual({ job: 'job-1', from: -1, to: 2, epoch: 4, token: '9', requestId: 'plain-1' });

    const upper = await plainCall(client, '/taskgraph.v1.Task/Upper', Buffer.from('abc'), plainMetadata(goodHeaders));
    expect(upper.value?.toString()).toBe('ABC');
  });

  it('serves an empty payload', async () => {
    const r = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.alloc(0), plainMetadata(goodHeaders));
    expect(r.error).toBeNull();
    expect(r.value?.length).toBe(0);
  });

  it('decodes percent-encoded job and request id', async () => {
    const md = plainMetadata({ ...goodHeaders, 'tg-job': 'team%2Fjob%20%C3%A9', 'tg-request-id': 'r%3A1' });
    const r = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('x'), md);
    expect(r.error).toBeNull();
    expect(seen[0]!.meta.job).toBe('team/job é');
    expect(seen[0]!.meta.requestId).toBe('r:1');
  });

  it('answers UNIMPLEMENTED for a method that is not served, and for another service', async () => {
    const r = await plainCall(client, '/taskgraph.v1.Task/Nope', Buffer.from('x'), plainMetadata(goodHeaders));
    expect(r.error?.code).toBe(Status.UNIMPLEMENTED);
    const other = await plainCall(client, '/other.Service/Echo', Buffer.from('x'), plainMetadata(goodHeaders));
    expect(other.error?.code).toBe(Status.UNIMPLEMENTED);
    expect(seen).toHaveLength(0);
  });

  it('sees serve() replace the served methods at run time', async () => {
    server.serve(['Upper', 'Late']);
    const echo = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('x'), plainMetadata(goodHeaders));
    expect(echo.error?.code).toBe(Status.UNIMPLEMENTED);
    const late = await plainCall(client, '/taskgraph.v1.Task/Late', Buffer.from('late'), plainMetadata(goodHeaders));
    expect(late.error).toBeNull();
    expect(late.value?.toString()).toBe('late');
    server.serve([]);
    const none = await plainCall(client, '/taskgraph.v1.Task/Upper', Buffer.from('x'), plainMetadata(goodHeaders));
    expect(none.error?.code).toBe(Status.UNIMPLEMENTED);
    server.serve(['Echo']);
    const again = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('y'), plainMetadata(goodHeaders));
    expect(again.value?.toString()).toBe('y');
    expect(server.stats().methods).toEqual(['Echo']);
  });

  it('rejects bad method names in serve()', () => {
    expect(() => server.serve(['ok', 'not/ok'])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => server.serve(['1abc'])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  describe('metadata validation', () => {
    const cases: Array<[string, Record<string, string>]> = [
      ['missing tg-job', { ...goodHeaders, 'tg-job': '' }],
      ['a non-numeric epoch', { ...goodHeaders, 'tg-epoch': 'three' }],
      ['a negative epoch', { ...goodHeaders, 'tg-epoch': '-1' }],
      ['a fractional target', { ...goodHeaders, 'tg-to': '1.5' }],
      ['a sender below -1', { ...goodHeaders, 'tg-from': '-2' }],
      ['a non-decimal token', { ...goodHeaders, 'tg-token': '0x10' }],
      ['a bad percent escape in the job', { ...goodHeaders, 'tg-job': '%E0%A4%A' }],
      ['an epoch beyond a safe integer', { ...goodHeaders, 'tg-epoch': '99999999999999999' }],
    ];
    for (const [name, headers] of cases) {
      it(`answers INVALID_ARGUMENT for ${name} and keeps serving`, async () => {
        const filtered = Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== ''));
        const r = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('x'), plainMetadata(filtered));
        expect(r.error?.code).toBe(Status.INVALID_ARGUMENT);
        expect(r.trailers?.get('tg-error-code')).toEqual(['INVALID_ARGUMENT']);
        expect(seen).toHaveLength(0);
        const ok = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('ok'), plainMetadata(goodHeaders));
        expect(ok.value?.toString()).toBe('ok');
      });
    }

    it('reads the one-header envelope the transport sends, and refuses a malformed one', async () => {
      const ok = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('env'), plainMetadata({ 'tg-env': 'job%2Fa;-1;0;4;17;req%3B1' }));
      expect(ok.value?.toString()).toBe('env');
      expect(seen.at(-1)?.meta).toEqual({ job: 'job/a', from: -1, to: 0, epoch: 4, token: '17', requestId: 'req;1' });
      for (const bad of ['j;1;0;4;17', 'j;1;0;four;17;r', 'j;1;0;4;0x1;r', ';1;0;4;17;r']) {
        const r = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('x'), plainMetadata({ 'tg-env': bad }));
        expect(r.error?.code, bad).toBe(Status.INVALID_ARGUMENT);
        expect(r.error?.details).toMatch(/tg-env|request meta job/);
      }
    });

    it('names every missing key', async () => {
      for (const key of Object.keys(goodHeaders)) {
        const headers = Object.fromEntries(Object.entries(goodHeaders).filter(([k]) => k !== key));
        const r = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('x'), plainMetadata(headers));
        expect(r.error?.code).toBe(Status.INVALID_ARGUMENT);
        expect(r.error?.details).toContain(key);
      }
    });

    it('rejects a key given twice', async () => {
      const md = plainMetadata(goodHeaders);
      md.add('tg-epoch', '5');
      const r = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('x'), md);
      expect(r.error?.code).toBe(Status.INVALID_ARGUMENT);
      expect(r.error?.details).toContain('tg-epoch');
    });
  });
});

describe('the service name', () => {
  it('is configurable, and both ends use it', async () => {
    const transport = await createGrpcTransport({ host: '127.0.0.1', service: 'acme.jobs.v2.Worker' });
    const server = await transport.listen({ methods: ['Echo'], handler: async (req) => req.payload });
    const client = plainClient(server.address);
    try {
      const r = await plainCall(client, '/acme.jobs.v2.Worker/Echo', Buffer.from('hi'), plainMetadata(goodHeaders));
      expect(r.value?.toString()).toBe('hi');
      const wrong = await plainCall(client, '/taskgraph.v1.Task/Echo', Buffer.from('hi'), plainMetadata(goodHeaders));
      expect(wrong.error?.code).toBe(Status.UNIMPLEMENTED);
      const out = await transport.call(server.address, 'Echo', { job: 'j', from: 0, to: 0, epoch: 0, token: '1', requestId: 'r' }, bytes('x'), {
        timeoutMs: 10_000,
      });
      expect(text(out)).toBe('x');
    } finally {
      client.close();
      await transport.close();
    }
  });
});
