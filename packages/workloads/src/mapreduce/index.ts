/** MapReduce word count on the master/worker paradigm (see master.ts and worker.ts). */
export { MAX_FAILURES, MapReduceMaster } from './master.js';
export type { MapReduceMasterOptions, MapReduceRecord } from './master.js';
export { MapReduceWorker } from './worker.js';
export type { MapReduceWorkerOptions } from './worker.js';
export { checkMapReduce, describeProgress, expectedWordCount, mapReduceSplits } from './check.js';
export type { ExpectedCount, MapReduceJobOptions, MapReduceVerdict } from './check.js';
export { CANCEL, FETCH, MAP, REDUCE } from './protocol.js';
export type { ReduceResult } from './protocol.js';
