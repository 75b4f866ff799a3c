/**
 * @taskgraph/app-running-stats: the running-statistics job (the hot-standby
 * workload of @taskgraph/workloads) as a runnable app. The default export is the
 * app, so the command loads this package by name as well as `./dist/app.js` by path.
 */
export { runningStatsApp, runningStatsApp as default } from './app.js';
