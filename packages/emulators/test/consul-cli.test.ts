import { describe, expect, it, vi } from 'vitest';
import { eventually, freePort } from '@taskgraph/testkit';
import { runConsulEmulatorCommand } from '../src/index.js';

describe('runConsulEmulatorCommand', () => {
  it('serves on the port and host given, prints its address, and stops on SIGTERM', async () => {
    const port = await freePort();
    const printed: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      printed.push(String(chunk));
      return true;
    });
    try {
      const running = runConsulEmulatorCommand(['--port', String(port), '--host=127.0.0.1']);
      const url = `http://127.0.0.1:${port}`;
      await eventually('the emulator answers', async () => (await fetch(`${url}/v1/status/leader`)).ok);
      expect(printed.join('')).toContain(`Consul emulator listening on ${url}`);
      process.emit('SIGTERM');
      await running;
      await expect(fetch(`${url}/v1/status/leader`)).rejects.toThrow();
      expect(process.listenerCount('SIGTERM')).toBe(0);
    } finally {
      write.mockRestore();
    }
  });

  it('refuses unknown arguments and bad values with a usage line', async () => {
    await expect(runConsulEmulatorCommand(['--prot', '1'])).rejects.toThrow(/unknown argument "--prot"[\s\S]*usage: consul/);
    await expect(runConsulEmulatorCommand(['--port', 'abc'])).rejects.toThrow(/--port must be a number/);
    await expect(runConsulEmulatorCommand(['--key-rules', 'loose'])).rejects.toThrow(/strict or permissive/);
    await expect(runConsulEmulatorCommand(['--host'])).rejects.toThrow(/--host needs a value/);
  });
});
