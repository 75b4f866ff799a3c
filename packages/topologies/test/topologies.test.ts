import { InvalidArgumentError } from '@taskgraph/api';
import type { Topology } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { addLinkages, full, ring, star, tree } from '../src/index.js';

function neighborsOf(t: Topology, id: number): readonly number[] {
  t.setTaskId(id);
  return t.getNeighbors(0);
}

describe('tree', () => {
  it('links a binary tree of 15 tasks with 0 at the root', () => {
    const { Parents, Children } = tree({ numTasks: 15, fanout: 2 });
    expect(neighborsOf(Children, 0)).toEqual([1, 2]);
    expect(neighborsOf(Children, 6)).toEqual([13, 14]);
    expect(neighborsOf(Children, 7)).toEqual([]);
    expect(neighborsOf(Parents, 0)).toEqual([]);
    expect(neighborsOf(Parents, 14)).toEqual([6]);
    expect(neighborsOf(Parents, 1)).toEqual([0]);
  });

  it('is consistent: i is a child of p exactly when p is the parent of i, for several fanouts', () => {
    for (const fanout of [1, 2, 3, 5]) {
      const n = 23;
      const { Parents, Children } = tree({ numTasks: n, fanout });
      let edges = 0;
      for (let p = 0; p < n; p++) {
        for (const c of neighborsOf(Children, p)) {
          expect(neighborsOf(Parents, c)).toEqual([p]);
          edges++;
        }
      }
      expect(edges).toBe(n - 1);
    }
  });

  it('rejects bad shapes and ids', () => {
    expect(() => tree({ numTasks: 0, fanout: 2 })).toThrow(InvalidArgumentError);
    expect(() => tree({ numTasks: 3, fanout: 0 })).toThrow('fanout');
    const { Parents } = tree({ numTasks: 3, fanout: 2 });
    expect(() => Parents.getNeighbors(0)).toThrow('setTaskId() was not called');
    expect(() => Parents.setTaskId(3)).toThrow('outside 0..2');
  });
});

describe('full, star and ring', () => {
  it('full links everyone and a master', () => {
    const { Neighbors, Master } = full({ numTasks: 4 });
    expect(neighborsOf(Neighbors, 2)).toEqual([0, 1, 3]);
    expect(neighborsOf(Master, 0)).toEqual([1, 2, 3]);
    expect(neighborsOf(Master, 3)).toEqual([0]);
    expect(() => full({ numTasks: 2, master: 2 })).toThrow(InvalidArgumentError);
  });

  it('star links leaves to the center', () => {
    const { Center, Leaves } = star({ numTasks: 4, center: 1 });
    expect(neighborsOf(Center, 0)).toEqual([1]);
    expect(neighborsOf(Center, 1)).toEqual([]);
    expect(neighborsOf(Leaves, 1)).toEqual([0, 2, 3]);
    expect(neighborsOf(Leaves, 2)).toEqual([]);
  });

  it('ring wraps around', () => {
    const { Prev, Next } = ring({ numTasks: 5 });
    expect(neighborsOf(Prev, 0)).toEqual([4]);
    expect(neighborsOf(Next, 4)).toEqual([0]);
    const single = ring({ numTasks: 1 });
    expect(neighborsOf(single.Next, 0)).toEqual([]);
  });

  it('addLinkages adds every link type of a shape', () => {
    const added: string[] = [];
    addLinkages({ addLinkage: (lt) => void added.push(lt) }, tree({ numTasks: 3, fanout: 2 }));
    expect(added).toEqual(['Parents', 'Children']);
  });
});
