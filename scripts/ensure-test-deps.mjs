#!/usr/bin/env node
// Makes sure the servers the test suites start for themselves can be started.
// etcd comes from Debian's `etcd-server`: when it is missing and we are root on
// a Debian-like system we install it; otherwise we stop with one sentence that
// says how. The etcd tests are never skipped silently.
import { execFileSync, spawnSync } from 'node:child_process';

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

if (process.env.TASKGRAPH_ETCD_BIN) {
  process.exit(0);
}
if (has('etcd')) process.exit(0);

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (isRoot && has('apt-get')) {
  console.log('[taskgraph] etcd is missing: installing Debian package etcd-server (the etcd tests run a real etcd).');
  try {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', '-qq', 'etcd-server'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch {
    // fall through to the check below
  }
  if (has('etcd')) process.exit(0);
}
console.error(
  '[taskgraph] The tests need an etcd binary: install it with `sudo apt-get install -y etcd-server` ' +
    '(or set TASKGRAPH_ETCD_BIN to an etcd executable) and run the tests again.',
);
process.exit(1);
