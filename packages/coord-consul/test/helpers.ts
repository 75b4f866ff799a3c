/**
 * Test helpers: an emulator per test file on a free loopback port, and
 * coordinators on it with their own namespaces, closed after each test.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { ConsulEmulator, startConsulEmulator } from '@taskgraph/emulators';
import type { ConsulEmulatorOptions } from '@taskgraph/emulators';
import type { EventuallyOptions } from '@taskgraph/testkit';
import { createConsulCoordinator } from '../src/index.js';
import type { ConsulCoordinator, ConsulCoordinatorOptions } from '../src/index.js';

let counter = 0;

/** A namespace no other test uses. */
export function freshNamespace(label = 'test'): string {
  counter += 1;
  return `${label}-${process.pid}-${counter}`;
}

export async function emulator(options: ConsulEmulatorOptions = {}): Promise<ConsulEmulator> {
  return startConsulEmulator(options);
}

export async function coordinator(consul: ConsulEmulator, options: Partial<ConsulCoordinatorOptions> = {}): Promise<ConsulCoordinator> {
  return createConsulCoordinator({ address: consul.url, namespace: freshNamespace(), requestTimeoutMs: 5_000, blockingWaitMs: 5_000, ...options });
}

/** An emulator for the tests of one file, and a maker of coordinators on it. */
export interface ConsulFixture {
  /** Made now, started before the file's tests, closed after them. */
  readonly consul: ConsulEmulator;
  /** A coordinator on a fresh namespace (unless `options.namespace`), closed after the test. */
  make(options?: Partial<ConsulCoordinatorOptions>): Promise<ConsulCoordinator>;
}

/**
 * Registers the hooks of a per-file emulator. After each test the emulator's faults
 * are cleared and it is started again if the test stopped it (so closing the test's
 * coordinators cannot hang on a fault), then those coordinators are closed.
 */
export function consulFixture(options: ConsulEmulatorOptions = {}): ConsulFixture {
  // Made here rather than by startConsulEmulator so the tests can hold it from the start; beforeAll starts it.
  const consul = new ConsulEmulator(options);
  const open: ConsulCoordinator[] = [];
  beforeAll(() => consul.start());
  afterEach(async () => {
    Object.assign(consul.faults, { unavailable: false, delayMs: 0, delayAnswerMs: 0, dropAnswers: 0, dropAnswerWhen: undefined });
    if (!consul.running) await consul.start();
    await Promise.all(open.splice(0).map((c) => c.close()));
  });
  afterAll(() => consul.close());
  return {
    consul,
    async make(opts = {}) {
      const c = await coordinator(consul, opts);
      open.push(c);
      return c;
    },
  };
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
export const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** How long these tests wait for a condition. */
export const patience: EventuallyOptions = { timeoutMs: 15_000 };

/** Collects watch batches in the background. */
export function collect<T>(iterable: AsyncIterable<T>): { items: T[]; done: Promise<void> } {
  const items: T[] = [];
  const done = (async () => {
    for await (const item of iterable) items.push(item);
  })();
  return { items, done };
}

export function activeHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length;
}
