/**
 * @taskgraph/transport-local: an in-process Transport with fault injection, for
 * tests and single-process runs. Servers live on a LocalNetwork under
 * `local://<name>` addresses.
 */
import type { TransportFactory } from '@taskgraph/api';
import { createLocalTransport } from './transport.js';

export { LocalNetwork } from './network.js';
export type { LinkStats, LocalNetworkOptions } from './network.js';
export type { DelayOptions, DuplicateOptions, Fault, FaultKind, FaultOptions } from './faults.js';
export { DEFAULT_GRACE_MS } from './server.js';
export type { LocalServer } from './server.js';
export { LocalTransport, DEFAULT_MAX_MESSAGE_BYTES, createLocalTransport } from './transport.js';
export type { LocalListenOptions, LocalTransportOptions } from './transport.js';

/** The factory the URL resolver in core calls for `local://` URLs. */
export const createTransport: TransportFactory & typeof createLocalTransport = createLocalTransport;
