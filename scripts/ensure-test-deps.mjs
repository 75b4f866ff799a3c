#!/usr/bin/env node
// Makes sure the servers and the browser the test suites start for themselves can be
// started: etcd from Debian's `etcd-server`, Chromium from Debian's `chromium` (the
// dashboard's browser test drives /usr/bin/chromium; never a downloaded browser).
// When one is missing and we are root on a Debian-like system we install it;
// otherwise we stop with one sentence that says how. No test is skipped silently.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const needs = [
  { what: 'etcd', pkg: 'etcd-server', present: () => Boolean(process.env.TASKGRAPH_ETCD_BIN) || has('etcd'), why: 'the etcd tests run a real etcd', alt: ' (or set TASKGRAPH_ETCD_BIN to an etcd executable)' },
  { what: 'chromium', pkg: 'chromium', present: () => existsSync('/usr/bin/chromium'), why: "the dashboard's browser test drives /usr/bin/chromium", alt: '' },
];

const missing = needs.filter((n) => !n.present());
if (missing.length === 0) process.exit(0);

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (isRoot && has('apt-get')) {
  console.log(`[taskgraph] missing: ${missing.map((n) => `${n.what} (${n.why})`).join('; ')}: installing Debian's ${missing.map((n) => n.pkg).join(', ')}.`);
  try {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', '-qq', ...missing.map((n) => n.pkg)], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch {
    // fall through to the check below
  }
}
const still = needs.filter((n) => !n.present());
if (still.length === 0) process.exit(0);
for (const n of still) {
  console.error(`[taskgraph] The tests need ${n.what}: install it with \`sudo apt-get install -y ${n.pkg}\`${n.alt} and run the tests again.`);
}
process.exit(1);
