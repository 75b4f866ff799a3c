/**
 * `taskgraph-emulator consul --port 8500 --host 127.0.0.1`: runs the emulator in
 * the foreground until SIGINT or SIGTERM. The package's command wires this in.
 */
import { startConsulEmulator } from './server.js';
import type { ConsulEmulatorOptions } from './server.js';

const USAGE =
  'usage: consul [--port <n>] [--host <address>] [--acl-token <token>] [--datacenter <dc>] [--key-rules strict|permissive]';

function parseArgs(argv: readonly string[]): ConsulEmulatorOptions {
  const options: { -readonly [K in keyof ConsulEmulatorOptions]: ConsulEmulatorOptions[K] } = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case '--port': {
        const v = value();
        const port = Number(v);
        if (!/^\d+$/.test(v) || port > 65535) throw new Error(`--port must be a number from 0 to 65535, got ${JSON.stringify(v)}`);
        options.port = port;
        break;
      }
      case '--host':
        options.host = value();
        break;
      case '--acl-token':
        options.aclToken = value();
        break;
      case '--datacenter':
        options.datacenter = value();
        break;
      case '--key-rules': {
        const v = value();
        if (v !== 'strict' && v !== 'permissive') throw new Error(`--key-rules must be strict or permissive, got ${JSON.stringify(v)}`);
        options.keyRules = v;
        break;
      }
      case '--help':
      case '-h':
        throw new Error(USAGE);
      default:
        throw new Error(`unknown argument ${JSON.stringify(arg)}\n${USAGE}`);
    }
  }
  return options;
}

/**
 * Parses the arguments, starts the emulator, prints its address, and resolves
 * once a SIGINT or SIGTERM has stopped it.
 */
export async function runConsulEmulatorCommand(argv: string[]): Promise<void> {
  const options = parseArgs(argv);
  const emulator = await startConsulEmulator({ port: 8500, ...options });
  process.stdout.write(`Consul emulator listening on ${emulator.url}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await emulator.close();
  process.stdout.write('Consul emulator stopped\n');
}
