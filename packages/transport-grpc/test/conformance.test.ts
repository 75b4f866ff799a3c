import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { freePort, transportSuite } from '@taskgraph/testkit';
import { createGrpcTransport } from '../src/index.js';

transportSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach }, () => createGrpcTransport('grpc://127.0.0.1:0'), {
  name: 'grpc',
  unreachableAddress: async () => `127.0.0.1:${await freePort()}`,
});
