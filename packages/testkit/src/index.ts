/**
 * @taskgraph/testkit: the conformance suites every backend runs, the scenario
 * suites, and helpers for tests that use real servers and processes.
 */
export type * from './types.js';
export * from './clock.js';
export { eventually } from './eventually.js';
export type { EventuallyOptions, Truthy } from './eventually.js';
export { rejection } from './rejection.js';
export { track } from './track.js';
export { startEtcd, startEtcdCluster, etcdBinary } from './etcd-server.js';
export type { EtcdClientTls, EtcdServer, EtcdCluster, StartEtcdOptions, StartEtcdClusterOptions } from './etcd-server.js';
export { startTcpProxy } from './tcp-proxy.js';
export type { TcpProxy, TcpProxyOptions } from './tcp-proxy.js';
export { freePort, freePorts } from './process/free-port.js';
export { makeTestPki } from './pki.js';
export type { CertFiles, Pki } from './pki.js';
export * from './transport-suite.js';
export * from './coordinator-suite.js';
export { scenarioSuite } from './scenarios/scenario-suite.js';
// Kept here too, where scenario tests have always found it.
export { seededRandom } from '@taskgraph/workloads';
export type { ScenarioBackend } from './scenarios/scenario-suite.js';
export { countHandles, leakedHandles } from './scenarios/handles.js';
export type { HandleCounts } from './scenarios/handles.js';
export * from './scenarios/probe-app.js';
export * from './scenarios/standby-probe.js';
export { checkFinalState, checkPromotions, checkBackupsMirror, primariesOf } from './scenarios/standby-checks.js';
