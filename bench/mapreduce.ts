/**
 * `npm run bench:mapreduce`: the MapReduce word count over >= 200 MB with 1, 2 and
 * 4 worker processes on a real etcd, beside a plain single-process count. See
 * mapreduce-cli.ts for the options and mapreduce-bench.ts for what is measured.
 */
import { main } from './mapreduce-cli.js';

process.exitCode = await main(process.argv.slice(2));
