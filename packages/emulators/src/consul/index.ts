/** The Consul emulator: the HTTP subset of Consul that `@taskgraph/coord-consul` uses. */
export { ConsulEmulator, startConsulEmulator, entryJson } from './server.js';
export type { ConsulEmulatorOptions, ConsulEmulatorTls, ConsulFaults } from './server.js';
export type { ConsulSnapshot, KvEntry, SessionRecord } from './store.js';
export { ConsulStore, MAX_LOCK_DELAY_MS } from './store.js';
export type { EmulatorClock, EmulatorTimerHandle } from './clock.js';
export type { KeyRules } from './key-rules.js';
export { parseGoDuration, formatGoDuration } from './durations.js';
export { runConsulEmulatorCommand } from './cli.js';
