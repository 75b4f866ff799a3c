/**
 * `npm run bench:hot-standby`: hot standby measured on a real etcd (failover with
 * a hot backup beside a cold standby, update() beside a bare gRPC call, updates
 * lost over primary kills). See hot-standby-cli.ts for the options and
 * hot-standby-bench.ts for what is measured.
 */
import { main } from './hot-standby-cli.js';

process.exitCode = await main(process.argv.slice(2));
