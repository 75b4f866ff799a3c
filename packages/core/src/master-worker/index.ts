/** The master/worker paradigm on the task-graph runtime (see `wire.ts` for how it maps onto tasks). */
export { defineMasterWorkerApp, masterWorkerBuilder, masterWorkerJob } from './app.js';
export type { MasterWorkerAppDefinition, MasterWorkerFactories } from './app.js';
export { MASTER_WORKER_LINK_TYPES, masterWorkerLinkages, taskOfWorker, workerOfTask } from './wire.js';
export { masterStorePrefix } from './master-store.js';
export { servePeer } from './peer-calls.js';
