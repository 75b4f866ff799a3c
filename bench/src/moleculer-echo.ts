/**
 * The peer framework: Moleculer (https://moleculer.services) over its built-in TCP
 * transporter, no broker in between, with two ServiceBrokers in this process (as the
 * framework's two nodes and the raw grpc-js client and server are): broker "a" serves
 * an `echo` action, broker "b" calls it with `broker.call`. Discovery is off (each
 * node is given the other's address), and so are logging, metrics and tracing. The
 * payload travels as a string field of the params, since Moleculer's default JSON
 * serializer has no bytes type (a Buffer would become a JSON array of numbers): an
 * ASCII string of N characters is N bytes on the wire, as a bytes payload would be.
 */
import { InternalError } from '@taskgraph/api';
import { ServiceBroker } from 'moleculer';
import type { Context } from 'moleculer';
import { freePort } from '@taskgraph/testkit';

export interface MoleculerEcho {
  call(payload: string): Promise<string>;
  close(): Promise<void>;
}

interface EchoParams {
  readonly data: string;
}

function broker(nodeID: string, port: number, peer: string): ServiceBroker {
  return new ServiceBroker({
    nodeID,
    namespace: `bench-${process.pid}`,
    logger: false,
    metrics: false,
    tracing: false,
    transporter: {
      type: 'TCP',
      // maxPacketSize: Moleculer's TCP transporter drops the connection on a packet over
      // 1 MiB by default, and the 1 MiB case's packet (payload plus its JSON envelope) is
      // over it: its calls were rejected (RequestRejectedError) and the run failed.
      options: { udpDiscovery: false, port, urls: [peer], maxPacketSize: 32 * 1024 * 1024 },
    },
  });
}

/** Starts both brokers and resolves once "b" sees "a"'s echo action. */
export async function startMoleculerEcho(): Promise<MoleculerEcho> {
  const [portA, portB] = [await freePort(), await freePort()];
  const a = broker('a', portA, `127.0.0.1:${portB}/b`);
  const b = broker('b', portB, `127.0.0.1:${portA}/a`);
  a.createService({
    name: 'echo',
    actions: {
      echo: (ctx: Context<EchoParams>) => ctx.params.data,
    },
  });
  try {
    await Promise.all([a.start(), b.start()]);
    await b.waitForServices(['echo'], 30_000);
  } catch (err) {
    await Promise.allSettled([a.stop(), b.stop()]);
    throw new InternalError(`the Moleculer peer did not start: ${(err as Error).message}`, { cause: err });
  }
  return {
    call: async (data) => {
      const out: unknown = await b.call('echo.echo', { data }, { nodeID: 'a' });
      if (typeof out !== 'string') throw new InternalError(`the Moleculer echo answered ${typeof out}`);
      return out;
    },
    close: async () => {
      await Promise.allSettled([b.stop(), a.stop()]);
    },
  };
}
