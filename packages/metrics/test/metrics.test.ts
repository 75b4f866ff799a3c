import { InvalidArgumentError } from '@taskgraph/api';
import type { Instrumentable, NodeEvent, NodeObserver, NodeSource } from '@taskgraph/api';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_METRICS_HOST, METRICS, TaskGraphMetrics, startMetricsServer } from '../src/index.js';
import type { MetricsServer } from '../src/index.js';
import { Scrape, get } from './prom.js';

const servers: MetricsServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

/** A stand-in for a node: a source whose task the test sets, and the observers it was given. */
function fakeNode(job: string, node: string) {
  const source: { job: string; node: string; task: number | undefined } = { job, node, task: undefined };
  const observers = new Set<NodeObserver>();
  const instrumentable: Instrumentable = {
    instrument(observer) {
      observers.add(observer);
      observer({ type: 'role', role: 'starting', incarnation: 0, token: undefined }, source as NodeSource);
      return () => observers.delete(observer);
    },
  };
  const emit = (event: NodeEvent) => {
    for (const o of observers) o(event, source as NodeSource);
  };
  return { source, instrumentable, emit, observers };
}

async function scrape(metrics: TaskGraphMetrics): Promise<Scrape> {
  return Scrape.of(await metrics.metrics());
}

describe('TaskGraphMetrics: events to Prometheus series', () => {
  it('counts, gauges and histograms per node, with job/node/task labels; a node that claims a task moves its gauges to that task', async () => {
    const metrics = new TaskGraphMetrics();
    const a = fakeNode('j', 'a');
    metrics.registerNode(a.instrumentable);
    a.emit({ type: 'lease', state: 'held' });
    a.emit({ type: 'epoch', epoch: 3 });
    a.emit({ type: 'role', role: 'standby', incarnation: 0, token: undefined });
    a.emit({ type: 'store-op', op: 'get', seconds: 0.002 });
    a.emit({ type: 'store-op', op: 'get', seconds: 0.004, error: 'UNAVAILABLE' });
    let s = await scrape(metrics);
    const standby = { job: 'j', node: 'a', task: '' };
    expect(s.value(METRICS.nodeUp, standby)).toBe(1);
    expect(s.value(METRICS.nodeRole, { ...standby, role: 'standby' })).toBe(1);
    expect(s.value(METRICS.nodeRole, { ...standby, role: 'primary' })).toBe(0);
    expect(s.value(METRICS.epoch, standby)).toBe(3);
    expect(s.value(METRICS.leaseHeld, standby)).toBe(1);
    expect(s.value(METRICS.storeOps, { ...standby, op: 'get', code: 'OK' })).toBe(1);
    expect(s.value(METRICS.storeOps, { ...standby, op: 'get', code: 'UNAVAILABLE' })).toBe(1);
    expect(s.value(`${METRICS.storeDuration}_count`, { ...standby, op: 'get' })).toBe(2);
    expect(s.value(`${METRICS.storeDuration}_sum`, { ...standby, op: 'get' })).toBeCloseTo(0.006, 9);

    // It takes task 4 over: the gauges move to task="4", the old series go.
    a.source.task = 4;
    a.emit({ type: 'failover', kind: 'takeover', incarnation: 2 });
    a.emit({ type: 'role', role: 'primary', incarnation: 2, token: '17' });
    a.emit({ type: 'meta-flagged', linkType: 'Children', receivers: 2 });
    a.emit({ type: 'meta-delivered', path: 'push', from: 1, linkType: 'Parents' });
    a.emit({ type: 'meta-delivered', path: 'store', from: 1, linkType: 'Parents' });
    a.emit({ type: 'request-retried', to: 1, method: 'get', reason: 'UNAVAILABLE' });
    a.emit({ type: 'request-sent', to: 1, method: 'get', seconds: 0.01 });
    a.emit({ type: 'request-sent', to: 1, method: 'get', seconds: 0.02, error: 'EPOCH_CHANGED' });
    a.emit({ type: 'request-served', from: 2, method: 'get', seconds: 0.001 });
    a.emit({ type: 'request-refused', from: 2, method: 'get', reason: 'stale-token' });
    a.emit({ type: 'replicated', slot: 0, seq: 5, seconds: 0.003 });
    s = await scrape(metrics);
    const primary = { job: 'j', node: 'a', task: '4' };
    expect(s.select(METRICS.nodeUp, standby)).toEqual([]);
    expect(s.select(METRICS.nodeRole, standby)).toEqual([]);
    expect(s.value(METRICS.nodeUp, primary)).toBe(1);
    expect(s.value(METRICS.nodeRole, { ...primary, role: 'primary' })).toBe(1);
    expect(s.value(METRICS.nodeRole, { ...primary, role: 'standby' })).toBe(0);
    expect(s.value(METRICS.epoch, primary)).toBe(3);
    expect(s.value(METRICS.incarnation, primary)).toBe(2);
    expect(s.value(METRICS.fencingToken, primary)).toBe(17);
    expect(s.value(METRICS.failovers, { ...primary, kind: 'takeover' })).toBe(1);
    expect(s.value(METRICS.metasFlagged, { ...primary, link_type: 'Children' })).toBe(2);
    expect(s.value(METRICS.metasDelivered, { ...primary, link_type: 'Parents', path: 'push' })).toBe(1);
    expect(s.value(METRICS.metasDelivered, { ...primary, link_type: 'Parents', path: 'store' })).toBe(1);
    expect(s.value(METRICS.requestRetries, { ...primary, method: 'get', reason: 'UNAVAILABLE' })).toBe(1);
    expect(s.value(METRICS.requestsSent, { ...primary, method: 'get' })).toBe(2);
    expect(s.value(METRICS.requestsFailed, { ...primary, method: 'get', code: 'EPOCH_CHANGED' })).toBe(1);
    expect(s.value(`${METRICS.requestDuration}_count`, { ...primary, method: 'get' })).toBe(2);
    expect(s.value(`${METRICS.requestDuration}_bucket`, { ...primary, method: 'get', le: '0.01' })).toBe(1);
    expect(s.value(`${METRICS.requestDuration}_bucket`, { ...primary, method: 'get', le: '+Inf' })).toBe(2);
    expect(s.value(METRICS.requestsServed, { ...primary, method: 'get' })).toBe(1);
    expect(s.value(`${METRICS.serveDuration}_count`, { ...primary, method: 'get' })).toBe(1);
    expect(s.value(METRICS.requestsRefused, { ...primary, method: 'get', reason: 'stale-token' })).toBe(1);
    expect(s.value(`${METRICS.replicationLag}_count`, primary)).toBe(1);
    // Counters counted before the claim stay with task="".
    expect(s.value(METRICS.storeOps, { ...standby, op: 'get', code: 'OK' })).toBe(1);

    a.emit({ type: 'lease', state: 'lost' });
    a.emit({ type: 'lease', state: 'lost' });
    s = await scrape(metrics);
    expect(s.value(METRICS.nodeUp, primary)).toBe(0);
    expect(s.value(METRICS.leaseHeld, primary)).toBe(0);
    expect(s.value(METRICS.leasesLost, primary)).toBe(1);
    a.emit({ type: 'role', role: 'left', incarnation: 0, token: undefined, reason: 'lease-lost' });
    s = await scrape(metrics);
    expect(s.sum(METRICS.nodeRole, primary)).toBe(0);
    expect(s.value(METRICS.incarnation, primary)).toBe(0);
  });

  it('many nodes in one registry are distinct series; each TaskGraphMetrics has a registry of its own unless given one', async () => {
    const one = new TaskGraphMetrics();
    const two = new TaskGraphMetrics();
    expect(one.registry).not.toBe(two.registry);
    const nodes = ['h.0', 'h.1', 'h.2'].map((id) => fakeNode('j', id));
    for (const n of nodes) one.registerNode(n.instrumentable);
    nodes.forEach((n, i) => n.emit({ type: 'epoch', epoch: i }));
    const s = await scrape(one);
    expect(s.select(METRICS.epoch).map((x) => [x.labels['node'], x.value])).toEqual([
      ['h.0', 0],
      ['h.1', 1],
      ['h.2', 2],
    ]);
    expect((await scrape(two)).select(METRICS.epoch)).toEqual([]);

    // Two on one registry share the metrics rather than clash.
    const registry = new Registry();
    const x = new TaskGraphMetrics({ registry });
    const y = new TaskGraphMetrics({ registry });
    x.observer({ type: 'epoch', epoch: 5 }, { job: 'j', node: 'x', task: 0 });
    y.observer({ type: 'epoch', epoch: 6 }, { job: 'j', node: 'y', task: 1 });
    expect((await scrape(x)).select(METRICS.epoch).map((e) => e.value)).toEqual([5, 6]);
  });

  it('health: every node healthy under "all", one under "any"; none known is not healthy; unregister forgets a node', () => {
    const all = new TaskGraphMetrics();
    const any = new TaskGraphMetrics({ health: 'any' });
    expect(all.health().healthy).toBe(false);
    const a = fakeNode('j', 'a');
    const b = fakeNode('j', 'b');
    const regs = [a, b].map((n) => [all.registerNode(n.instrumentable), any.registerNode(n.instrumentable)]);
    expect(all.health()).toMatchObject({ healthy: true, policy: 'all', nodes: [{ node: 'a', role: 'starting', healthy: true }, { node: 'b', role: 'starting', healthy: true }] });
    a.emit({ type: 'lease', state: 'held' });
    a.emit({ type: 'role', role: 'primary', incarnation: 1, token: '1' });
    b.emit({ type: 'lease', state: 'held' });
    b.emit({ type: 'role', role: 'standby', incarnation: 0, token: undefined });
    expect(all.health().healthy).toBe(true);
    a.emit({ type: 'lease', state: 'lost' });
    expect(all.health().healthy).toBe(false);
    expect(any.health().healthy).toBe(true);
    regs[0]![0]!.unregister();
    expect(all.health().healthy).toBe(true);
    expect(all.health().nodes.map((n) => n.node)).toEqual(['b']);
    expect(a.observers.size).toBe(1);
    b.emit({ type: 'role', role: 'left', incarnation: 0, token: undefined, reason: 'stopped' });
    expect(all.health().healthy).toBe(false);
    expect(any.health().healthy).toBe(false);
  });

  it('checks its options', () => {
    expect(() => new TaskGraphMetrics({ health: 'most' as 'all' })).toThrow(InvalidArgumentError);
    expect(() => new TaskGraphMetrics({ buckets: { request: [1, 0.5] } })).toThrow('increasing positive');
    expect(() => new TaskGraphMetrics().register({} as Instrumentable)).toThrow(InvalidArgumentError);
  });
});

describe('startMetricsServer', () => {
  it('serves /metrics and /healthz on a free port of 127.0.0.1; 404 and 405 otherwise', async () => {
    const server = await startMetricsServer({ port: 0, processMetrics: true });
    servers.push(server);
    expect(server.host).toBe(DEFAULT_METRICS_HOST);
    expect(server.port).toBeGreaterThan(0);
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);

    let health = await get(`${server.url}/healthz`);
    expect(health.status).toBe(503);
    expect(JSON.parse(health.body)).toEqual({ status: 'unavailable', healthy: false, policy: 'all', nodes: [] });
    const a = fakeNode('j', 'a');
    server.registerNode(a.instrumentable);
    a.emit({ type: 'lease', state: 'held' });
    health = await get(`${server.url}/healthz?verbose=1`);
    expect(health.status).toBe(200);
    expect(health.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(JSON.parse(health.body)).toMatchObject({ status: 'ok', nodes: [{ job: 'j', node: 'a', role: 'starting', lease: 'held', healthy: true }] });

    const metrics = await get(`${server.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toBe(server.metrics.contentType);
    const s = Scrape.of(metrics.body);
    expect(s.value(METRICS.leaseHeld, { job: 'j', node: 'a', task: '' })).toBe(1);
    expect(s.select('process_cpu_user_seconds_total')).toHaveLength(1);
    expect(metrics.body).toContain(`# TYPE ${METRICS.requestDuration} histogram`);
    expect(metrics.body).toContain(`# TYPE ${METRICS.failovers} counter`);

    const head = await get(`${server.url}/metrics`, 'HEAD');
    expect([head.status, head.body]).toEqual([200, '']);
    expect((await get(`${server.url}/nope`)).status).toBe(404);
    const post = await get(`${server.url}/metrics`, 'POST');
    expect(post.status).toBe(405);
    expect(post.headers['allow']).toBe('GET, HEAD');

    a.emit({ type: 'role', role: 'left', incarnation: 0, token: undefined, reason: 'stopped' });
    expect((await get(`${server.url}/healthz`)).status).toBe(503);
    await server.close();
    await expect(get(`${server.url}/healthz`)).rejects.toThrow();
  });

  it('refuses a bad port and reports one in use', async () => {
    await expect(startMetricsServer({ port: -1 })).rejects.toThrow(InvalidArgumentError);
    await expect(startMetricsServer({ port: 70000 })).rejects.toThrow('0 to 65535');
    const first = await startMetricsServer({ port: 0 });
    servers.push(first);
    await expect(startMetricsServer({ port: first.port })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
