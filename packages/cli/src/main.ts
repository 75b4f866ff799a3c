/**
 * The `taskgraph` command line: argument parsing and dispatch.
 */
import { parseArgs } from 'node:util';
import { TaskGraphError } from '@taskgraph/api';
import { parseAppArgs, resolveConfig } from './config.js';
import { runJobCommand } from './commands/job.js';
import { EXIT, runNodeCommand } from './commands/node.js';
import { JobRun } from './commands/run.js';

export const USAGE = `taskgraph: run TaskGraph jobs and manage them in the coordination store

usage:
  taskgraph run <app> --tasks N [--backups B] [--standbys S] [--coordinator URL] [--transport URL]
                [--job NAME] [--ttl MS] [--arg key=value ...] [--timeout S] [--no-restart] [--keep]
      runs a job as separate OS processes on this machine (in this process for memory://):
      a primary and B backups per task (hot standby), plus S cold standbys
  taskgraph node <app> --job NAME [--coordinator URL] [--transport URL] [--node-id ID] [--ttl MS] [--arg key=value ...]
      runs one node of a job (one per machine or container)
  taskgraph job create <job> --tasks N [--backups B] (--link-types A,B | --app <app>) [--coordinator URL]
  taskgraph job status <job> [--json] | watch <job> [--json] | delete <job>

<app>: a built-in (regression), a path to a module (./my-app.js) or a package name;
the module's default export is an application made with defineApp() from @taskgraph/core.

configuration: flags, then TASKGRAPH_COORDINATOR / TASKGRAPH_TRANSPORT / TASKGRAPH_SESSION_TTL_MS /
TASKGRAPH_LOG_LEVEL / TASKGRAPH_PLUGINS (comma-separated), then --config FILE (default ./taskgraph.config.json):
  { "coordinator": "etcd://127.0.0.1:2379", "transport": "grpc://0.0.0.0:0", "sessionTtlMs": 5000, "logLevel": "info",
    "plugins": ["./my-backend-plugin.mjs"] }
URLs: memory://[name]  etcd://host:2379[,host2:2379]?namespace=tg  consul://host:8500  k8s://?namespace=default
      local://  grpc://0.0.0.0:0?advertise=HOST  grpcs://0.0.0.0:0?advertise=HOST&ca=FILE&cert=FILE&key=FILE
      each from its package (@taskgraph/coord-etcd, @taskgraph/transport-grpc, ...), installed beside this one;
      --plugin MODULE (repeatable) loads a module whose default export registers more schemes

data-plane security (see the README's Security section): --tls-ca FILE --tls-cert FILE --tls-key FILE
  (mutual TLS with a job CA: makes the transport grpcs://) and --job-secret-file FILE, or in the config file
  { "tls": { "ca": ..., "cert": ..., "key": ... }, "jobSecretFile": ... }, or TASKGRAPH_TLS_CA / TASKGRAPH_TLS_CERT /
  TASKGRAPH_TLS_KEY / TASKGRAPH_JOB_SECRET_FILE / TASKGRAPH_JOB_SECRET, read by the transport

exit codes: 0 success, 1 the job or node failed, 2 bad usage or configuration, 3 the node lost its lease`;

export async function main(argv: readonly string[], out: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        tasks: { type: 'string' },
        standbys: { type: 'string' },
        backups: { type: 'string' },
        coordinator: { type: 'string' },
        transport: { type: 'string' },
        job: { type: 'string' },
        ttl: { type: 'string' },
        arg: { type: 'string', multiple: true },
        timeout: { type: 'string' },
        'no-restart': { type: 'boolean' },
        keep: { type: 'boolean' },
        'node-id': { type: 'string' },
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
    const args = parseAppArgs(values.arg);
    switch (command) {
      case 'run': {
        if (!target) throw new TaskGraphError('INVALID_ARGUMENT', 'run needs an application: taskgraph run regression --tasks 15 ...');
        const tasks = int('tasks', values.tasks);
        if (tasks === undefined) throw new TaskGraphError('INVALID_ARGUMENT', 'run needs --tasks N');
        const timeout = int('timeout', values.timeout);
        const run = new JobRun({
          app: target,
          tasks,
          standbys: int('standbys', values.standbys) ?? 0,
          backups: int('backups', values.backups) ?? 0,
          config,
          args,
          restart: !values['no-restart'],
          keepJob: values.keep ?? false,
          print: out,
          ...(values.job ? { job: values.job } : {}),
          ...(values['log-dir'] ? { logDir: values['log-dir'] } : {}),
          ...(timeout ? { timeoutMs: timeout * 1000 } : {}),
        });
        const result = await run.run();
        return result.ok ? EXIT.ok : EXIT.failed;
      }
      case 'node': {
        if (!target) throw new TaskGraphError('INVALID_ARGUMENT', 'node needs an application: taskgraph node regression --job NAME ...');
        if (!values.job) throw new TaskGraphError('INVALID_ARGUMENT', 'node needs --job NAME');
        return await runNodeCommand({ app: target, job: values.job, config, args, ...(values['node-id'] ? { nodeId: values['node-id'] } : {}) });
      }
      case 'job': {
        if (!target || !extra) throw new TaskGraphError('INVALID_ARGUMENT', 'usage: taskgraph job create|status|watch|delete <job>');
        const ac = new AbortController();
        const onSignal = () => ac.abort();
        process.once('SIGINT', onSignal);
        try {
          const tasks = int('tasks', values.tasks);
          const backups = int('backups', values.backups);
          return await runJobCommand({
            action: target,
            job: extra,
            config,
            out,
            signal: ac.signal,
            json: values.json ?? false,
            ...(tasks !== undefined ? { tasks } : {}),
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
    if (TaskGraphError.is(err, 'INVALID_ARGUMENT', 'BACKEND_NOT_INSTALLED', 'CONFLICT', 'NOT_FOUND')) {
      out(`taskgraph: ${err.message}`);
      return EXIT.usage;
    }
    out(`taskgraph: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT.failed;
  }
}
