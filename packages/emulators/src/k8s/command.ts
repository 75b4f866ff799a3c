/**
 * `taskgraph-emulator k8s ...`: runs the Kubernetes API emulator in the foreground
 * until SIGINT or SIGTERM. The package's command dispatches here.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startK8sEmulator, type K8sEmulatorOptions } from './emulator.js';

const USAGE = `usage: taskgraph-emulator k8s [--port <n>] [--host <addr>] [--kubeconfig <path>] [--namespace <name>]... [--token <t>] [--tls-name <name>]... [--plain-http] [--watch-retention <n>] [--bookmark-interval-ms <n>]`;

class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** `--help`: not an error, the usage is the answer. */
class HelpRequested extends Error {
  override readonly name = 'HelpRequested';
}

interface Parsed {
  options: K8sEmulatorOptions;
  kubeconfig: string | undefined;
  contextNamespace: string;
}

function parseArgs(argv: readonly string[]): Parsed {
  const options: { -readonly [K in keyof K8sEmulatorOptions]: K8sEmulatorOptions[K] } = {};
  const namespaces: string[] = [];
  const tlsNames: string[] = [];
  let kubeconfig: string | undefined;
  const number = (flag: string, value: string | undefined, min: number) => {
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n) || n < min) throw new UsageError(`${flag} needs an integer >= ${min}, got ${JSON.stringify(value)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = arg.startsWith('--') && eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = () => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--port':
        options.port = number(flag, value(), 0);
        break;
      case '--host':
        options.host = value();
        break;
      case '--kubeconfig':
        kubeconfig = value();
        break;
      case '--namespace':
        namespaces.push(value());
        break;
      case '--token':
        options.token = value();
        break;
      case '--tls-name':
        tlsNames.push(value());
        break;
      case '--plain-http':
        if (inline !== undefined) throw new UsageError(`--plain-http takes no value\n${USAGE}`);
        options.tls = false;
        break;
      case '--watch-retention':
        options.watchRetention = number(flag, value(), 0);
        break;
      case '--bookmark-interval-ms':
        options.bookmarkIntervalMs = number(flag, value(), 1);
        break;
      case '-h':
      case '--help':
        throw new HelpRequested(USAGE);
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(arg)}\n${USAGE}`);
    }
  }
  if (tlsNames.length > 0) options.tlsNames = tlsNames;
  if (options.tls === false && tlsNames.length > 0) throw new UsageError(`--tls-name and --plain-http exclude each other\n${USAGE}`);
  if (namespaces.length > 0) options.namespaces = [...new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease', ...namespaces])];
  return { options, kubeconfig, contextNamespace: namespaces[0] ?? 'default' };
}

/**
 * Parses `--port`, `--host`, `--kubeconfig <path>` (written for the emulator, with its
 * CA at `<path>.ca.crt`; without the flag both go to a temporary directory removed at
 * the end), `--namespace` (repeatable; the first is the kubeconfig's), `--token`,
 * `--tls-name` (repeatable: more names for the serving certificate), `--plain-http`,
 * `--watch-retention` and `--bookmark-interval-ms`, starts the emulator, prints its
 * address and where the kubeconfig and CA are, and resolves after SIGINT or SIGTERM
 * has stopped it. Bad arguments reject with an error whose message says what is wrong
 * and shows the usage.
 */
export async function runK8sEmulatorCommand(argv: string[]): Promise<void> {
  let parsed: Parsed;
  try {
    parsed = parseArgs(argv);
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(`${err.message}\n`);
      return;
    }
    throw err;
  }
  const emulator = await startK8sEmulator(parsed.options);
  // Without a kubeconfig nobody could use the emulator: it needs the token and, over HTTPS, the CA.
  const scratch = parsed.kubeconfig === undefined ? await mkdtemp(join(tmpdir(), 'taskgraph-emulator-k8s-')) : undefined;
  const written = await emulator.writeKubeconfig(parsed.kubeconfig ?? join(scratch ?? '', 'kubeconfig'), parsed.contextNamespace);
  process.stdout.write(`Kubernetes API emulator listening on ${emulator.url}\n`);
  process.stdout.write(`kubeconfig: ${written.kubeconfig} (export KUBECONFIG=${written.kubeconfig})${scratch === undefined ? '' : ', removed on exit'}\n`);
  if (written.ca !== undefined) process.stdout.write(`CA certificate: ${written.ca}\n`);
  else process.stdout.write('plain HTTP: the kubeconfig sets insecure-skip-tls-verify, the token travels unencrypted\n');
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await emulator.close();
  if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  process.stdout.write('Kubernetes API emulator stopped\n');
}
