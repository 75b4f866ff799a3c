/**
 * Shared test helpers: request meta, a plain grpc-js client that knows nothing
 * of TaskGraph, and a count of open sockets.
 */
import { Client, Metadata, credentials } from '@grpc/grpc-js';
import type { ServiceError, StatusObject } from '@grpc/grpc-js';
import type { RequestMeta } from '@taskgraph/api';

export function meta(overrides: Partial<RequestMeta> = {}): RequestMeta {
  return { job: 'job-1', from: 0, to: 1, epoch: 3, token: '7', requestId: 'req-1', ...overrides };
}

/** Metadata as a non-TaskGraph client writes it by hand. */
export function plainMetadata(values: Record<string, string>): Metadata {
  const md = new Metadata();
  for (const [k, v] of Object.entries(values)) md.set(k, v);
  return md;
}

export const goodHeaders = {
  'tg-job': 'job-1',
  'tg-from': '-1',
  'tg-to': '2',
  'tg-epoch': '4',
  'tg-token': '9',
  'tg-request-id': 'plain-1',
};

export interface PlainResult {
  readonly error: ServiceError | null;
  readonly value: Buffer | undefined;
  readonly trailers: Metadata | undefined;
}

/** A unary call with identity serializers from a bare grpc-js client. */
export function plainCall(client: Client, path: string, payload: Buffer, md: Metadata, timeoutMs = 10_000): Promise<PlainResult> {
  return new Promise((resolve) => {
    let trailers: Metadata | undefined;
    const call = client.makeUnaryRequest<Buffer, Buffer>(
      path,
      (b) => b,
      (b) => b,
      payload,
      md,
      { deadline: Date.now() + timeoutMs },
      (error, value) => {
        // The status event may come after the callback; wait a tick for it.
        setImmediate(() => resolve({ error, value, trailers: trailers ?? error?.metadata }));
      },
    );
    call.on('status', (status: StatusObject) => {
      trailers = status.metadata;
    });
  });
}

export function plainClient(address: string): Client {
  return new Client(address, credentials.createInsecure());
}

/** The TaskGraphError `p` rejects with; fails if it resolves or rejects with anything else. */
/** Counts of the kinds of handles that a transport opens (sockets, servers). */
export function socketHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length;
}

export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}
