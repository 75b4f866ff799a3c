/**
 * @taskgraph/api: the pure interfaces of TaskGraph. Types, error classes, code
 * constants and input checks; no I/O and no dependencies.
 */
export * from './errors.js';
export type * from './runtime.js';
export { deferOn, randomHex, randomOf, systemClock, wallNow } from './runtime.js';
export type * from './codec.js';
export type * from './task.js';
export type * from './standby.js';
export type * from './paradigms.js';
export type * from './coordinator.js';
export type * from './transport.js';
export type * from './instruments.js';
export * from './names.js';
export * from './trace-context.js';
