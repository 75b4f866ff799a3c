/**
 * @taskgraph/cli: the `taskgraph` command, also usable as a library (tests drive
 * whole multi-process jobs through `JobRun`).
 */
export { main, USAGE } from './main.js';
export { JobRun, defaultCliEntry, DEFAULT_GRACE_MS } from './commands/run.js';
export type { RunOptions, RunResult, NodeProcess } from './commands/run.js';
export { runNodeCommand, STOP_WITH_PARENT_ENV } from './commands/node.js';
export { EXIT, interruptedExitCode, isConfigurationError } from './exit-codes.js';
export { RestartBudget, DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW_MS } from './restart-budget.js';
export type { RestartBudgetOptions } from './restart-budget.js';
export { maskUrl, redactor } from './secrets.js';
export { tolerateClosedOutput } from './stdio.js';
export { runJobCommand, formatStatus } from './commands/job.js';
export { resolveConfig, readConfigFile, parseAppArgs } from './config.js';
export type { CliConfig } from './config.js';
export { loadApp, BUILTIN_APPS } from './app-loader.js';
export { loadPlugins } from './plugins.js';
