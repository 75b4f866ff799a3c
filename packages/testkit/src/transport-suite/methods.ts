/** Methods: a server answers only the methods it serves, and serve() changes the set at run time. */
import assert from 'node:assert/strict';
import { ErrorCodes, TaskGraphError } from '@taskgraph/api';
import type { SuiteContext } from './context.js';
import { makeMeta, rejectsWith, text, untext } from './helpers.js';

export function methodTests(s: SuiteContext): void {
  const { it, h, patience } = s;

  it('answers MethodNotFoundError for a method it does not serve, and serve() changes the set at run time', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const server = await a.listen({ handler: async (req) => text(req.method) });
    const call = (method: string): Promise<Uint8Array> => b.call(server.address, method, makeMeta(), new Uint8Array(0), { timeoutMs: patience });
    await rejectsWith(call('first'), ErrorCodes.MethodNotFound, 'a server listening with no methods');
    server.serve(['first', 'second']);
    assert.equal(untext(await call('first')), 'first');
    assert.equal(untext(await call('second')), 'second');
    await rejectsWith(call('third'), ErrorCodes.MethodNotFound, 'a method outside the served set');
    server.serve(['second']);
    await rejectsWith(call('first'), ErrorCodes.MethodNotFound, 'a method removed by serve()');
    assert.equal(untext(await call('second')), 'second');
    assert.throws(
      () => server.serve(['ok', 'not ok']),
      (err: unknown) => TaskGraphError.is(err, ErrorCodes.InvalidArgument),
      'serve() with an invalid method name must throw InvalidArgumentError',
    );
    server.serve([]);
    const err = await rejectsWith(call('second'), ErrorCodes.MethodNotFound, 'serve([]) serves nothing');
    assert.equal(err.retryable, false);
  });
}
