// Shared vitest settings: tests import sibling packages from their sources
// (no build needed), through the same alias the tsconfig paths declare.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = fileURLToPath(new URL('.', import.meta.url));

export function packageTestConfig(options: { testTimeout?: number; typecheck?: boolean } = {}) {
  return defineConfig({
    resolve: {
      alias: [
        { find: /^@taskgraph\/app-([a-z0-9-]+)$/, replacement: `${root}apps/$1/src/index.ts` },
        { find: /^@taskgraph\/([a-z0-9-]+)$/, replacement: `${root}packages/$1/src/index.ts` },
      ],
    },
    test: {
      include: ['test/**/*.test.ts'],
      testTimeout: options.testTimeout ?? 30_000,
      hookTimeout: 60_000,
      reporters: ['default', ['json', { outputFile: '.test-results/vitest.json' }]],
      pool: 'forks',
      typecheck: { enabled: options.typecheck ?? false, include: ['test/**/*.test-d.ts'] },
    },
  });
}
