/**
 * The coordinator conformance suite: every coordination backend runs it from its
 * own test file, with its test runner's functions and a factory of clients.
 *
 *   coordinatorSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach },
 *     (namespace) => createEtcdCoordinator({ endpoints, namespace }),
 *     { name: 'etcd', sessionTtlMs: 2000, compact: (c) => ..., expireSession: ..., partition: ... });
 *
 * Backend differences are declared, never skipped: a missing hook runs a weaker
 * check whose test name says so. Assertions use node:assert, so the suite runs
 * under any runner with the describe/it shape.
 */
import assert from 'node:assert/strict';
import type { TestApi } from './types.js';
import { defineTest, resolveSettings } from './coordinator-suite/context.js';
import type { CoordinatorSuiteFactory, CoordinatorSuiteOptions } from './coordinator-suite/context.js';
import { keyTests } from './coordinator-suite/keys.js';
import { lifecycleTests } from './coordinator-suite/lifecycle.js';
import { lockTests } from './coordinator-suite/locks.js';
import { sessionTests } from './coordinator-suite/sessions.js';
import { watchTests } from './coordinator-suite/watch.js';

export type { CoordinatorSuiteFactory, CoordinatorSuiteOptions } from './coordinator-suite/context.js';

export function coordinatorSuite(api: TestApi, factory: CoordinatorSuiteFactory, options: CoordinatorSuiteOptions): void {
  if (!(options.sessionTtlMs > 0)) throw new TypeError('coordinatorSuite: options.sessionTtlMs must be a positive number');
  const settings = resolveSettings(factory, options);
  const test = defineTest(api, settings);

  api.describe(`coordinator conformance: ${options.name}`, () => {
    api.describe('caps', () => {
      test('caps are well-formed and fit the suite options', async (t) => {
        const c = await t.client();
        const caps = c.caps;
        assert.equal(typeof caps.backend, 'string');
        assert.ok(caps.backend.length > 0, 'caps.backend names the backend');
        assert.equal(typeof caps.watchCoalesces, 'boolean');
        const [min, max] = caps.ttlRangeMs;
        assert.ok(min > 0 && min <= max, `caps.ttlRangeMs [${min}, ${max}] is a range of positive numbers`);
        assert.ok(
          options.sessionTtlMs >= min && options.sessionTtlMs <= max,
          `options.sessionTtlMs ${options.sessionTtlMs} is inside caps.ttlRangeMs [${min}, ${max}]`,
        );
        assert.ok(caps.ttlGranularityMs >= 1, 'caps.ttlGranularityMs is at least 1');
        assert.ok(caps.expiryFactor >= 1, 'caps.expiryFactor is at least 1');
        assert.ok(Number.isInteger(caps.maxValueBytes) && caps.maxValueBytes >= 1024, 'caps.maxValueBytes is an integer of at least 1 KiB');
        assert.ok(Number.isInteger(caps.maxKeyBytes) && caps.maxKeyBytes >= 64, 'caps.maxKeyBytes is an integer of at least 64');
      });

      test('watch history is testable: a compact hook is given, or caps.watchCoalesces is declared', async (t) => {
        const c = await t.client();
        assert.ok(
          options.compact !== undefined || c.caps.watchCoalesces,
          'give coordinatorSuite a compact(coordinator) hook, or declare caps.watchCoalesces: true if the backend keeps no history',
        );
      });
    });

    api.describe('keys, list and deletePrefix', () => keyTests(test));
    api.describe('watch', () => watchTests(test, options.compact !== undefined));
    api.describe('sessions', () => sessionTests(test, options));
    api.describe('locks', () => lockTests(test, options));
    api.describe('input validation and close', () => lifecycleTests(test, options));
  });
}
