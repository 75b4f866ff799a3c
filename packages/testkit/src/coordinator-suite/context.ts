/**
 * The per-test context of the coordinator suite: a fresh namespace, the clients
 * made for it (all closed when the test ends), watch signals (all aborted), and the
 * options with their time scale applied.
 */
import type { Coordinator, Session } from '@taskgraph/api';
import type { EventuallyOptions } from '../eventually.js';
import type { TestApi } from '../types.js';

export interface CoordinatorSuiteOptions {
  /** A label for the describe block, e.g. "memory" or "etcd 3.5". */
  readonly name: string;
  /**
   * The session TTL the expiry tests use: as short as the backend allows and
   * still keeps alive reliably (memory: 300-500 ms; etcd: 1-2 s; Consul: 10 s).
   */
  readonly sessionTtlMs: number;
  /**
   * Makes every revision before now unavailable to watches (etcd: compact at the
   * current revision). Without it the backend must declare `caps.watchCoalesces`,
   * and the suite checks that watches still deliver every key's final state.
   */
  readonly compact?: (coordinator: Coordinator) => Promise<void>;
  /** Expires the session on the server now, as its TTL running out would. */
  readonly expireSession?: (coordinator: Coordinator, session: Session) => Promise<void>;
  /**
   * Cuts this client off the server (keepalives and calls fail, nothing reaches
   * it) and returns the function that heals the cut.
   */
  readonly partition?: (coordinator: Coordinator) => Promise<() => Promise<void> | void>;
  /** Multiplies every timeout and "eventually" wait, for slow backends. Default 1. */
  readonly timeScale?: number;
  /** A test's timeout in ms, before `timeScale`. Default 30,000. */
  readonly testTimeoutMs?: number;
  /** How long an "eventually" condition may take, before `timeScale`. Default 5,000. */
  readonly eventuallyMs?: number;
  /** Keys written at once in the concurrency tests. Default 24. */
  readonly concurrency?: number;
}

export type CoordinatorSuiteFactory = (namespace: string) => Promise<Coordinator>;

/** The suite's settings, resolved once. */
export interface SuiteSettings {
  readonly options: CoordinatorSuiteOptions;
  readonly factory: CoordinatorSuiteFactory;
  readonly timeoutMs: number;
  readonly eventuallyMs: number;
  /** `eventually()` options that wait `eventuallyMs`. */
  readonly patience: EventuallyOptions;
  readonly concurrency: number;
  readonly runId: string;
  nextNamespace(): string;
  /**
   * A timeout for a test that waits `ttls` session TTLs: the test timeout plus that
   * many TTLs, doubled for backends that expire late (Consul's expiryFactor is 2).
   */
  ttlTimeout(ttls: number): number;
}

export function resolveSettings(factory: CoordinatorSuiteFactory, options: CoordinatorSuiteOptions): SuiteSettings {
  const scale = options.timeScale ?? 1;
  const label = options.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 12) || 'suite';
  const runId = Math.random().toString(36).slice(2, 8).padEnd(6, '0');
  let n = 0;
  const eventuallyMs = (options.eventuallyMs ?? 5_000) * scale;
  return {
    options,
    factory,
    timeoutMs: (options.testTimeoutMs ?? 30_000) * scale,
    eventuallyMs,
    patience: { timeoutMs: eventuallyMs },
    concurrency: options.concurrency ?? 24,
    runId,
    nextNamespace: () => `tg-${label}-${runId}-${++n}`,
    ttlTimeout: (ttls) => (options.testTimeoutMs ?? 30_000) * scale + ttls * options.sessionTtlMs * 2 * scale,
  };
}

export class TestContext {
  /** This test's namespace: unique per test. */
  readonly namespace: string;
  readonly settings: SuiteSettings;
  readonly #clients: Coordinator[] = [];
  readonly #controllers: AbortController[] = [];
  readonly #heals: (() => Promise<void> | void)[] = [];
  readonly #background: Promise<unknown>[] = [];

  constructor(settings: SuiteSettings) {
    this.settings = settings;
    this.namespace = settings.nextNamespace();
  }

  get options(): CoordinatorSuiteOptions {
    return this.settings.options;
  }

  /** A new client of this test's namespace (or of `namespace`), closed when the test ends. */
  async client(namespace = this.namespace): Promise<Coordinator> {
    const c = await this.settings.factory(namespace);
    this.#clients.push(c);
    return c;
  }

  /** A fresh namespace, for isolation checks. */
  otherNamespace(): string {
    return this.settings.nextNamespace();
  }

  /** An AbortController aborted when the test ends, whatever happens. */
  controller(): AbortController {
    const c = new AbortController();
    this.#controllers.push(c);
    return c;
  }

  /** Runs a partition through the hook and heals it when the test ends if the test did not. */
  async partition(coordinator: Coordinator): Promise<() => Promise<void>> {
    const hook = this.options.partition;
    if (!hook) throw new Error('the partition hook is not provided');
    const heal = await hook(coordinator);
    let healed = false;
    const once = async (): Promise<void> => {
      if (healed) return;
      healed = true;
      await heal();
    };
    this.#heals.push(once);
    return once;
  }

  /** Keeps a background promise (a watch consumer) so the test ends only after it does. */
  track(p: Promise<unknown>): void {
    this.#background.push(p.catch(() => undefined));
  }

  /** Aborts, heals and closes everything the test made. */
  async dispose(): Promise<void> {
    for (const c of this.#controllers) c.abort();
    const errors: unknown[] = [];
    for (const heal of this.#heals) {
      try {
        await heal();
      } catch (err) {
        errors.push(err);
      }
    }
    const closed = await Promise.allSettled(this.#clients.map((c) => c.close()));
    for (const r of closed) if (r.status === 'rejected') errors.push(r.reason);
    await Promise.all(this.#background);
    if (errors.length > 0) throw new AggregateError(errors, `closing the test's clients failed: ${errors.map(String).join('; ')}`);
  }
}

/** Declares one suite test: a fresh context, disposed however the test ends. */
export interface DefineTest {
  (name: string, fn: (t: TestContext) => Promise<void>, timeoutMs?: number): void;
  readonly settings: SuiteSettings;
}

export function defineTest(api: TestApi, settings: SuiteSettings): DefineTest {
  const test = (name: string, fn: (t: TestContext) => Promise<void>, timeoutMs = settings.timeoutMs): void => {
    api.it(
      name,
      async () => {
        const t = new TestContext(settings);
        try {
          await fn(t);
        } catch (err) {
          await t.dispose().catch(() => undefined);
          throw err;
        }
        await t.dispose();
      },
      timeoutMs,
    );
  };
  return Object.assign(test, { settings });
}
