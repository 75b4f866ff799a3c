// Shared by the Consul emulator's tests.
import { afterEach } from 'vitest';
import { startConsulEmulator } from '../src/index.js';
import type { ConsulEmulator, ConsulEmulatorOptions } from '../src/index.js';

/** Registers an afterEach that closes every emulator the test started; returns the starter. */
export function emulatorPerTest(): (options?: ConsulEmulatorOptions) => Promise<ConsulEmulator> {
  const started: ConsulEmulator[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((c) => c.close()));
  });
  return async (options = {}) => {
    const consul = await startConsulEmulator(options);
    started.push(consul);
    return consul;
  };
}
