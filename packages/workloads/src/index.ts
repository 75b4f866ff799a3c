/**
 * @taskgraph/workloads: reference workloads with known answers, for the scenario
 * suites, the simulator and demos. Each workload is a TaskBuilder, its link types
 * and linkages, and a function that gives the answer it must produce.
 */
export * from './regression.js';
export * from './running-stats.js';
export * from './running-stats-check.js';
export { seededRandom } from './seeded-random.js';
