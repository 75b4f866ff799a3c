/**
 * Free loopback ports: the kernel picks one when we bind port 0. Another process
 * can take it between our close and the server's bind, so callers that start a
 * server on it retry on "address already in use".
 */
import { createServer } from 'node:net';
import { UnavailableError } from '@taskgraph/api';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', (err) => reject(new UnavailableError(`no free port on ${host}: ${err.message}`, { cause: err })));
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new UnavailableError(`no free port on ${host}`))));
    });
  });
}

/** `count` distinct free ports. */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort(host));
  return [...ports];
}
