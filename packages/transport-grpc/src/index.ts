/**
 * @taskgraph/transport-grpc: the gRPC data plane for TaskGraph, on @grpc/grpc-js,
 * and a Protocol Buffers codec for method payloads.
 */
export { GrpcTransport, createGrpcTransport, createGrpcTransport as createTransport } from './transport.js';
export type { GrpcTransportStats, PeerStats } from './transport.js';
export { GrpcTransportServer } from './server.js';
export type { GrpcServerStats } from './server.js';
export { NODE_HEALTH_PREFIX } from './health.js';
export type { HealthStatus } from './health.js';
export type { ConnectionInfo } from './channelz.js';
export {
  ADVERTISE_HOST_ENV,
  DEFAULT_GRACE_MS,
  DEFAULT_KEEPALIVE_TIME_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_HOST,
  DEFAULT_SERVICE,
  SecurityEnv,
} from './options.js';
export type { GrpcTlsOptions, GrpcTransportOptions } from './options.js';
export { optionsFromUrl } from './options.js';
export { AUTH_KEY, MAX_CLOCK_SKEW_MS, MIN_SECRET_BYTES, PROOF_KEY } from './auth.js';
export { ENVELOPE_KEY, MetadataKeys, TraceKeys, TrailerKeys, separateMetadataFromMeta } from './metadata.js';
export { STATUS_BY_CODE } from './status.js';
export { protobufCodec } from './protobuf.js';
export type { ProtobufCodecOptions } from './protobuf.js';
