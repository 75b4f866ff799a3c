import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { jobKeys } from '../src/index.js';
import { recordingTask, world } from './helpers.js';
import { FlakyCoordinator, gate } from './parts.js';

let w: ReturnType<typeof world>;
afterEach(async () => {
  await w.close();
});

describe('a node whose epoch changes while it publishes its address', () => {
  it('calls the task’s enterEpoch once for that epoch', async () => {
    w = world();
    await w.controller().createJob({ numTasks: 1, linkTypes: ['Parents', 'Children'] });
    const log: string[] = [];
    const flaky = new FlakyCoordinator(w.coordinator());
    const held = gate();
    let publishing = false;
    flaky.beforeWrite = (key) => {
      if (!key.endsWith('/tasks/0/addr')) return undefined;
      publishing = true;
      return held.promise;
    };
    const { node } = await w.node(() => recordingTask(log), { coordinator: flaky }, 1);
    const run = node.start();
    await eventually('the address being published', () => publishing);
    // The job moves to epoch 1 meanwhile.
    const other = w.coordinator();
    const e = await other.get(jobKeys.epoch(w.job));
    await other.update(jobKeys.epoch(w.job), new TextEncoder().encode('1'), e!.version);
    await eventually('the node to see epoch 1', () => node.getEpoch() === 1);
    held.open();
    await eventually('enterEpoch 1', () => log.includes('epoch 1'));
    await eventually('the address', async () => (await other.get(jobKeys.addr(w.job, 0))) !== undefined);
    const e1 = await other.get(jobKeys.epoch(w.job));
    await other.update(jobKeys.epoch(w.job), new TextEncoder().encode('2'), e1!.version);
    await eventually('enterEpoch 2', () => log.includes('epoch 2'));
    await node.stop();
    await run;
    expect(log).toEqual(['init 0', 'epoch 1', 'epoch 2', 'exit']);
  });
});
