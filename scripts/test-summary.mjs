#!/usr/bin/env node
// Adds up the vitest JSON reports every package wrote and prints one plain
// closing line ("tests: N passed, N failed, N skipped"), plus a line per package,
// so a reader (and CI) sees at a glance what ran. Fails when nothing ran.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
let passed = 0;
let failed = 0;
let skipped = 0;
const rows = [];
for (const group of ['packages', 'apps', 'tools', '.']) {
  const dir = join(root, group);
  const names = group === '.' ? ['bench'] : readdirSync(dir);
  for (const name of names) {
    const file = join(dir, name, '.test-results', 'vitest.json');
    if (!existsSync(file)) continue;
    const report = JSON.parse(readFileSync(file, 'utf8'));
    const p = report.numPassedTests ?? 0;
    const f = (report.numFailedTests ?? 0) + (report.numFailedTestSuites ?? 0);
    const s = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
    passed += p;
    failed += f;
    skipped += s;
    rows.push(`  ${group === '.' ? name : `${group}/${name}`}: ${p} passed, ${f} failed${s ? `, ${s} skipped` : ''}`);
  }
}
console.log('\nTest summary by package:');
for (const row of rows) console.log(row);
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
if (failed > 0 || passed === 0 || skipped > 0) process.exit(1);
