/**
 * A backend defined by a test: a plug-in module, written to a temporary file, that
 * registers `counted+<scheme>://` for the built-in coordinators and transports. Each
 * opens the built-in one underneath and appends a line to a log, so a test can see
 * which processes opened which backends through the plug-in.
 */
import { mkdtempSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Opened {
  readonly pid: number;
  readonly kind: 'coordinator' | 'transport';
  readonly url: string;
}

export interface CountingPlugin {
  readonly dir: string;
  readonly path: string;
  opened(): Opened[];
}

export function writeCountingPlugin(): CountingPlugin {
  const dir = mkdtempSync(join(tmpdir(), 'tg-plugin-'));
  const log = join(dir, 'opened.jsonl');
  const path = join(dir, 'counted-plugin.mjs');
  // Plain JavaScript importing nothing of ours: a plug-in gets the registry and the
  // resolvers from the command that loads it.
  writeFileSync(
    path,
    `import { appendFileSync } from 'node:fs';
const log = ${JSON.stringify(log)};
const inner = (url) => String(url).replace(/^counted\\+/i, '');
const note = (kind, url) => appendFileSync(log, JSON.stringify({ pid: process.pid, kind, url: String(url) }) + '\\n');
export default ({ registerCoordinator, registerTransport, resolveCoordinator, resolveTransport }) => {
  for (const scheme of ['memory', 'etcd']) {
    registerCoordinator('counted+' + scheme, () => async (url, runtime) => {
      note('coordinator', url);
      return resolveCoordinator(inner(url), runtime);
    });
  }
  for (const scheme of ['local', 'grpc']) {
    registerTransport('counted+' + scheme, () => ({
      createTransport: async (url) => {
        note('transport', url);
        return resolveTransport(inner(url));
      },
    }));
  }
};
`,
  );
  return {
    dir,
    path,
    opened: () =>
      existsSync(log)
        ? readFileSync(log, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as Opened)
        : [],
  };
}
