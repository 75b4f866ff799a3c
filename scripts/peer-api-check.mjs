#!/usr/bin/env node
// @taskgraph/api must be shared by one copy: every published package lists it as a
// peer dependency (and a dev dependency inside this workspace), never as a normal one.
// The api package itself must have no dependencies at all.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const problems = [];
for (const group of ['packages', 'apps']) {
  for (const name of readdirSync(join(root, group))) {
    const file = join(root, group, name, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8'));
    if (pkg.name === '@taskgraph/api') {
      for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
        if (pkg[field] && Object.keys(pkg[field]).length > 0) problems.push(`${pkg.name} must have no ${field}`);
      }
      continue;
    }
    if (pkg.private) continue;
    if (pkg.dependencies?.['@taskgraph/api']) problems.push(`${pkg.name} lists @taskgraph/api in dependencies; make it a peerDependency`);
  }
}
if (problems.length) {
  for (const p of problems) console.error(`peer-api-check: ${p}`);
  process.exit(1);
}
console.log('peer-api-check: ok');
