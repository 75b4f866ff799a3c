/** Errors: typed handler errors are rebuilt on the caller's side; plain errors become APPLICATION; an unreachable address is UNAVAILABLE. */
import assert from 'node:assert/strict';
import { ConflictError, EpochChangedError, ErrorCodes, NotOwnerError } from '@taskgraph/api';
import type { SuiteContext } from './context.js';
import { serveAll } from './context.js';
import { makeMeta, rejectsWith, text } from './helpers.js';

export function errorTests(s: SuiteContext): void {
  const { it, h, ms, patience, options } = s;

  it('rebuilds a typed handler error on the caller side with its code, message and details', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const server = await serveAll(a, {
      epoch: () => {
        throw new EpochChangedError('the epoch moved on to 7', { details: { current: 7 } });
      },
      owner: async () => {
        throw new NotOwnerError('node-x no longer runs task 2', { details: { task: 2, token: '99' } });
      },
      conflict: async () => {
        throw new ConflictError('lost the race', { retryable: true, details: { nested: { a: [1, 'two', null] }, flag: false } });
      },
    });
    const call = (method: string): Promise<Uint8Array> => b.call(server.address, method, makeMeta(), new Uint8Array(0), { timeoutMs: patience });

    const epoch = await rejectsWith(call('epoch'), ErrorCodes.EpochChanged, 'EpochChangedError');
    assert.ok(epoch instanceof EpochChangedError, `expected an EpochChangedError instance, got ${epoch.name}`);
    assert.equal(epoch.name, 'EpochChangedError');
    assert.match(epoch.message, /the epoch moved on to 7/);
    assert.equal(epoch.details['current'], 7);
    assert.equal(epoch.currentEpoch, 7);
    assert.equal(epoch.retryable, false);

    const owner = await rejectsWith(call('owner'), ErrorCodes.NotOwner, 'NotOwnerError');
    assert.ok(owner instanceof NotOwnerError);
    assert.match(owner.message, /node-x no longer runs task 2/);
    assert.deepEqual(owner.details, { task: 2, token: '99' });
    assert.equal(owner.retryable, true);

    const conflict = await rejectsWith(call('conflict'), ErrorCodes.Conflict, 'ConflictError');
    assert.equal(conflict.retryable, true, 'a retryable flag set by the handler must survive the wire');
    assert.deepEqual(conflict.details, { nested: { a: [1, 'two', null] }, flag: false });
  });

  it('turns a plain Error, or a thrown non-error, into APPLICATION', async () => {
    const [a, b] = [await h.node(), await h.node()];
    const server = await serveAll(a, {
      plain: async () => {
        throw new TypeError('cannot read the thing');
      },
      sync: () => {
        throw new Error('thrown synchronously');
      },
      stringy: async () => {
        throw 'just a string' as unknown as Error;
      },
    });
    const call = (method: string): Promise<Uint8Array> => b.call(server.address, method, makeMeta(), new Uint8Array(0), { timeoutMs: patience });
    const plain = await rejectsWith(call('plain'), ErrorCodes.Application, 'a TypeError');
    assert.match(plain.message, /cannot read the thing/);
    assert.equal(plain.details['name'], 'TypeError');
    assert.equal(plain.retryable, false);
    const sync = await rejectsWith(call('sync'), ErrorCodes.Application, 'a synchronous throw');
    assert.match(sync.message, /thrown synchronously/);
    const stringy = await rejectsWith(call('stringy'), ErrorCodes.Application, 'a thrown string');
    assert.match(stringy.message, /just a string/);
  });

  it('reports an unreachable address as UnavailableError, retryable', async () => {
    const b = await h.node();
    const address = await options.unreachableAddress();
    const err = await rejectsWith(
      b.call(address, 'anything', makeMeta(), text('x'), { timeoutMs: ms(20_000) }),
      ErrorCodes.Unavailable,
      `a call to ${address}`,
    );
    assert.equal(err.retryable, true);
  });
}
