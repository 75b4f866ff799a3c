/**
 * @taskgraph/coord-k8s: the Kubernetes coordination backend. Keys are ConfigMaps,
 * sessions and locks are coordination.k8s.io/v1 Leases, all in one namespace.
 */
export { K8sCoordinator, K8S_CAPS } from './coordinator.js';
export type { K8sCoordinatorSettings } from './coordinator.js';
export { createK8sCoordinator, createK8sCoordinator as createCoordinator, parseK8sUrl } from './factory.js';
export type { K8sCoordinatorOptions, ParsedK8sUrl } from './factory.js';
export { RBAC_RULES } from './kube.js';
export { K8sSession } from './session.js';
export { K8sLock } from './locks.js';
export { ANNOTATION, LABEL, keyObjectName, lockObjectName, sessionObjectName } from './names.js';
