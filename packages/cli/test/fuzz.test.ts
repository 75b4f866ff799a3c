/**
 * Property-based tests over what the command line reads from outside: config files
 * and `--arg` pairs. Whatever the input: a configuration, or InvalidArgumentError
 * (exit code 2); never a crash of another kind.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TaskGraphError } from '@taskgraph/api';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAppArgs, readConfigFile, resolveConfig } from '../src/config.js';

const RUNS = { numRuns: 300 };
const dir = mkdtempSync(join(tmpdir(), 'tg-cli-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configOrInvalid(read: () => unknown): void {
  try {
    read();
  } catch (err) {
    if (!TaskGraphError.is(err, 'INVALID_ARGUMENT')) throw err;
  }
}

const keyed = fc.record(
  {
    coordinator: fc.oneof(fc.string(), fc.constantFrom('etcd://127.0.0.1:2379', 'memory://', 'x'), fc.integer()),
    transport: fc.oneof(fc.string(), fc.constant('grpc://127.0.0.1:0'), fc.constant(null)),
    sessionTtlMs: fc.oneof(fc.integer({ min: -5, max: 1e7 }), fc.double(), fc.string()),
    logLevel: fc.oneof(fc.constantFrom('debug', 'info', 'warn', 'error', 'loud'), fc.integer()),
    plugins: fc.oneof(fc.array(fc.string(), { maxLength: 2 }), fc.string()),
    tls: fc.oneof(fc.record({ ca: fc.string(), cert: fc.string(), key: fc.string() }, { requiredKeys: [] }), fc.string(), fc.constant(null)),
    jobSecretFile: fc.oneof(fc.string(), fc.integer()),
    somethingElse: fc.jsonValue({ maxDepth: 1 }),
  },
  { requiredKeys: [] },
);

describe('fuzz: config files', () => {
  it('any file content gives a configuration or InvalidArgumentError', () => {
    let n = 0;
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)), keyed.map((v) => JSON.stringify(v))), (content) => {
        const file = join(dir, `c${++n}.json`);
        writeFileSync(file, content);
        configOrInvalid(() => readConfigFile(file, dir));
      }),
      RUNS,
    );
  });

  it('any flags and environment give a configuration or InvalidArgumentError', () => {
    fc.assert(
      fc.property(
        fc.record({ coordinator: fc.string(), transport: fc.string(), ttl: fc.string(), 'log-level': fc.string() }, { requiredKeys: [] }),
        fc.record({ TASKGRAPH_COORDINATOR: fc.string(), TASKGRAPH_TRANSPORT: fc.string(), TASKGRAPH_SESSION_TTL_MS: fc.string() }, { requiredKeys: [] }),
        (flags, env) => configOrInvalid(() => resolveConfig(flags, env, dir)),
      ),
      RUNS,
    );
  });
});

describe('fuzz: --arg pairs', () => {
  it('give key/value pairs (any key, prototype names included, stays a plain entry) or InvalidArgumentError', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.string(), fc.tuple(fc.oneof(fc.string({ minLength: 1 }), fc.constantFrom('__proto__', 'constructor', 'toString')), fc.string()).map(([k, v]) => `${k}=${v}`)), { maxLength: 4 }), (values) => {
        let args: Record<string, string>;
        try {
          args = parseAppArgs(values);
        } catch (err) {
          if (!TaskGraphError.is(err, 'INVALID_ARGUMENT')) throw err;
          return;
        }
        for (const v of values) {
          const i = v.indexOf('=');
          const key = v.slice(0, i);
          const last = [...values].reverse().find((w) => w.slice(0, w.indexOf('=')) === key)!;
          expect(Object.prototype.hasOwnProperty.call(args, key)).toBe(true);
          expect(args[key]).toBe(last.slice(last.indexOf('=') + 1));
        }
      }),
      RUNS,
    );
  });
});
