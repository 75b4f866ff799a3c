import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { freePort, transportSuite } from '@taskgraph/testkit';
import { createGrpcTransport } from '../src/index.js';

const api = { describe, it, beforeAll, afterAll, beforeEach, afterEach };
const unreachableAddress = async (): Promise<string> => `127.0.0.1:${await freePort()}`;

// The default data plane: every call to a peer rides its multiplexed stream.
transportSuite(api, () => createGrpcTransport('grpc://127.0.0.1:0'), { name: 'grpc (stream)', unreachableAddress });
// One unary gRPC call per call, as foreign gRPC callers make them: the same contract.
transportSuite(api, () => createGrpcTransport('grpc://127.0.0.1:0?dataPlane=unary'), { name: 'grpc (unary)', unreachableAddress });
