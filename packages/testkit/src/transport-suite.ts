/**
 * The transport conformance suite: what every Transport must do, observed only
 * through the SPI, so the local and the gRPC transport (and any later one) are
 * interchangeable under the framework. A transport's test file runs it in a few
 * lines: `transportSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach }, factory, options)`.
 */
import assert from 'node:assert/strict';
import type { Transport } from '@taskgraph/api';
import type { TestApi } from './types.js';
import type { SuiteContext, TransportSuiteOptions } from './transport-suite/context.js';
import { callTests } from './transport-suite/calls.js';
import { closingTests } from './transport-suite/closing.js';
import { deadlineTests } from './transport-suite/deadlines.js';
import { errorTests } from './transport-suite/errors.js';
import { describeError, resourceCounts } from './transport-suite/helpers.js';
import { methodTests } from './transport-suite/methods.js';

export type { TransportSuiteOptions } from './transport-suite/context.js';

/**
 * Registers the suite's tests. `factory` makes a new transport (a "node"); every
 * transport it makes must reach every other one's servers.
 */
export function transportSuite(test: TestApi, factory: () => Promise<Transport>, options: TransportSuiteOptions): void {
  const { describe, beforeAll, afterEach } = test;
  const scale = options.timeScale ?? 1;
  const ms = (n: number): number => Math.round(n * scale);
  const open: Transport[] = [];
  let baseline = new Map<string, number>();
  const s: SuiteContext = {
    options,
    h: {
      async node() {
        const transport = await factory();
        open.push(transport);
        return transport;
      },
    },
    it: (name, fn) => test.it(name, fn, ms(60_000)),
    ms,
    patience: ms(10_000),
    largeBytes: options.largePayloadBytes ?? 4 * 1024 * 1024,
    async closeOpen() {
      for (const t of open.splice(0)) await t.close();
    },
    baseline: () => baseline,
  };

  describe(`transportSuite: ${options.name}`, () => {
    beforeAll(() => {
      baseline = resourceCounts();
    });

    afterEach(async () => {
      const closing = open.splice(0).map((t) => t.close());
      const results = await Promise.allSettled(closing);
      for (const r of results) {
        if (r.status === 'rejected') assert.fail(`closing a transport failed: ${describeError(r.reason)}`);
      }
    }, ms(30_000));

    describe('calls', () => callTests(s));
    describe('methods', () => methodTests(s));
    describe('errors', () => errorTests(s));
    describe('deadlines and cancellation', () => deadlineTests(s));
    describe('closing', () => closingTests(s));
  });
}
