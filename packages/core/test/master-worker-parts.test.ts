import { DecodeFailedError } from '@taskgraph/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonCodec } from '../src/codec.js';
import { WorkerRoster } from '../src/master-worker/roster.js';
import { envelopeSpec, masterWorkerLinkages } from '../src/master-worker/wire.js';

describe('WorkerRoster', () => {
  it('joined, failed, restarted: in order, once each, whichever source comes first', () => {
    const r = new WorkerRoster(2);
    expect(r.announce(0, 1)).toEqual([{ kind: 'joined', workerId: 0, incarnation: 1 }]);
    expect(r.announce(0, 1)).toEqual([]);
    expect(r.isReady(0, 1)).toBe(true);
    expect(r.failed(0, 1)).toEqual([{ kind: 'failed', workerId: 0, incarnation: 1 }]);
    expect(r.failed(0, 1)).toEqual([]);
    expect(r.isReady(0, 1)).toBe(false);
    expect(r.announce(0, 1)).toBeUndefined();
    expect(r.announce(0, 2)).toEqual([{ kind: 'restarted', workerId: 0, incarnation: 2 }]);
    // The next incarnation announces itself before the failure is seen: the failure is told first.
    expect(r.announce(0, 3)).toEqual([
      { kind: 'failed', workerId: 0, incarnation: 2 },
      { kind: 'restarted', workerId: 0, incarnation: 3 },
    ]);
    expect(r.failed(0, 2)).toEqual([]);
    expect(r.announce(0, 2)).toBeUndefined();
    expect(r.isOver(0, 2)).toBe(true);
    expect(r.isOver(0, 3)).toBe(false);
  });

  it('a failure of an incarnation that never announced itself ends it, and tells the end of the announced one', () => {
    const r = new WorkerRoster(1);
    expect(r.failed(0, 1)).toEqual([]);
    expect(r.announce(0, 1)).toBeUndefined();
    expect(r.announce(0, 2)).toEqual([{ kind: 'joined', workerId: 0, incarnation: 2 }]);
    expect(r.failed(0, 3)).toEqual([{ kind: 'failed', workerId: 0, incarnation: 2 }]);
    expect(r.announce(0, 4)).toEqual([{ kind: 'restarted', workerId: 0, incarnation: 4 }]);
  });

  it('an incarnation live as the master starts: its failure is told even before it announces itself; announcing makes it join', () => {
    const r = new WorkerRoster(2);
    r.seed(0, 3);
    r.seed(1, 2);
    expect(r.isReady(0, 3)).toBe(false);
    expect(r.isOver(0, 2)).toBe(true);
    expect(r.failed(0, 3)).toEqual([{ kind: 'failed', workerId: 0, incarnation: 3 }]);
    expect(r.announce(0, 4)).toEqual([{ kind: 'joined', workerId: 0, incarnation: 4 }]);
    expect(r.announce(1, 2)).toEqual([{ kind: 'joined', workerId: 1, incarnation: 2 }]);
    expect(r.isReady(1, 2)).toBe(true);
    r.seed(1, 5);
    expect(r.isReady(1, 2)).toBe(true);
  });

  it('a worker that does not exist is never ready and its calls are refused', () => {
    const r = new WorkerRoster(1);
    expect(r.announce(1, 1)).toBeUndefined();
    expect(r.failed(5, 1)).toEqual([]);
    expect(r.isReady(1, 1)).toBe(false);
  });

  it('whatever the order of seeds, announcements and failures, each worker’s events alternate and incarnations never go back', () => {
    const op = fc.record({ kind: fc.constantFrom('announce', 'failed', 'seed'), incarnation: fc.integer({ min: 1, max: 6 }) });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const r = new WorkerRoster(1);
        const events = ops.flatMap((o) =>
          o.kind === 'announce' ? (r.announce(0, o.incarnation) ?? [])
          : o.kind === 'seed' ? (r.seed(0, o.incarnation), [])
          : r.failed(0, o.incarnation),
        );
        let last = 0;
        let alive = false;
        let joined = false;
        for (const e of events) {
          if (e.kind === 'failed') {
            // A seeded incarnation may fail without having announced itself.
            if (alive) expect(e.incarnation).toBe(last);
            else expect(e.incarnation).toBeGreaterThan(last);
            last = e.incarnation;
            alive = false;
          } else {
            expect(alive).toBe(false);
            expect(e.incarnation).toBeGreaterThanOrEqual(last);
            expect(e.kind).toBe(joined ? 'restarted' : 'joined');
            last = e.incarnation;
            alive = true;
            joined = true;
          }
        }
      }),
    );
  });
});

describe('master/worker wire', () => {
  it('the envelope carries the caller’s incarnation and the input, and refuses bytes without it', () => {
    const spec = envelopeSpec({ name: 'm', input: jsonCodec<unknown>(), output: jsonCodec<unknown>() });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.jsonValue(), (incarnation, input) => {
        const back = spec.input.decode(spec.input.encode({ incarnation, input }));
        expect(back.incarnation).toBe(incarnation);
        expect(JSON.stringify(back.input)).toBe(JSON.stringify(input ?? null));
      }),
    );
    expect(() => spec.input.decode(new Uint8Array([1, 0]))).toThrow(DecodeFailedError);
    expect(() => spec.input.decode(new Uint8Array([7, 0, 0, 0, 1, 49]))).toThrow(DecodeFailedError);
  });

  it('the star: the master’s neighbours are the workers, a worker’s the master', () => {
    const make = (task: number) => {
      const l = masterWorkerLinkages(3);
      for (const t of Object.values(l)) t.setTaskId(task);
      return Object.fromEntries(Object.entries(l).map(([k, t]) => [k, t.getNeighbors(0)]));
    };
    expect(make(0)).toEqual({ master: [], workers: [1, 2, 3] });
    expect(make(2)).toEqual({ master: [0], workers: [] });
    expect(() => masterWorkerLinkages(0)).toThrow('at least one worker');
  });
});
