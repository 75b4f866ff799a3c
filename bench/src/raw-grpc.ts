/**
 * The baseline: bare @grpc/grpc-js unary calls on loopback, generic methods whose
 * (de)serializers pass Buffers through: `Echo` answers with the request's own
 * bytes (so the answer has the request's size), `Ack` with an empty message (as
 * a backup answers an update). No metadata, no deadline, no checks: the floor
 * the framework's data plane and replication are compared with.
 */
import { Client, Server, ServerCredentials, credentials } from '@grpc/grpc-js';
import type { ChannelOptions, ServiceDefinition, ServiceError, UntypedServiceImplementation, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { InternalError, UnavailableError } from '@taskgraph/api';

const PATH = '/bench.Raw/Echo';
const ACK_PATH = '/bench.Raw/Ack';
const EMPTY = Buffer.alloc(0);

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
  Ack: {
    path: ACK_PATH,
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
  /** One unary call with `payload`; resolves with the answer (the same bytes). */
  call(payload: Buffer): Promise<Buffer>;
  /** One unary call with `payload`, answered with an empty message. */
  ack(payload: Buffer): Promise<Buffer>;
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
    Ack: (_call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => callback(null, EMPTY),
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

  const unary = (path: string, payload: Buffer): Promise<Buffer> =>
    new Promise<Buffer>((resolve, reject) => {
      client.makeUnaryRequest<Buffer, Buffer>(path, identity, identity, payload, (err: ServiceError | null, value?: Buffer) => {
        if (err) reject(new InternalError(`a raw gRPC call to ${address} failed: ${err.message}`, { cause: err }));
        else if (value === undefined) reject(new InternalError(`a raw gRPC call to ${address} ended without an answer`));
        else resolve(value);
      });
    });

  return {
    address,
    port,
    call: (payload) => unary(PATH, payload),
    ack: (payload) => unary(ACK_PATH, payload),
    close: async () => {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
