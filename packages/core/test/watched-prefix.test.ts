import type { Entry, WatchEvent } from '@taskgraph/api';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { WatchedPrefix } from '../src/watched-prefix.js';
import { bytes, memoryWorld, recordingLogger } from './parts.js';

let w: ReturnType<typeof memoryWorld>;
afterEach(async () => {
  await w.close();
});

describe('WatchedPrefix', () => {
  it('delivers the snapshot, then every change in order', async () => {
    w = memoryWorld();
    const c = w.client();
    await c.create('p/a', bytes('1'));
    const seen: string[] = [];
    const watch = new WatchedPrefix(
      c,
      'p/',
      {
        snapshot: (entries: readonly Entry[]) => void seen.push(`snapshot ${entries.map((e) => e.key).join(',')}`),
        event: (ev: WatchEvent) => void seen.push(`${ev.type} ${ev.key}`),
      },
      w.clock,
      recordingLogger(),
    );
    await watch.start(new AbortController().signal);
    const v = await c.create('p/b', bytes('2'));
    await c.update('p/b', bytes('3'), v);
    await c.delete('p/b', (await c.get('p/b'))!.version);
    await eventually('three changes', () => seen.length === 4);
    expect(seen).toEqual(['snapshot p/a', 'put p/b', 'put p/b', 'delete p/b']);
    await watch.stop();
  });

  it('a handler that throws on one change is logged and skipped; the changes after it still arrive', async () => {
    w = memoryWorld();
    const c = w.client();
    const logger = recordingLogger();
    const seen: string[] = [];
    const watch = new WatchedPrefix(
      c,
      'p/',
      {
        snapshot: () => undefined,
        event: (ev: WatchEvent) => {
          if (ev.key === 'p/bad') throw new SyntaxError('cannot read it');
          seen.push(ev.key);
        },
      },
      w.clock,
      logger,
    );
    await watch.start(new AbortController().signal);
    await c.create('p/bad', bytes('x'));
    await c.create('p/good', bytes('y'));
    await eventually('the change after the bad one', () => seen.length === 1);
    expect(seen).toEqual(['p/good']);
    expect(logger.lines.filter((l) => l.level === 'error')).toEqual([
      { level: 'error', message: 'a store change could not be handled; skipped', fields: { key: 'p/bad', error: 'cannot read it' } },
    ]);
    await watch.stop();
  });
});
