/**
 * @taskgraph/sim: deterministic simulation of whole TaskGraph jobs on virtual time,
 * with seeded fault schedules, invariants checked on every step, replay and shrink.
 */
export { simulate } from './simulate.js';
export type { SimulateOptions, SimulateResult } from './simulate.js';
export { FAULT_KINDS, describeFault, drawSchedule, healedAt } from './faults.js';
export type { Fault, FaultKind, ScheduleOptions } from './faults.js';
export { WORKLOADS, loadMapReduceInput, makeWorkload } from './workloads.js';
export type { Workload, WorkloadName } from './workloads.js';
export { Rng } from './rng.js';
export { Scheduler, Actor, WALL_EPOCH_MS } from './scheduler.js';
export type { DeferJitter, RunEnd } from './scheduler.js';
export { Guard } from './guard.js';
export type { GuardViolation } from './guard.js';
export { shrink } from './shrink.js';
export type { ShrinkResult } from './shrink.js';
export { campaign, replayCommand } from './campaign.js';
export type { CampaignOptions, CampaignSummary } from './campaign.js';
