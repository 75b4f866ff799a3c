/**
 * Test helpers: an emulator per test file on a free loopback port, and
 * coordinators on it with their own namespaces.
 */
import { startConsulEmulator } from '@taskgraph/emulators';
import type { ConsulEmulator, ConsulEmulatorOptions } from '@taskgraph/emulators';
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

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
export const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Polls until the condition holds, up to `timeoutMs`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

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
