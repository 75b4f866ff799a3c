/**
 * `npm run bench:scale`: how the framework's cost grows with the job. One JSON line
 * per run and a JSON summary line last on stdout, progress on stderr. Exit 0 when
 * every run passed its check, whether or not the targets were met (the numbers are
 * the result); 1 when a run failed; 2 on bad arguments.
 *
 *   --parts embedded,etcd          which parts to run (comma-separated; default: all)
 *   --sizes 63,255,1023            tasks per job in the embedded part
 *   --etcd-sizes 8,64,256,1000     tasks per job in the etcd part (plus 10% standbys)
 *   --max-processes 16             node processes at most in the etcd part
 *   --ttl-ms 10000                 the etcd part's session TTL
 *   --failover-min-tasks 60        kill a process when one holds at least this many tasks
 *   --epochs 10                    epochs per job
 */
import { main } from './src/scale-cli.js';

process.exitCode = await main(process.argv.slice(2));
