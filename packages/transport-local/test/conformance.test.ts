import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { transportSuite } from '@taskgraph/testkit';
import { LocalNetwork, LocalTransport } from '@taskgraph/transport-local';

// One network for the suite, so the suite's nodes reach each other and nothing else.
const network = new LocalNetwork();

transportSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach }, async () => new LocalTransport({ network }), {
  name: 'local',
  unreachableAddress: () => 'local://nobody-listens-here',
});
