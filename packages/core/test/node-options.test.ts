import { InvalidArgumentError, systemClock } from '@taskgraph/api';
import { MemoryCoordinator } from '@taskgraph/coord-memory';
import { ManualClock } from '@taskgraph/testkit';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';
import { afterAll, describe, expect, it } from 'vitest';
import { assertValidNodeId } from '../src/layout.js';
import { nodeConfig } from '../src/node-options.js';
import type { BootstrapOptions } from '../src/node-options.js';
import { FlakyCoordinator } from './parts.js';

// Nothing here opens a session or a server: the options are only read.
const coordinator = new MemoryCoordinator();
const transport = new LocalTransport({ network: new LocalNetwork() });
const base: BootstrapOptions = { job: 'opts', coordinator, transport };
afterAll(async () => {
  await coordinator.close();
  await transport.close();
});

describe('nodeConfig', () => {
  it('applies the defaults', () => {
    const c = nodeConfig(base);
    expect(c).toEqual({
      job: 'opts',
      nodeId: expect.stringMatching(/^node-/),
      coordinator,
      transport,
      clock: systemClock,
      ttlMs: 5000,
      preferredTask: undefined,
      attemptTimeoutMs: 10_000,
      maxMetaBytes: 1024,
      drainMs: 2000,
      metaPush: true,
    });
    expect(() => assertValidNodeId(c.nodeId)).not.toThrow();
    expect(nodeConfig(base).nodeId).not.toBe(c.nodeId);
  });

  it('the default TTL is brought inside the backend’s range', () => {
    expect(nodeConfig({ ...base, coordinator: new FlakyCoordinator(coordinator, { ttlRangeMs: [10_000, 60_000] }) }).ttlMs).toBe(10_000);
    expect(nodeConfig({ ...base, coordinator: new FlakyCoordinator(coordinator, { ttlRangeMs: [100, 3000] }) }).ttlMs).toBe(3000);
  });

  it('takes what it is given (a TTL as it is: the backend checks it when the session opens)', () => {
    const clock = new ManualClock();
    const c = nodeConfig({ ...base, nodeId: 'n-1.a_b', sessionTtlMs: 50, preferredTask: 4, attemptTimeoutMs: 250, maxMetaBytes: 8, drainMs: 0, clock });
    expect(c).toMatchObject({ nodeId: 'n-1.a_b', ttlMs: 50, preferredTask: 4, attemptTimeoutMs: 250, maxMetaBytes: 8, drainMs: 0 });
    expect(c.clock).toBe(clock);
  });

  it('refuses timings and sizes that are not positive numbers (drainMs may be 0)', () => {
    const bad = [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '5' as unknown as number];
    for (const v of bad) {
      expect(() => nodeConfig({ ...base, attemptTimeoutMs: v })).toThrow(InvalidArgumentError);
      expect(() => nodeConfig({ ...base, attemptTimeoutMs: v })).toThrow(`attemptTimeoutMs must be a positive number of ms, got ${String(v)}`);
      expect(() => nodeConfig({ ...base, maxMetaBytes: v })).toThrow(`maxMetaBytes must be a positive number of ms, got ${String(v)}`);
    }
    for (const v of bad.slice(1)) {
      expect(() => nodeConfig({ ...base, drainMs: v })).toThrow(`drainMs must be a non-negative number of ms, got ${String(v)}`);
    }
  });

  it('metaPush is on unless turned off, and must be a boolean', () => {
    expect(nodeConfig({ ...base, metaPush: false }).metaPush).toBe(false);
    expect(() => nodeConfig({ ...base, metaPush: 'no' as unknown as boolean })).toThrow(new InvalidArgumentError('metaPush must be true or false, got no'));
  });

  it('refuses a bad job name or node id', () => {
    expect(() => nodeConfig({ ...base, job: 'Bad_Job' })).toThrow(InvalidArgumentError);
    expect(() => nodeConfig({ ...base, job: 'Bad_Job' })).toThrow('job name "Bad_Job" is invalid');
    expect(() => nodeConfig({ ...base, nodeId: 'has space' })).toThrow('node id "has space" is invalid');
    expect(() => nodeConfig({ ...base, nodeId: '' })).toThrow(InvalidArgumentError);
  });
});
