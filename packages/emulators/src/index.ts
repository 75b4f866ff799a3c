/**
 * @taskgraph/emulators: HTTP emulators of the subsets of the Consul and Kubernetes
 * APIs that TaskGraph's backends use, for tests and local development.
 */
export * from './consul/index.js';
export * from './k8s/index.js';
