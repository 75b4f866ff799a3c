/**
 * @taskgraph/cli: the `taskgraph` command, also usable as a library (tests drive
 * whole multi-process jobs through `JobRun`).
 */
export { main, USAGE } from './main.js';
export { JobRun, defaultCliEntry } from './commands/run.js';
export type { RunOptions, RunResult, NodeProcess } from './commands/run.js';
export { runNodeCommand, EXIT } from './commands/node.js';
export { runJobCommand, formatStatus } from './commands/job.js';
export { resolveConfig, readConfigFile, parseAppArgs } from './config.js';
export type { CliConfig } from './config.js';
export { loadApp, BUILTIN_APPS } from './app-loader.js';
export { loadPlugins } from './plugins.js';
