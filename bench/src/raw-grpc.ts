/**
 * The baseline: bare @grpc/grpc-js unary calls on loopback, one generic method
 * whose (de)serializers pass Buffers through, answering with the request's own
 * bytes (so the answer has the request's size). No metadata, no deadline, no
 * checks: the floor the framework's data plane is compared with.
 */
import { Client, Server, ServerCredentials, credentials } from '@grpc/grpc-js';
import type { ChannelOptions, ServiceDefinition, ServiceError, UntypedServiceImplementation, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { InternalError, UnavailableError } from '@taskgraph/api';

const PATH = '/bench.Raw/Echo';

const identity = (b: Buffer): Buffer => b;

const definition: ServiceDefinition = {
  Echo: {
    path: PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export interface RawGrpc {
  /** "127.0.0.1:port" of the raw server. */
  readonly address: string;
  readonly port: number;
  /** One unary call with `payload`; resolves with the answer. */
  call(payload: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * Starts the raw server and its client. `maxMessageBytes` is applied to both ends,
 * as the gRPC transport does; the client keeps its own subchannel pool, as the
 * transport's channels do.
 */
export async function startRawGrpc(maxMessageBytes: number): Promise<RawGrpc> {
  const limits: ChannelOptions = {
    'grpc.max_send_message_length': maxMessageBytes,
    'grpc.max_receive_message_length': maxMessageBytes,
  };
  const server = new Server(limits);
  const implementation: UntypedServiceImplementation = {
    Echo: (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => callback(null, call.request),
  };
  server.addService(definition, implementation);
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
    });
  } catch (err) {
    server.forceShutdown();
    throw new UnavailableError(`the raw gRPC server cannot listen on 127.0.0.1: ${(err as Error).message}`, { cause: err });
  }
  const address = `127.0.0.1:${port}`;
  const client = new Client(address, credentials.createInsecure(), { ...limits, 'grpc.use_local_subchannel_pool': 1 });

  return {
    address,
    port,
    call: (payload) =>
      new Promise<Buffer>((resolve, reject) => {
        client.makeUnaryRequest<Buffer, Buffer>(PATH, identity, identity, payload, (err: ServiceError | null, value?: Buffer) => {
          if (err) reject(new InternalError(`a raw gRPC call to ${address} failed: ${err.message}`, { cause: err }));
          else if (value === undefined) reject(new InternalError(`a raw gRPC call to ${address} ended without an answer`));
          else resolve(value);
        });
      }),
    close: async () => {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
