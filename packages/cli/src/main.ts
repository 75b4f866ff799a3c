/**
 * The `taskgraph` command line on commander: one sub-command per verb, each with
 * only the flags that apply to it (any other is refused with a "did you mean"),
 * `--help` on every command, `taskgraph help <command>`, `--version`, and the exit
 * codes of exit-codes.ts. Every line printed goes through the secrets' redactor.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { TaskGraphError } from '@taskgraph/api';
import { MAX_NODES_PER_HOST } from '@taskgraph/core';
import { parseAppArgs, resolveConfig } from './config.js';
import { OUTPUT_FORMATS, runJobCommand, type OutputFormat } from './commands/job.js';
import { nodeCount, runNodeCommand } from './commands/node.js';
import { DEFAULT_GRACE_MS, JobRun } from './commands/run.js';
import { EXIT, isConfigurationError } from './exit-codes.js';
import { DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW_MS } from './restart-budget.js';
import { metricsPort, type MetricsEndpoint } from './observability.js';
import { runDashboard } from './commands/dashboard.js';
import { redactor } from './secrets.js';
import { terminalOf, type Terminal } from './terminal.js';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** The coordinator of `run` when none is configured: the embedded in-process store. */
export const DEFAULT_RUN_COORDINATOR = 'memory://';

const AFTER_HELP = `
Applications (<app>): a built-in (regression, mapreduce), a path to a module (./my-app.js) or a package
name; its default export is made with defineApp() or defineMasterWorkerApp() from @taskgraph/core.

Configuration: flags, then TASKGRAPH_COORDINATOR / TASKGRAPH_TRANSPORT / TASKGRAPH_SESSION_TTL_MS /
TASKGRAPH_LOG_LEVEL / TASKGRAPH_PLUGINS, then --config FILE (default ./taskgraph.config.json).
Coordinator URLs: memory://[name] (in-process; the default of run)  etcd://host:2379[,host2:2379][?namespace=tg]
  (namespace default "taskgraph")  consul://host:8500  k8s://?namespace=default
Transport URLs: local:// (in-process)  grpc://127.0.0.1:0[?advertise=HOST]  grpcs://...&ca=FILE&cert=FILE&key=FILE
Passwords in URLs are masked in all output and reach node processes through their environment.

Exit codes: 0 success, 1 the job or node failed, 2 bad usage or configuration, 3 the node lost its lease,
4 the job's records in the store are unreadable, 130 / 143 interrupted by SIGINT / SIGTERM.`;

/** One-line usage kept for the library's users; `taskgraph --help` prints the full help. */
export const USAGE = 'usage: taskgraph <run|node|job|help> [options]   (taskgraph help <command> for its flags)';

type Print = (line: string) => void;

interface Flags {
  readonly [name: string]: unknown;
}

export interface MainOptions {
  /** The terminal the output goes to (in-place redraw and colour); default: plain lines. */
  readonly terminal?: Terminal;
}

export async function main(argv: readonly string[], print: Print = (s) => process.stdout.write(`${s}\n`), options: MainOptions = {}): Promise<number> {
  // Until the configuration is read, mask what the raw flags and environment name.
  const fromFlags = redactor({ coordinator: flagValue(argv, '--coordinator'), transport: flagValue(argv, '--transport') });
  const fromEnv = redactor({ coordinator: process.env['TASKGRAPH_COORDINATOR'], transport: process.env['TASKGRAPH_TRANSPORT'] });
  let redact = (line: string) => fromEnv(fromFlags(line));
  const out: Print = (s) => print(redact(s));
  const terminal = options.terminal ?? terminalOf(undefined);
  let code: number = EXIT.ok;
  const configOf = (flags: Flags) => {
    const config = resolveConfig(kebab(flags));
    // The raw flags' and environment's secrets stay masked too (a lower source may hold another password).
    const early = redact;
    const fromConfig = redactor(config);
    redact = (line) => fromConfig(early(line));
    return config;
  };

  const program = new Command('taskgraph')
    .description('Run TaskGraph jobs and manage them in the coordination store.')
    .version(VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help for a command')
    .showSuggestionAfterError(true)
    .addHelpText('after', AFTER_HELP)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => out(s.replace(/\n$/, '')),
      writeErr: (s) => out(s.replace(/\n$/, '')),
    });
  program.helpCommand('help [command]', 'show help for a command');

  const run = storeFlags(nodeFlags(program.command('run')))
    .summary('run a job on this machine: every node, supervised, until it ends')
    .description(
      'Runs a job as separate OS processes on this machine (in this process for memory://, the default):\n' +
        'a task graph of N tasks (--tasks), or a master/worker application with a master and N workers (--workers);\n' +
        'a primary and B backups per task (hot standby), plus S cold standbys. A failed node is restarted after a\n' +
        `growing delay, at most --max-restarts (${DEFAULT_MAX_RESTARTS}) times per slot within --restart-window (${DEFAULT_RESTART_WINDOW_MS / 1000} s).\n` +
        `SIGINT/SIGTERM stop every node gracefully, killing those left after --grace (${DEFAULT_GRACE_MS / 1000} s). The last line says PASS or FAIL.`,
    )
    .argument('<app>', 'the application')
    .option('--tasks <n>', 'tasks of a task graph')
    .option('--workers <n>', 'workers of a master/worker application')
    .option('--backups <b>', 'hot backups per task (0)')
    .option('--standbys <s>', 'cold standbys (0)')
    .option('--job <name>', "the job's name (default: the app's name and a time stamp)")
    .option('--timeout <s>', 'give up after this many seconds')
    .option('--no-restart', 'do not restart failed nodes')
    .option('--max-restarts <n>', 'restarts per slot within the window')
    .option('--restart-window <s>', 'the restart window, seconds')
    .option('--grace <s>', 'seconds a stopped node has to leave before it is killed')
    .option('--nodes-per-process <k>', `run the nodes k to a process (1..${MAX_NODES_PER_HOST})`)
    .option('--keep', 'keep the job in the store when the run ends')
    .option('--log-dir <dir>', "where node processes' logs go (default: a temporary directory)")
    .option('--metrics-port <port>', "serve the in-process nodes' metrics, or give node process i the port + 1 + i (or TASKGRAPH_METRICS_PORT)")
    .option('--metrics-host <host>', 'the address the metrics listen on (default 127.0.0.1)')
    .action(async (app: string, flags: Flags) => {
      const config = configOf(flags);
      const metrics = metricsOf(flags);
      const tasks = int('tasks', flags['tasks']);
      const workers = int('workers', flags['workers']);
      if (tasks === undefined && workers === undefined) throw new TaskGraphError('INVALID_ARGUMENT', 'run needs --tasks N (or --workers N for a master/worker application)');
      const timeout = int('timeout', flags['timeout']);
      const maxRestarts = int('max-restarts', flags['maxRestarts']);
      const window = int('restart-window', flags['restartWindow']);
      const grace = int('grace', flags['grace']);
      if (window === 0) throw new TaskGraphError('INVALID_ARGUMENT', '--restart-window must be at least 1 second');
      const job = new JobRun({
        app,
        ...(tasks !== undefined ? { tasks } : {}),
        ...(workers !== undefined ? { workers } : {}),
        standbys: int('standbys', flags['standbys']) ?? 0,
        backups: int('backups', flags['backups']) ?? 0,
        ...(flags['nodesPerProcess'] !== undefined ? { nodesPerProcess: nodeCount(String(flags['nodesPerProcess']), 'nodes-per-process') } : {}),
        config: { ...config, coordinator: config.coordinator ?? DEFAULT_RUN_COORDINATOR },
        args: parseAppArgs(flags['arg'] as string[] | undefined),
        restart: flags['restart'] !== false,
        keepJob: flags['keep'] === true,
        print: out,
        terminal,
        ...(metrics ? { metrics } : {}),
        ...(typeof flags['job'] === 'string' ? { job: flags['job'] } : {}),
        ...(typeof flags['logDir'] === 'string' ? { logDir: flags['logDir'] } : {}),
        ...(timeout ? { timeoutMs: timeout * 1000 } : {}),
        ...(maxRestarts !== undefined ? { maxRestarts } : {}),
        ...(window !== undefined ? { restartWindowMs: window * 1000 } : {}),
        ...(grace !== undefined ? { graceMs: grace * 1000 } : {}),
      });
      const onSignal = (signal: NodeJS.Signals) => job.interrupt(signal);
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        code = (await job.run()).exitCode;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  void run;

  storeFlags(nodeFlags(program.command('node')))
    .summary('run one node of a job (or --count nodes in one process)')
    .description(
      'Runs one node of a job (one per machine or container), or N nodes sharing one store client, one watch per\n' +
        `prefix and one server (ids ID.0 .. ID.N-1; 1 <= N <= ${MAX_NODES_PER_HOST}). Needs a coordinator shared with the job's other nodes.`,
    )
    .argument('<app>', 'the application')
    .requiredOption('--job <name>', 'the job to join')
    .option('--node-id <id>', "this node's id (default: unique)")
    .option('--count <n>', 'nodes in this process (1)')
    .option('--metrics-port <port>', "serve this process's nodes' metrics and /healthz on this port (or TASKGRAPH_METRICS_PORT)")
    .option('--metrics-host <host>', 'the address the metrics listen on (default 127.0.0.1)')
    .action(async (app: string, flags: Flags) => {
      const config = configOf(flags);
      const metrics = metricsOf(flags);
      if (!config.coordinator) throw new TaskGraphError('INVALID_ARGUMENT', noCoordinator('node'));
      const count = nodeCount(flags['count'] === undefined ? undefined : String(flags['count']));
      code = await runNodeCommand({
        app,
        job: String(flags['job']),
        config,
        args: parseAppArgs(flags['arg'] as string[] | undefined),
        count,
        ...(typeof flags['nodeId'] === 'string' ? { nodeId: flags['nodeId'] } : {}),
        ...(metrics ? { metrics } : {}),
      });
    });

  storeFlags(program.command('dashboard'))
    .summary('serve a live web view of the jobs in the store')
    .description(
      "Serves a web page with the store's jobs and, for the one you pick, its task graph: each task's primary and\n" +
        'backups, incarnations, the epoch and failovers as they happen, updated live from the store. Runs until\n' +
        'SIGINT or SIGTERM. Listens on 127.0.0.1 unless --host says otherwise: the page shows what the store holds.',
    )
    .option('--host <host>', 'the address to listen on (default 127.0.0.1)')
    .option('--port <port>', 'the port (default 0: any free port)', '0')
    .action(async (flags: Flags) => {
      const config = configOf(flags);
      if (!config.coordinator) throw new TaskGraphError('INVALID_ARGUMENT', noCoordinator('dashboard'));
      const port = metricsPort(flags['port'], '--port') ?? 0;
      code = await runDashboard(config, typeof flags['host'] === 'string' ? flags['host'] : undefined, port, out);
    });

  const job = program.command('job').summary('create, list, show, watch and delete jobs in the store').description('Manages jobs in the coordination store.');
  job.helpCommand('help [command]', 'show help for a job command');
  const jobAction = (action: string, extra: (flags: Flags) => Partial<Parameters<typeof runJobCommand>[0]> = () => ({})) =>
    async (name: string | Flags, maybeFlags?: Flags) => {
      const [jobName, flags] = typeof name === 'string' ? [name, maybeFlags ?? {}] : ['', name];
      const config = configOf(flags);
      if (!config.coordinator) throw new TaskGraphError('INVALID_ARGUMENT', noCoordinator(`job ${action}`));
      const ac = new AbortController();
      const onSignal = () => ac.abort();
      process.once('SIGINT', onSignal);
      try {
        code = await runJobCommand({ action, job: jobName, config, out, signal: ac.signal, terminal, output: outputOf(flags), ...extra(flags) });
      } finally {
        process.off('SIGINT', onSignal);
      }
    };
  storeFlags(job.command('create'))
    .summary('create a job')
    .argument('<job>', "the job's name")
    .option('--tasks <n>', 'tasks of a task graph')
    .option('--workers <n>', 'workers of a master/worker application (with --app)')
    .option('--backups <b>', 'hot backups per task')
    .option('--link-types <a,b>', 'the link types (or --app)')
    .option('--app <app>', 'take the link types (and size) from an application')
    .addOption(outputOption())
    .action(
      jobAction('create', (flags) => {
        const tasks = int('tasks', flags['tasks']);
        const workers = int('workers', flags['workers']);
        const backups = int('backups', flags['backups']);
        return {
          ...(tasks !== undefined ? { tasks } : {}),
          ...(workers !== undefined ? { workers } : {}),
          ...(backups !== undefined ? { backups } : {}),
          ...(typeof flags['linkTypes'] === 'string' ? { linkTypes: flags['linkTypes'].split(',').map((s) => s.trim()) } : {}),
          ...(typeof flags['app'] === 'string' ? { app: flags['app'] } : {}),
        };
      }),
    );
  storeFlags(job.command('list')).summary('list the jobs in the store').addOption(outputOption()).action(jobAction('list'));
  storeFlags(job.command('status'))
    .summary("show a job's tasks, nodes and epoch")
    .argument('<job>', "the job's name")
    .addOption(outputOption())
    .action(jobAction('status'));
  storeFlags(job.command('watch'))
    .summary('follow a job: the table, then only what changes, until it ends')
    .argument('<job>', "the job's name")
    .addOption(outputOption())
    .action(jobAction('watch'));
  storeFlags(job.command('delete')).summary('delete a job from the store').argument('<job>', "the job's name").action(jobAction('delete'));

  for (const c of [program, job, ...program.commands, ...job.commands]) {
    c.exitOverride().showSuggestionAfterError(true);
    c.configureOutput({
      writeOut: (s) => out(s.replace(/\n$/, '')),
      writeErr: (s) => out(s.replace(/\n$/, '')),
      // One line: "error: unknown option '--tsks' (did you mean --tasks?)".
      outputError: (s, write) => write(s.replace(/\n\(Did you mean (.*)\?\)/, ' (did you mean $1?)')),
    });
  }

  if (argv.length === 0) {
    program.outputHelp();
    return EXIT.usage;
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and the version were printed; anything else is bad usage (commander printed it).
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help' ? helpCode(err, argv) : EXIT.usage;
    }
    out(`taskgraph: ${err instanceof Error ? err.message : String(err)}`);
    if (TaskGraphError.is(err, 'DECODE_FAILED')) return EXIT.unreadable;
    return TaskGraphError.is(err, 'CONFLICT', 'NOT_FOUND') || isConfigurationError(err) ? EXIT.usage : EXIT.failed;
  }
}

/** `taskgraph job` alone shows the job commands: asked-for help exits 0, help shown for a missing command 2. */
function helpCode(err: CommanderError, argv: readonly string[]): number {
  if (err.code === 'commander.version') return EXIT.ok;
  const asked = argv.some((a) => a === '-h' || a === '--help') || argv[0] === 'help' || argv.includes('help');
  return asked ? EXIT.ok : EXIT.usage;
}

/** `--metrics-port` (or TASKGRAPH_METRICS_PORT) and `--metrics-host`, when given. */
function metricsOf(flags: Flags): MetricsEndpoint | undefined {
  const fromFlag = flags['metricsPort'];
  const port = metricsPort(fromFlag ?? process.env['TASKGRAPH_METRICS_PORT'], fromFlag !== undefined ? '--metrics-port' : 'TASKGRAPH_METRICS_PORT');
  if (port === undefined) return undefined;
  return { port, ...(typeof flags['metricsHost'] === 'string' ? { host: flags['metricsHost'] } : {}) };
}

function noCoordinator(command: string): string {
  return (
    `no coordinator: ${command} needs the job's store: pass --coordinator URL (e.g. etcd://127.0.0.1:2379) or set TASKGRAPH_COORDINATOR ` +
    '(memory:// lives inside one process, so only `taskgraph run` defaults to it)'
  );
}

/** The flags of every command that talks to the store. */
function storeFlags(c: Command): Command {
  return c
    .option('--coordinator <url>', 'the coordination store (or TASKGRAPH_COORDINATOR)')
    .option('--config <file>', 'a JSON config file (default ./taskgraph.config.json)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error', 'silent']))
    .option('--plugin <module>', 'a module that registers more URL schemes (repeatable)', collect);
}

/** The flags of the commands that run nodes. */
function nodeFlags(c: Command): Command {
  return c
    .option('--transport <url>', 'the data plane (or TASKGRAPH_TRANSPORT)')
    .option('--ttl <ms>', 'the session TTL, ms')
    .option('--arg <key=value>', "an argument for the application (repeatable)", collect)
    .option('--tls-ca <file>', "the job CA (mutual TLS; makes the transport grpcs://)")
    .option('--tls-cert <file>', "this node's certificate")
    .option('--tls-key <file>', "this node's key")
    .option('--job-secret-file <file>', 'a file holding the job secret');
}

function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices([...OUTPUT_FORMATS]).default('table');
}

function outputOf(flags: Flags): OutputFormat {
  return (flags['output'] as OutputFormat | undefined) ?? 'table';
}

/** commander's camelCase option names as the config reads them (`tlsCa` -> `tls-ca`). */
function kebab(flags: Flags): Record<string, unknown> {
  return Object.fromEntries(Object.entries(flags).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v]));
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function int(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isInteger(n) || n < 0) {
    throw new TaskGraphError('INVALID_ARGUMENT', `--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** The value of `--name value` or `--name=value` in raw arguments (before they are parsed). */
function flagValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i]!.startsWith(`${name}=`)) return argv[i]!.slice(name.length + 1);
  }
  return undefined;
}
