/**
 * @taskgraph/coord-memory: an embedded, in-process coordinator. The default
 * backend for single-process runs, and the test double every other backend is
 * compared with, with fault injection (errors, partitions, freezes, expiries).
 */
export { MemoryCoordinator, MEMORY_CAPS } from './coordinator.js';
export type { MemoryCoordinatorOptions } from './coordinator.js';
export { MemoryStore, compareKeys } from './store.js';
export type { MemoryStoreOptions, SessionInfo, StoredEntry, StoredEvent, HistoryRecord, LockRequest, SessionEnd } from './store.js';
export { MemorySession } from './session.js';
export { safetyMargin } from '@taskgraph/backend-kit';
export { MemoryLock } from './lock.js';
export { FaultSet, MEMORY_OPERATIONS, globToRegExp } from './faults.js';
export type { Fault, FaultSpec, MemoryOperation } from './faults.js';
export { createMemoryCoordinator, createCoordinator, sharedMemoryStore, dropSharedMemoryStore, parseMemoryUrl } from './factory.js';
export type { ParsedMemoryUrl } from './factory.js';
