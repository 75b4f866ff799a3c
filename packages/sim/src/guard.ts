/**
 * The run-time guard: while a simulation runs, reading the real clock or the
 * platform's randomness, or starting a real timer, is recorded with the stack that
 * did it, and the run fails. Simulated code must take time, timers and randomness
 * from its injected Clock; otherwise a seed would not replay.
 */
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';

export interface GuardViolation {
  readonly what: string;
  readonly stack: string;
}

type Patch = readonly [target: object, key: string];

const PATCHES: readonly Patch[] = [
  [Math, 'random'],
  [Date, 'now'],
  [performance, 'now'],
  [globalThis, 'setTimeout'],
  [globalThis, 'setInterval'],
  [globalThis, 'setImmediate'],
  [crypto, 'randomBytes'],
  [crypto, 'randomUUID'],
  [crypto, 'randomInt'],
];

/** Frames of the test runner and of Node itself: their reads are not the simulated code's. */
const FOREIGN = /node_modules[\\/](vitest|@vitest|tinypool|tinyspy|birpc)[\\/]|node:internal/;

export class Guard {
  readonly violations: GuardViolation[] = [];
  #saved: Array<readonly [object, string, unknown]> = [];

  /** Installs the guard; `uninstall` restores every original. */
  install(): void {
    if (this.#saved.length > 0) return;
    for (const [target, key] of PATCHES) {
      const original = (target as Record<string, unknown>)[key];
      if (typeof original !== 'function') continue;
      this.#saved.push([target, key, original]);
      const name = `${target === globalThis ? '' : target === Math ? 'Math.' : target === Date ? 'Date.' : target === performance ? 'performance.' : 'crypto.'}${key}`;
      const violations = this.violations;
      const wrapped = function (this: unknown, ...args: unknown[]): unknown {
        const stack = new Error().stack ?? '';
        const frames = stack.split('\n').slice(2);
        // The first frame that is not the runner's or Node's decides.
        const caller = frames.find((f) => !FOREIGN.test(f));
        if (caller !== undefined && frames.indexOf(caller) === 0) violations.push({ what: name, stack: frames.slice(0, 8).join('\n') });
        return (original as (...a: unknown[]) => unknown).apply(this, args);
      };
      (target as Record<string, unknown>)[key] = wrapped;
    }
    syncBuiltinESMExports();
  }

  uninstall(): void {
    for (const [target, key, original] of this.#saved.reverse()) (target as Record<string, unknown>)[key] = original;
    this.#saved = [];
    syncBuiltinESMExports();
  }
}
