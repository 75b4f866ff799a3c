/**
 * @taskgraph/core: the TaskGraph runtime. `createBootstrap` runs a node,
 * `createController` manages a job, `resolveCoordinator`/`resolveTransport` pick
 * backends from URLs, `registerCoordinator`/`registerTransport` add schemes.
 */
export { TaskGraphNode, createBootstrap } from './node.js';
export { NodeHost, createNodeHost, MAX_NODES_PER_HOST } from './node-host.js';
export type { NodeHostOptions, HostedOutcome } from './node-host.js';
export { SharedAddressBook } from './address-book.js';
export { SharedWatchCoordinator, shareWatches } from './shared-watch.js';
export type { SharedWatchOptions, SharingStats } from './shared-watch.js';
export { SharedServer, holdsRequestedSlot } from './shared-server.js';
export type { ServerEndpoint, HeldSlots, SharedServerStats } from './shared-server.js';
export type { BootstrapOptions, NodeStats } from './node.js';
export { Controller, createController, listJobs } from './controller.js';
export type { ControllerOptions, JobDefinition, JobStatus, TaskState } from './controller.js';
export { jsonCodec, bytesCodec, defineMethod, serve } from './codec.js';
export { createLogger, silentLogger } from './logger.js';
export type { LoggerOptions } from './logger.js';
export { resolveCoordinator, resolveTransport, importPackage } from './resolve.js';
export { maskUrl, secretsOf } from './redact.js';
export type { ModuleImporter, ResolveOptions } from './resolve.js';
export { registerCoordinator, registerTransport, registeredSchemes } from './registry.js';
export type { BackendKind, BackendLoader, RegisterOptions } from './registry.js';
export { installPlugin } from './plugin.js';
export type { PluginHost, TaskGraphPlugin } from './plugin.js';
export { installSignalHandlers } from './signals.js';
export { TRACER_NAME, SpanNames, TraceAttributes, TraceEvents } from './tracing.js';
export { keys as jobKeys, assertValidJobName, FORMAT_VERSION } from './layout.js';
export type { JobSpec, NodeValue, AddrValue } from './layout.js';
export { sleep, Backoff } from '@taskgraph/backend-kit';
export { retryStore, isOutage } from './store-ops.js';
export type { RetryStoreOptions } from './store-ops.js';
export { LocalCluster, nodeResources } from './local-cluster.js';
export type { LocalClusterOptions, NodeResources, ClusterNode, ClusterEvent } from './local-cluster.js';
export type { Phase as NodePhase } from './node.js';
export { defineApp, assertApp } from './app.js';
export type { AppContext, AppVerdict, TaskGraphApp } from './app.js';
export { defineMasterWorkerApp, masterWorkerBuilder, masterWorkerJob, MASTER_WORKER_LINK_TYPES, masterWorkerLinkages, servePeer, taskOfWorker, workerOfTask } from './master-worker/index.js';
export type { MasterWorkerAppDefinition, MasterWorkerFactories } from './master-worker/index.js';
