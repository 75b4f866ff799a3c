#!/usr/bin/env node
/**
 * `taskgraph-emulator consul|k8s [--port N] [--host H] ...`: runs one emulator in
 * the foreground for local development, until SIGINT or SIGTERM.
 */
import { runConsulEmulatorCommand } from './consul/index.js';
import { runK8sEmulatorCommand } from './k8s/index.js';

const USAGE = `usage: taskgraph-emulator consul [--port 8500] [--host 127.0.0.1] [--acl-token T] [--datacenter dc1] [--key-rules strict|permissive]
       taskgraph-emulator k8s [--port 6443] [--host 127.0.0.1] [--kubeconfig PATH] [--namespace NS]... [--token T] [--tls-name NAME]... [--plain-http]

The k8s emulator serves HTTPS with a CA made at start; it prints where the kubeconfig
and the CA certificate (<kubeconfig>.ca.crt) are. --plain-http serves plain HTTP.`;

async function main(argv: string[]): Promise<number> {
  const [which, ...rest] = argv;
  switch (which) {
    case 'consul':
      await runConsulEmulatorCommand(rest);
      return 0;
    case 'k8s':
    case 'kubernetes':
      await runK8sEmulatorCommand(rest);
      return 0;
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      process.stderr.write(`${which ? `unknown emulator "${which}"\n` : ''}${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`taskgraph-emulator: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
