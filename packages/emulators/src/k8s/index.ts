/**
 * The Kubernetes API emulator: ConfigMaps and coordination.k8s.io/v1 Leases with the
 * API server's semantics, for tests and local runs of the Kubernetes backend.
 */
export { startK8sEmulator } from './emulator.js';
export type { FailOptions, K8sEmulator, K8sEmulatorFaults, K8sEmulatorOptions, WatchLineFault } from './emulator.js';
export { runK8sEmulatorCommand } from './command.js';
export { kubeconfigText } from './kubeconfig.js';
export type { KubeconfigOptions, WrittenKubeconfig } from './kubeconfig.js';
export { makeServingCertificates } from './certificates.js';
export type { ServingCertificates } from './certificates.js';
