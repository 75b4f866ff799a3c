#!/usr/bin/env node
// Writes the boilerplate of a workspace package (package.json, tsconfig, tsup and
// vitest configs) when missing. Usage: node scripts/new-package.mjs <dir> <npm-name> "<description>"
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const [dir, name, description] = process.argv.slice(2);
if (!dir || !name) {
  console.error('usage: new-package.mjs <dir> <npm-name> "<description>"');
  process.exit(2);
}
const root = new URL('..', import.meta.url).pathname;
const abs = join(root, dir);
const up = relative(abs, root) || '.';
mkdirSync(join(abs, 'src'), { recursive: true });
mkdirSync(join(abs, 'test'), { recursive: true });
function write(file, content) {
  const p = join(abs, file);
  if (!existsSync(p)) writeFileSync(p, content);
}
write(
  'package.json',
  JSON.stringify(
    {
      name,
      version: '0.1.0',
      description,
      license: 'Apache-2.0',
      type: 'module',
      sideEffects: false,
      engines: { node: '>=20.19' },
      exports: { '.': { types: './dist/index.d.ts', import: './dist/index.js' }, './package.json': './package.json' },
      main: './dist/index.js',
      types: './dist/index.d.ts',
      files: ['dist', 'README.md'],
      scripts: {
        build: 'tsup',
        test: 'vitest run',
        lint: 'eslint src test',
        typecheck: 'tsc -p tsconfig.json',
      },
      peerDependencies: name === '@taskgraph/api' ? undefined : { '@taskgraph/api': '^0.1.0' },
      devDependencies: name === '@taskgraph/api' ? undefined : { '@taskgraph/api': '*' },
    },
    null,
    2,
  ) + '\n',
);
write(
  'tsconfig.json',
  JSON.stringify({ extends: `${up}/tsconfig.base.json`, compilerOptions: { baseUrl: up }, include: ['src', 'test'] }, null, 2) + '\n',
);
write(
  'tsup.config.ts',
  `import { defineConfig } from 'tsup';\n\nexport default defineConfig({\n  entry: ['src/index.ts'],\n  format: ['esm'],\n  dts: true,\n  sourcemap: true,\n  clean: true,\n  target: 'node20',\n});\n`,
);
write(
  'vitest.config.ts',
  `import { packageTestConfig } from '${up}/vitest.shared.js';\n\nexport default packageTestConfig();\n`,
);
console.log(`ok ${dir}`);
