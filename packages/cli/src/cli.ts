#!/usr/bin/env node
import { main } from './main.js';
import { tolerateClosedOutput } from './stdio.js';
import { terminalOf } from './terminal.js';

tolerateClosedOutput();

// Until main() settles the process must not end: the runtime's timers are unref'd
// (a library does not hold its host open), so an await on one alone would let Node
// exit early. And if it ever does end early, that is a failure, not a success.
process.exitCode = 1;
const keepAlive = setInterval(() => undefined, 1 << 30);

main(process.argv.slice(2), undefined, { terminal: terminalOf(process.stdout) }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`taskgraph: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
).finally(() => clearInterval(keepAlive));
