/**
 * The test runner the suites are given. It is the shape shared by vitest, jest and
 * node:test, so a backend's test file passes its runner's functions in; the suites
 * themselves assert with node:assert and depend on no test framework.
 */
export type TestFn = () => void | Promise<void>;

export interface TestApi {
  describe(name: string, fn: () => void): void;
  it(name: string, fn: TestFn, timeoutMs?: number): void;
  beforeAll(fn: TestFn, timeoutMs?: number): void;
  afterAll(fn: TestFn, timeoutMs?: number): void;
  beforeEach(fn: TestFn, timeoutMs?: number): void;
  afterEach(fn: TestFn, timeoutMs?: number): void;
}
