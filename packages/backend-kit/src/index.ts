/**
 * @taskgraph/backend-kit: the layer between `@taskgraph/api` and the coordination
 * backends. The Coordinator contract's checks, closed guard and session bookkeeping
 * (CoordinatorBase), the lease session's local deadline and renewal schedule
 * (LeaseSession), and the one backoff and clock-aware sleep. A backend keeps only
 * what is its own: how its server does each operation.
 */
export { CoordinatorBase } from './coordinator-base.js';
export type { CoordinatorBaseOptions } from './coordinator-base.js';
export { LeaseSession, safetyMargin } from './lease-session.js';
export type { LeaseSessionInit, LossCause, SessionContext } from './lease-session.js';
export { Stops } from './stops.js';
export type { Stop } from './stops.js';
export { Backoff, pause, sleep } from './timing.js';
export { assertValidAfter, assertValidOwner, assertValidSessionId, assertValidSignal, assertValidVersion, describeKey } from './checks.js';
export { silentLogger } from './logger.js';
