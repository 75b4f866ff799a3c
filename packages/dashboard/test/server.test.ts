import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { CompactedError, InvalidArgumentError, TaskGraphError, UnavailableError } from '@taskgraph/api';
import type { Coordinator, WatchBatch, WatchOptions } from '@taskgraph/api';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { createController, jobKeys } from '@taskgraph/core';
import { eventually } from '@taskgraph/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { startDashboard } from '../src/index.js';
import type { Dashboard, DashboardEvent, JobDelta, JobSnapshot, JobSummary, RequestRateSource } from '../src/index.js';
import { sseFrame } from '../src/sse.js';
import { SseReader, counting, get, startRegressionJob, waitUntilRunning } from './helpers.js';
import type { RunningJob } from './helpers.js';

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
const addr = (node: string, incarnation: number) => ({ nodeId: node, address: `local://${node}`, token: String(1000 + incarnation), incarnation });

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function memory(store = new MemoryStore()): Promise<Coordinator> {
  const c = await createMemoryCoordinator({ store, namespace: 'tg' });
  cleanups.push(() => c.close());
  return c;
}

async function dashboard(coordinator: Coordinator, options: Partial<Parameters<typeof startDashboard>[0]> = {}): Promise<Dashboard> {
  const d = await startDashboard({ coordinator, flushMs: 20, ...options });
  cleanups.push(() => d.close());
  return d;
}

function reader(url: string): SseReader {
  const r = new SseReader(url);
  cleanups.push(() => r.close());
  return r;
}

/** A job of `n` tasks, every task on its own node in incarnation 1, written as the runtime writes it. */
async function fakeJob(c: Coordinator, job: string, n: number): Promise<void> {
  await createController({ coordinator: c, job }).createJob({ numTasks: n, linkTypes: ['Parents', 'Children'] });
  const writes: Array<Promise<unknown>> = [];
  for (let t = 0; t < n; t++) {
    writes.push(c.create(jobKeys.incarnation(job, t), enc(1)));
    writes.push(c.create(jobKeys.addr(job, t), enc(addr(`node-${t}`, 1))));
    writes.push(c.create(jobKeys.node(job, `node-${t}`), enc({ nodeId: `node-${t}`, address: `local://node-${t}`, pid: 1, host: 'h', started: '' })));
    if (t > 0) writes.push(c.create(`${job}/meta/${t}/0/0/${Math.floor((t - 1) / 2)}/Children`, enc({ token: '1', metas: ['ParamReady'] })));
  }
  await Promise.all(writes);
}

describe('the page and its files', () => {
  it('serves the page, the app and cytoscape, elkjs and cytoscape-elk from node_modules, with a strict policy', async () => {
    const d = await dashboard(await memory());
    expect(d.url).toBe(`http://127.0.0.1:${d.port}/`);
    expect(d.host).toBe('127.0.0.1');
    const page = await get(d.url);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    // Every script the page loads is served here: nothing from a CDN.
    const scripts = [...page.body.matchAll(/<script src="([^"]+)"/g)].map((m) => m[1]!);
    expect(scripts).toEqual(['/vendor/cytoscape.min.js', '/vendor/elk.bundled.js', '/vendor/cytoscape-elk.js', '/app.js']);
    expect(page.body).not.toMatch(/https?:\/\//);
    for (const path of [...scripts, '/app.css']) {
      const r = await get(new URL(path, d.url).href);
      expect(r.status, path).toBe(200);
      expect(r.body.length, path).toBeGreaterThan(1000);
    }
    expect((await get(new URL('/vendor/cytoscape.min.js', d.url).href)).body).toContain('cytoscape');
    expect((await get(new URL('/vendor/elk.bundled.js', d.url).href)).headers['content-type']).toBe('text/javascript; charset=utf-8');
    const head = await get(d.url, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it('refuses other paths, methods and host names', async () => {
    const d = await dashboard(await memory());
    expect((await get(new URL('/nope', d.url).href)).status).toBe(404);
    expect((await get(new URL('/vendor/../package.json', d.url).href)).status).toBe(404);
    expect((await get(`${d.url}vendor/%2e%2e/package.json`)).status).toBe(404);
    const post = await get(d.url, {}, 'POST');
    expect(post.status).toBe(405);
    expect(post.headers['allow']).toBe('GET, HEAD');
    // DNS rebinding: a page of another site reaching 127.0.0.1 under its own name.
    const rebound = await get(d.url, { host: `evil.example:${d.port}` });
    expect(rebound.status).toBe(403);
    expect((await get(d.url, { host: `localhost:${d.port}` })).status).toBe(200);
    expect((await get(d.url, { host: `[::1]:${d.port}` })).status).toBe(200);
  });

  it('lists the jobs in the store', async () => {
    const c = await memory();
    await createController({ coordinator: c, job: 'alpha' }).createJob({ numTasks: 3, linkTypes: ['L'] });
    const beta = createController({ coordinator: c, job: '9-beta' });
    await beta.createJob({ numTasks: 2, linkTypes: ['L'] });
    await beta.finish('done');
    await c.create('broken/state/epoch', new TextEncoder().encode('4')); // keys, no spec
    await c.create('not-a-job', new TextEncoder().encode('x'));
    const d = await dashboard(c);
    const r = await get(new URL('/api/jobs', d.url).href);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual([
      { name: '9-beta', numTasks: 2, state: 'done', epoch: 0, readable: true },
      { name: 'alpha', numTasks: 3, state: 'running', epoch: 0, readable: true },
      { name: 'broken', state: 'unknown', epoch: 4, readable: false },
    ] satisfies JobSummary[]);
    expect((await get(new URL('/api/jobs?x=1', d.url).href)).status).toBe(400);
  });
});

describe('the event stream', () => {
  it('rejects a bad query with 400 and opens no stream', async () => {
    const c = counting(await memory());
    const d = await dashboard(c);
    for (const q of ['job=Bad!', 'job=', 'job=-a', `job=${'a'.repeat(64)}`, 'job=a&job=b', 'jobs=a', 'job=a&x=1', 'job=%3Cscript%3E', 'job=a/b']) {
      const r = await get(`${d.url}events?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.headers['content-type'], q).toBe('text/plain; charset=utf-8');
    }
    expect((await get(`${d.url}events?job=a`, {}, 'HEAD')).status).toBe(405);
    expect(c.watches).toEqual([]);
  });

  it('sends the job list, then the job snapshot, then deltas of what changed; one store watch for every page of a job', async () => {
    const c = counting(await memory());
    await fakeJob(c, 'small', 5);
    const d = await dashboard(c);
    const a = reader(`${d.url}events?job=small`);
    const snapA = await a.next<JobSnapshot>('page A has the snapshot', 'snapshot');
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(a.headers['cache-control']).toBe('no-store');
    expect(a.raw.startsWith('retry: 2000\n\n')).toBe(true);
    // Framing: every frame is "event: NAME\ndata: JSON\n\n".
    for (const frame of a.raw.split('\n\n').filter((f) => f.startsWith('event:'))) expect(frame).toMatch(/^event: [a-z-]+\ndata: [^\n]+$/);
    expect(await a.next<JobSummary[]>('page A has the job list', 'jobs')).toEqual([{ name: 'small', numTasks: 5, state: 'running', epoch: 0, readable: true }]);
    expect(snapA).toMatchObject({ job: 'small', exists: true, epoch: 0, state: 'running' });
    expect(snapA.tasks.map((t) => t.node)).toEqual(['node-0', 'node-1', 'node-2', 'node-3', 'node-4']);
    expect(snapA.edges.map((e) => e.id).sort()).toEqual(['0-1', '0-2', '1-3', '1-4']);

    const b = reader(`${d.url}events?job=small`);
    await b.next('page B has the snapshot', 'snapshot');
    expect(c.watches.filter((p) => p === 'small/')).toEqual(['small/']);
    expect(c.open()).toBe(1);

    const markA = a.events.length;
    const markB = b.events.length;
    await c.update(jobKeys.epoch('small'), new TextEncoder().encode('1'), (await c.get(jobKeys.epoch('small')))!.version);
    const da = await a.next<JobDelta>('page A has the epoch', 'delta', (x) => x.epoch === 1, markA);
    const db = await b.next<JobDelta>('page B has the epoch', 'delta', (x) => x.epoch === 1, markB);
    expect(da).toEqual({ job: 'small', epoch: 1, state: 'running', reason: null });
    expect(db).toEqual(da);
    // Only deltas after the snapshot: nothing is sent twice as a snapshot.
    expect(a.of('snapshot')).toHaveLength(1);

    a.close();
    b.close();
    await eventually('the last page gone, the watch ends', () => c.open() === 0);
  });

  it('O(change): in a 1,000-task job one task failing over is one small delta', async () => {
    const c = counting(await memory());
    await fakeJob(c, 'big', 1000);
    const d = await dashboard(c);
    const r = reader(`${d.url}events?job=big`);
    const snap = await r.next<JobSnapshot>('the snapshot', 'snapshot');
    expect(snap.tasks).toHaveLength(1000);
    expect(snap.edges).toHaveLength(999);
    const snapshotBytes = r.events.find((e) => e.event === 'snapshot')!.data.length;
    expect(snapshotBytes).toBeGreaterThan(100_000);
    const mark = r.events.length;

    await c.delete(jobKeys.addr('big', 700), (await c.get(jobKeys.addr('big', 700)))!.version);
    await c.update(jobKeys.incarnation('big', 700), enc(2), (await c.get(jobKeys.incarnation('big', 700)))!.version);
    await c.create(jobKeys.addr('big', 700), enc(addr('node-3', 2)));
    await r.next<JobDelta>('the failover', 'delta', (x) => x.events?.some((e) => e.kind === 'failover') === true, mark);
    const deltas = r.events.slice(mark).filter((e) => e.event === 'delta');
    const tasks = deltas.flatMap((e) => (JSON.parse(e.data) as JobDelta).tasks ?? []);
    expect(new Set(tasks.map((t) => t.id))).toEqual(new Set([700]));
    expect(tasks.at(-1)).toMatchObject({ id: 700, node: 'node-3', incarnation: 2, failovers: 1 });
    for (const e of deltas) expect(e.data.length).toBeLessThan(1500);
    expect(r.events.slice(mark).some((e) => e.event === 'snapshot')).toBe(false);
    // One list and one watch for the job, whatever happened since.
    expect(c.lists.filter((p) => p === 'big/')).toHaveLength(1);
    expect(c.watches.filter((p) => p === 'big/')).toHaveLength(1);
  });

  it('a stream without a job carries the job list only; a job made later appears, and its page gets it', async () => {
    const c = counting(await memory());
    const d = await dashboard(c, { jobsRefreshMs: 50 });
    const r = reader(`${d.url}events`);
    await r.next<JobSummary[]>('the empty job list', 'jobs', (j) => j.length === 0);
    const page = reader(`${d.url}events?job=later`);
    expect(await page.next<JobSnapshot>('the page of a job not made yet', 'snapshot')).toMatchObject({ job: 'later', exists: false, state: 'unknown', tasks: [] });
    await createController({ coordinator: c, job: 'later' }).createJob({ numTasks: 2, linkTypes: ['L'] });
    await r.next<JobSummary[]>('the job in the list', 'jobs', (j) => j.some((x) => x.name === 'later'));
    const made = await page.next<JobSnapshot>('the job made', 'snapshot', (s) => s.exists);
    expect(made.tasks).toHaveLength(2);
    expect(made.events).toEqual([expect.objectContaining({ kind: 'job-created' })]);
    expect(c.watches).toEqual(['later/']);
  });

  it('close() ends the open streams and the store watches, and refuses nothing half-way', async () => {
    const c = counting(await memory());
    await fakeJob(c, 'one', 2);
    await fakeJob(c, 'two', 2);
    const d = await startDashboard({ coordinator: c });
    const r1 = reader(`${d.url}events?job=one`);
    const r2 = reader(`${d.url}events?job=two`);
    const r3 = reader(`${d.url}events`);
    await r1.next('one', 'snapshot');
    await r2.next('two', 'snapshot');
    await r3.next('the list', 'jobs');
    expect(c.open()).toBe(2);
    await d.close();
    await d.close(); // idempotent
    await eventually('every stream ended', () => r1.ended && r2.ended && r3.ended);
    expect(c.open()).toBe(0);
    await expect(get(d.url)).rejects.toThrow();
  });

  it('close() does not wait for a store that does not answer', async () => {
    const inner = await memory();
    const c: Coordinator = Object.assign(Object.create(null) as object, {
      caps: inner.caps,
      list: (p: string) => (p === 'stuck/' ? new Promise(() => undefined) : inner.list(p)),
      watch: (p: string, o: WatchOptions) => inner.watch(p, o),
    }) as Coordinator;
    const d = await startDashboard({ coordinator: c });
    const r = reader(`${d.url}events?job=stuck`);
    await eventually('the stream is open', () => r.status === 200);
    await d.close();
    await eventually('the stream ended', () => r.ended);
  });

  it('a page that comes as the last one leaves gets its snapshot (a new feed if the old one is stopping)', async () => {
    const c = counting(await memory());
    await fakeJob(c, 'again', 2);
    const d = await dashboard(c);
    for (let i = 0; i < 5; i++) {
      const first = reader(`${d.url}events?job=again`);
      await first.next(`snapshot ${i}`, 'snapshot');
      first.close();
      const next = reader(`${d.url}events?job=again`);
      await next.next(`the next page's snapshot ${i}`, 'snapshot');
      next.close();
    }
    await eventually('no watch left', () => c.open() === 0);
  });

  it('at most maxClients streams are open at once (503 beyond); a closed one frees its place', async () => {
    const c = await memory();
    await fakeJob(c, 'cap', 2);
    const d = await dashboard(c, { maxClients: 2 });
    const r1 = reader(`${d.url}events?job=cap`);
    const r2 = reader(`${d.url}events?job=cap`);
    await r1.next('first', 'snapshot');
    await r2.next('second', 'snapshot');
    const third = await get(`${d.url}events?job=cap`);
    expect(third.status).toBe(503);
    expect(third.headers['retry-after']).toBe('5');
    r2.close();
    await eventually('a freed place is given again', async () => {
      const r = reader(`${d.url}events?job=cap`);
      await eventually('answered', () => r.status !== 0 || r.ended);
      return r.status === 200;
    });
  });

  it('store trouble: a failing watch is retried (pages are told), a compaction is a re-list and a new snapshot', async () => {
    const inner = await memory();
    await fakeJob(inner, 'flaky', 3);
    let failNext: TaskGraphError | undefined;
    let lists = 0;
    const c: Coordinator = Object.assign(Object.create(null) as object, {
      caps: inner.caps,
      list: (p: string) => {
        if (p === 'flaky/') lists++;
        return inner.list(p);
      },
      watch: (p: string, o: WatchOptions): AsyncIterable<WatchBatch> => ({
        async *[Symbol.asyncIterator]() {
          for await (const b of inner.watch(p, o)) {
            const f = failNext;
            failNext = undefined;
            if (f) throw f;
            yield b;
          }
        },
      }),
    }) as Coordinator;
    const d = await dashboard(c, { jobsRefreshMs: 0 });
    const r = reader(`${d.url}events?job=flaky`);
    await r.next('the snapshot', 'snapshot');
    const listsBefore = lists;
    const setEpoch = async (n: number) => inner.update(jobKeys.epoch('flaky'), new TextEncoder().encode(String(n)), (await inner.get(jobKeys.epoch('flaky')))!.version);

    failNext = new UnavailableError('the store went away (test)');
    await setEpoch(1);
    await r.next<{ ok: boolean; message?: string }>('the page told of the failure', 'status', (s) => !s.ok && s.message?.includes('went away') === true);
    // Resumed after its last revision: the change that failed arrives, without a re-list.
    await r.next<JobDelta>('the epoch after the failure', 'delta', (x) => x.epoch === 1);
    await setEpoch(2);
    await r.next<{ ok: boolean }>('the page told it is well again', 'status', (s) => s.ok);
    await r.next<JobDelta>('epoch 2', 'delta', (x) => x.epoch === 2);
    expect(lists).toBe(listsBefore);

    failNext = new CompactedError('compacted (test)');
    await setEpoch(3);
    const again = await r.next<JobSnapshot>('a new snapshot after the re-list', 'snapshot', (s) => s.epoch === 3);
    expect(again.tasks).toHaveLength(3);
    expect(lists).toBe(listsBefore + 1);
  });
});

describe('request rates', () => {
  it('without a source the snapshot says rates are not available; with one, rates reach the pages of the job while they are open', async () => {
    const c = await memory();
    await fakeJob(c, 'rated', 3);
    const plain = await dashboard(c);
    const p = reader(`${plain.url}events?job=rated`);
    const s = await p.next<JobSnapshot>('the snapshot', 'snapshot');
    expect(s.rates).toEqual({ available: false });
    expect(s.tasks.every((t) => t.rate === undefined)).toBe(true);

    const subscribed: string[] = [];
    let emit: ((r: Iterable<readonly [number, number | undefined]>) => void) | undefined;
    let stopped = 0;
    const source: RequestRateSource = {
      label: 'the test',
      subscribe(job, e) {
        subscribed.push(job);
        emit = e;
        return () => stopped++;
      },
    };
    const d = await dashboard(c, { requestRates: source });
    const r = reader(`${d.url}events?job=rated`);
    const snap = await r.next<JobSnapshot>('the snapshot', 'snapshot');
    expect(snap.rates).toEqual({ available: true, label: 'the test' });
    await eventually('the source is subscribed', () => emit !== undefined);
    expect(subscribed).toEqual(['rated']);
    emit!([
      [1, 42],
      [2, 7.5],
    ]);
    const delta = await r.next<JobDelta>('the rates', 'delta', (x) => x.tasks !== undefined);
    expect(delta.tasks?.map((t) => [t.id, t.rate])).toEqual([
      [1, 42],
      [2, 7.5],
    ]);
    r.close();
    await eventually('the source is stopped with the last page', () => stopped === 1);
  });
});

describe('a real job', () => {
  let run: RunningJob | undefined;
  afterEach(async () => {
    await run?.close();
    run = undefined;
  });

  it('a node killed under a running job: the page sees the primary go and the task fail over to a new incarnation', async () => {
    run = await startRegressionJob({ numTasks: 7, standbys: 2, gateEpoch: 2 });
    await waitUntilRunning(run, 1);
    const d = await dashboard(run.coordinator);
    const r = reader(`${d.url}events?job=${run.job}`);
    const snap = await r.next<JobSnapshot>('the snapshot', 'snapshot');
    expect(snap.tasks).toHaveLength(7);
    expect(snap.tasks.every((t) => t.node !== undefined && t.incarnation === 1)).toBe(true);
    await eventually('the snapshot or deltas show the tree of links', () => {
      const edges = new Set(snap.edges.map((e) => e.id));
      for (const x of r.of('delta') as JobDelta[]) for (const e of x.edges ?? []) edges.add(e.id);
      return edges.size === 6;
    });
    const mark = r.events.length;
    const victim = await run.cluster.kill(4);
    const failover = await r.next<JobDelta>('the failover of task 4', 'delta', (x) => x.events?.some((e) => e.kind === 'failover' && e.task === 4) === true, mark);
    const ev = failover.events!.find((e) => e.kind === 'failover')!;
    expect(ev).toMatchObject({ task: 4, incarnation: 2, from: `node-${victim.index}` } satisfies Partial<DashboardEvent>);
    expect(ev.to).not.toBe(`node-${victim.index}`);
    const events = (r.of('delta') as JobDelta[]).flatMap((x) => x.events ?? []);
    expect(events.findIndex((e) => e.kind === 'primary-lost' && e.task === 4)).toBeLessThan(events.findIndex((e) => e.kind === 'failover'));
    const task4 = (r.of('delta') as JobDelta[]).flatMap((x) => x.tasks ?? []).filter((t) => t.id === 4).at(-1);
    expect(task4).toMatchObject({ id: 4, incarnation: 2, node: ev.to, failovers: 1 });
    // A page that joins now sees the failover in its snapshot.
    const late = reader(`${d.url}events?job=${run.job}`);
    const lateSnap = await late.next<JobSnapshot>('the late snapshot', 'snapshot');
    expect(lateSnap.tasks[4]).toMatchObject({ incarnation: 2, failovers: 1 });
    expect(lateSnap.events.some((e) => e.kind === 'failover' && e.task === 4)).toBe(true);

    run.release();
    await r.next<JobDelta>('the job done', 'delta', (x) => x.state === 'done');
  }, 60_000);
});

describe('startDashboard', () => {
  it('rejects bad options with InvalidArgumentError, and an address in use naming EADDRINUSE', async () => {
    const c = await memory();
    await expect(startDashboard({} as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(startDashboard({ coordinator: c, port: 70000 })).rejects.toThrow(/port must be an integer from 0 to 65535/);
    await expect(startDashboard({ coordinator: c, port: 1.5 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(startDashboard({ coordinator: c, host: '' })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(startDashboard({ coordinator: c, maxClients: 0 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(startDashboard({ coordinator: c, requestRates: {} as never })).rejects.toBeInstanceOf(InvalidArgumentError);
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => taken.close(() => resolve())));
    const port = (taken.address() as AddressInfo).port;
    const err = await startDashboard({ coordinator: c, port }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect((err as Error).message).toContain('EADDRINUSE');
  });

  it('frames events as the text/event-stream format wants', () => {
    expect(sseFrame('delta', '{"a":1}')).toBe('event: delta\ndata: {"a":1}\n\n');
    // A line break in the data can never end a frame early.
    expect(sseFrame('delta', 'a\nb\r\nc')).toBe('event: delta\ndata: a\ndata: b\ndata: c\n\n');
    expect(() => sseFrame('bad\nname', 'x')).toThrow();
  });
});
