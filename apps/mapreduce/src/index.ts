/**
 * @taskgraph/app-mapreduce: MapReduce word count (the master/worker workload of
 * @taskgraph/workloads) as a runnable app. The default export is the app, so the
 * command loads this package by name as well as `./dist/app.js` by path.
 */
export { mapReduceApp, mapReduceApp as default, mapReduceOptions } from './app.js';
