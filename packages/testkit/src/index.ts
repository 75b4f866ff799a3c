/**
 * @taskgraph/testkit: the conformance suites every backend runs, the scenario
 * suites, and helpers for tests that use real servers and processes.
 */
export type * from './types.js';
export * from './clock.js';
