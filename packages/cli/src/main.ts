/**
 * The `taskgraph` command line: argument parsing and dispatch.
 */
import { parseArgs } from 'node:util';
import { TaskGraphError } from '@taskgraph/api';
import { MAX_NODES_PER_HOST } from '@taskgraph/core';
import { parseAppArgs, resolveConfig } from './config.js';
import { runJobCommand } from './commands/job.js';
import { nodeCount, runNodeCommand } from './commands/node.js';
import { DEFAULT_GRACE_MS, JobRun } from './commands/run.js';
import { EXIT, isConfigurationError } from './exit-codes.js';
import { DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW_MS } from './restart-budget.js';
import { redactor } from './secrets.js';

export const USAGE = `taskgraph: run TaskGraph jobs and manage them in the coordination store

usage:
  taskgraph run <app> (--tasks N | --workers N) [--backups B] [--standbys S] [--coordinator URL] [--transport URL]
                [--job NAME] [--ttl MS] [--arg key=value ...] [--timeout S] [--no-restart] [--keep]
                [--max-restarts N] [--restart-window S] [--grace S] [--nodes-per-process K]
      runs a job as separate OS processes on this machine (in this process for memory://):
      a task graph of N tasks, or a master/worker application with a master and N workers;
      a primary and B backups per task (hot standby; of the master only, for master/worker),
      plus S cold standbys; a failed node is
      restarted after a growing delay, at most N (${DEFAULT_MAX_RESTARTS}) times per slot within S (${DEFAULT_RESTART_WINDOW_MS / 1000}) seconds;
      SIGINT/SIGTERM stop every node gracefully, killing those left after --grace S (${DEFAULT_GRACE_MS / 1000}) seconds;
      --nodes-per-process K runs the nodes K to a process (a node host; a process that dies fails over all of them at once)
  taskgraph node <app> --job NAME [--coordinator URL] [--transport URL] [--node-id ID] [--ttl MS] [--arg key=value ...] [--count N]
      runs one node of a job (one per machine or container), or N nodes sharing one store client,
      one watch per prefix and one server (ids ID.0 .. ID.N-1; 1 <= N <= ${MAX_NODES_PER_HOST})
  taskgraph job create <job> (--tasks N | --workers N) [--backups B] (--link-types A,B | --app <app>) [--coordinator URL]
  taskgraph job status <job> [--json] | watch <job> [--json] | delete <job>

<app>: a built-in (regression, mapreduce), a path to a module (./my-app.js) or a package name;
the module's default export is an application made with defineApp() or defineMasterWorkerApp() from @taskgraph/core.

configuration: flags, then TASKGRAPH_COORDINATOR / TASKGRAPH_TRANSPORT / TASKGRAPH_SESSION_TTL_MS /
TASKGRAPH_LOG_LEVEL / TASKGRAPH_PLUGINS (comma-separated), then --config FILE (default ./taskgraph.config.json):
  { "coordinator": "etcd://127.0.0.1:2379", "transport": "grpc://0.0.0.0:0", "sessionTtlMs": 5000, "logLevel": "info",
    "plugins": ["./my-backend-plugin.mjs"] }
URLs: memory://[name]  etcd://host:2379[,host2:2379]?namespace=tg  consul://host:8500  k8s://?namespace=default
      local://  grpc://0.0.0.0:0?advertise=HOST  grpcs://0.0.0.0:0?advertise=HOST&ca=FILE&cert=FILE&key=FILE
      each from its package (@taskgraph/coord-etcd, @taskgraph/transport-grpc, ...), installed beside this one;
      --plugin MODULE (repeatable) loads a module whose default export registers more schemes

passwords in URLs (etcd://user:password@host...) are masked in all output and reach node processes
through their environment, never their command line

data-plane security (see the README's Security section): --tls-ca FILE --tls-cert FILE --tls-key FILE
  (mutual TLS with a job CA: makes the transport grpcs://) and --job-secret-file FILE, or in the config file
  { "tls": { "ca": ..., "cert": ..., "key": ... }, "jobSecretFile": ... }, or TASKGRAPH_TLS_CA / TASKGRAPH_TLS_CERT /
  TASKGRAPH_TLS_KEY / TASKGRAPH_JOB_SECRET_FILE / TASKGRAPH_JOB_SECRET, read by the transport

exit codes: 0 success, 1 the job or node failed, 2 bad usage or configuration, 3 the node lost its lease,
4 the job's records in the store are unreadable, 130 / 143 run interrupted by SIGINT / SIGTERM`;

export async function main(argv: readonly string[], print: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<number> {
  // Until the configuration is read, mask what the raw flags and environment name.
  const fromFlags = redactor({ coordinator: flagValue(argv, '--coordinator'), transport: flagValue(argv, '--transport') });
  const fromEnv = redactor({ coordinator: process.env['TASKGRAPH_COORDINATOR'], transport: process.env['TASKGRAPH_TRANSPORT'] });
  let redact = (line: string) => fromEnv(fromFlags(line));
  const out = (s: string) => print(redact(s));
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        tasks: { type: 'string' },
        workers: { type: 'string' },
        standbys: { type: 'string' },
        backups: { type: 'string' },
        coordinator: { type: 'string' },
        transport: { type: 'string' },
        job: { type: 'string' },
        ttl: { type: 'string' },
        arg: { type: 'string', multiple: true },
        timeout: { type: 'string' },
        'no-restart': { type: 'boolean' },
        'max-restarts': { type: 'string' },
        'restart-window': { type: 'string' },
        grace: { type: 'string' },
        keep: { type: 'boolean' },
        'node-id': { type: 'string' },
        count: { type: 'string' },
        'nodes-per-process': { type: 'string' },
        'link-types': { type: 'string' },
        app: { type: 'string' },
        json: { type: 'boolean' },
        config: { type: 'string' },
        'log-level': { type: 'string' },
        'log-dir': { type: 'string' },
        plugin: { type: 'string', multiple: true },
        'tls-ca': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'job-secret-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    out(`${(err as Error).message}\n\n${USAGE}`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  const [command, target, extra] = positionals;
  if (values.help || !command) {
    out(USAGE);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const int = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new TaskGraphError('INVALID_ARGUMENT', `--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return n;
  };
  try {
    const config = resolveConfig(values);
    // The raw flags' and environment's secrets stay masked too (a lower source may hold another password).
    const early = redact;
    const fromConfig = redactor(config);
    redact = (line) => fromConfig(early(line));
    const args = parseAppArgs(values.arg);
    switch (command) {
      case 'run': {
        if (!target) throw new TaskGraphError('INVALID_ARGUMENT', 'run needs an application: taskgraph run regression --tasks 15 ...');
        const tasks = int('tasks', values.tasks);
        const workers = int('workers', values.workers);
        if (tasks === undefined && workers === undefined) throw new TaskGraphError('INVALID_ARGUMENT', 'run needs --tasks N (or --workers N for a master/worker application)');
        const timeout = int('timeout', values.timeout);
        const maxRestarts = int('max-restarts', values['max-restarts']);
        const window = int('restart-window', values['restart-window']);
        const grace = int('grace', values.grace);
        if (window === 0) throw new TaskGraphError('INVALID_ARGUMENT', '--restart-window must be at least 1 second');
        const run = new JobRun({
          app: target,
          ...(tasks !== undefined ? { tasks } : {}),
          ...(workers !== undefined ? { workers } : {}),
          standbys: int('standbys', values.standbys) ?? 0,
          backups: int('backups', values.backups) ?? 0,
          ...(values['nodes-per-process'] !== undefined ? { nodesPerProcess: nodeCount(values['nodes-per-process'], 'nodes-per-process') } : {}),
          config,
          args,
          restart: !values['no-restart'],
          keepJob: values.keep ?? false,
          print: out,
          ...(values.job ? { job: values.job } : {}),
          ...(values['log-dir'] ? { logDir: values['log-dir'] } : {}),
          ...(timeout ? { timeoutMs: timeout * 1000 } : {}),
          ...(maxRestarts !== undefined ? { maxRestarts } : {}),
          ...(window !== undefined ? { restartWindowMs: window * 1000 } : {}),
          ...(grace !== undefined ? { graceMs: grace * 1000 } : {}),
        });
        const onSignal = (signal: NodeJS.Signals) => run.interrupt(signal);
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        try {
          return (await run.run()).exitCode;
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }
      case 'node': {
        if (!target) throw new TaskGraphError('INVALID_ARGUMENT', 'node needs an application: taskgraph node regression --job NAME ...');
        if (!values.job) throw new TaskGraphError('INVALID_ARGUMENT', 'node needs --job NAME');
        const count = nodeCount(values.count);
        return await runNodeCommand({ app: target, job: values.job, config, args, count, ...(values['node-id'] ? { nodeId: values['node-id'] } : {}) });
      }
      case 'job': {
        if (!target || !extra) throw new TaskGraphError('INVALID_ARGUMENT', 'usage: taskgraph job create|status|watch|delete <job>');
        const ac = new AbortController();
        const onSignal = () => ac.abort();
        process.once('SIGINT', onSignal);
        try {
          const tasks = int('tasks', values.tasks);
          const workers = int('workers', values.workers);
          const backups = int('backups', values.backups);
          return await runJobCommand({
            action: target,
            job: extra,
            config,
            out,
            signal: ac.signal,
            json: values.json ?? false,
            ...(tasks !== undefined ? { tasks } : {}),
            ...(workers !== undefined ? { workers } : {}),
            ...(backups !== undefined ? { backups } : {}),
            ...(values['link-types'] ? { linkTypes: values['link-types'].split(',').map((s) => s.trim()) } : {}),
            ...(values.app ? { app: values.app } : {}),
          });
        } finally {
          process.off('SIGINT', onSignal);
        }
      }
      default:
        out(`unknown command "${command}"\n\n${USAGE}`);
        return EXIT.usage;
    }
  } catch (err) {
    out(`taskgraph: ${err instanceof Error ? err.message : String(err)}`);
    if (TaskGraphError.is(err, 'DECODE_FAILED')) return EXIT.unreadable;
    return TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND') || isConfigurationError(err) ? EXIT.usage : EXIT.failed;
  }
}

/** The value of `--name value` or `--name=value` in raw arguments (before they are parsed). */
function flagValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i]!.startsWith(`${name}=`)) return argv[i]!.slice(name.length + 1);
  }
  return undefined;
}
