import { connect, createServer, type Server, type Socket } from 'node:net';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { eventually, startTcpProxy, type TcpProxy } from '@taskgraph/testkit';

/** A client whose received bytes the test can read. */
async function client(port: number): Promise<{ socket: Socket; received: () => string; closed: () => boolean }> {
  const socket = connect({ host: '127.0.0.1', port });
  let text = '';
  let closed = false;
  socket.setEncoding('utf8');
  socket.on('data', (c: string) => (text += c));
  socket.on('error', () => undefined);
  socket.on('close', () => (closed = true));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, received: () => text, closed: () => closed };
}

describe('startTcpProxy', () => {
  let echo: Server;
  let echoPort: number;
  let proxy: TcpProxy;

  beforeAll(async () => {
    echo = createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((resolve) => echo.listen({ host: '127.0.0.1', port: 0 }, () => resolve()));
    echoPort = (echo.address() as { port: number }).port;
    proxy = await startTcpProxy({ target: `127.0.0.1:${echoPort}` });
  });

  afterAll(async () => {
    await proxy.close();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  it('forwards both ways', async () => {
    const c = await client(proxy.port);
    c.socket.write('ping');
    await eventually('the echo comes back', () => c.received() === 'ping');
    expect(proxy.connections).toBe(1);
    c.socket.destroy();
    await eventually('the proxy forgets the connection', () => proxy.connections === 0);
  });

  it('holds every byte while cut and delivers them after heal', async () => {
    const c = await client(proxy.port);
    c.socket.write('a');
    await eventually('the first echo', () => c.received() === 'a');
    proxy.cut();
    expect(proxy.isCut).toBe(true);
    c.socket.write('b');
    // New connections are accepted but reach nothing while cut.
    const late = await client(proxy.port);
    late.socket.write('c');
    // A deliberate negative check: for a while, nothing may get through the cut.
    await new Promise((r) => setTimeout(r, 300));
    expect(c.received()).toBe('a');
    expect(late.received()).toBe('');
    expect(c.closed() || late.closed()).toBe(false);
    proxy.heal();
    await eventually('the held bytes arrive', () => c.received() === 'ab' && late.received() === 'c');
    c.socket.destroy();
    late.socket.destroy();
  });

  it('cutReplies lets requests through and holds the answers until heal', async () => {
    let arrived = '';
    const server = createServer((s) => {
      s.setEncoding('utf8');
      s.on('error', () => undefined);
      s.on('data', (chunk: string) => {
        arrived += chunk;
        s.write(chunk.toUpperCase());
      });
    });
    await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, () => resolve()));
    const p = await startTcpProxy({ target: (server.address() as { port: number }).port });
    try {
      const c = await client(p.port);
      c.socket.write('a');
      await eventually('the first answer', () => c.received() === 'A');
      p.cutReplies();
      c.socket.write('b');
      await eventually('the request reaches the server', () => arrived === 'ab');
      // A deliberate negative check: for a while, the answer may not get through.
      await new Promise((r) => setTimeout(r, 300));
      expect(c.received()).toBe('A');
      p.heal();
      await eventually('the held answer arrives', () => c.received() === 'AB');
      c.socket.destroy();
    } finally {
      await p.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('reset drops every connection', async () => {
    const c = await client(proxy.port);
    c.socket.write('x');
    await eventually('the echo', () => c.received() === 'x');
    proxy.reset();
    await eventually('the client sees the drop', () => c.closed());
    expect(proxy.connections).toBe(0);
    const again = await client(proxy.port);
    again.socket.write('y');
    await eventually('a new connection works', () => again.received() === 'y');
    again.socket.destroy();
  });

  it('forwards to a bare port and rejects a malformed target', async () => {
    const p = await startTcpProxy({ target: echoPort });
    try {
      const c = await client(p.port);
      c.socket.write('z');
      await eventually('the echo', () => c.received() === 'z');
      c.socket.destroy();
    } finally {
      await p.close();
    }
    await expect(startTcpProxy({ target: 'nohostport' })).rejects.toThrow(/host:port/);
  });
});
