/**
 * @taskgraph/dashboard: a live web view of TaskGraph jobs. `startDashboard({ coordinator })`
 * serves a page that lists the jobs in the store and shows one as a graph: its
 * tasks, their primaries, backups and incarnations, the links metas travelled on,
 * the epoch and state, and failovers as they happen. Updates come from one store
 * watch per job and reach the page as server-sent deltas.
 */
export { startDashboard } from './server.js';
export type { Dashboard, DashboardOptions, JobSummary, RequestRateSource } from './types.js';
export { JobModel, MAX_EVENTS } from './model.js';
export type {
  BackupView,
  DashboardEvent,
  EdgeView,
  EventKind,
  JobDelta,
  JobModelOptions,
  JobSnapshot,
  JobState,
  ModelWork,
  NodeView,
  RatesInfo,
  SpecView,
  TaskView,
} from './model.js';
export { scanJobs } from './jobs.js';
