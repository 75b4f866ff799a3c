/**
 * `npm run bench:coordination`: the framework's use of etcd beside bare etcd3
 * (epoch advance, failover, store writes). See coordination-cli.ts for the
 * options and coordination-bench.ts for what is measured.
 */
import { main } from './coordination-cli.js';

process.exitCode = await main(process.argv.slice(2));
