#!/usr/bin/env node
// The built command (npm links a workspace's bins at install time, before the build, so the bin is this committed file).
import { main } from '../dist/cli.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`taskgraph-sim: ${err?.stack ?? String(err)}\n`);
    process.exit(2);
  },
);
