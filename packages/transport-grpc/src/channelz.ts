/**
 * Connection counts read from grpc-js's channelz registry. Channelz is grpc-js's
 * public introspection service; its handlers answer synchronously from the
 * in-process registry, so we call them directly instead of serving them on a
 * port. This is how tests and the benchmark count TCP connections per peer
 * without reaching into grpc-js's private fields.
 */
import { getChannelzHandlers } from '@grpc/grpc-js';
import type { Client, Server } from '@grpc/grpc-js';
import { getClientChannel } from '@grpc/grpc-js';

type Handlers = ReturnType<typeof getChannelzHandlers>;
type HandlerName = 'GetServerSockets' | 'GetSocket' | 'GetChannel' | 'GetSubchannel';
type RequestOf<K extends HandlerName> = Parameters<Handlers[K]>[0]['request'];
type ResponseOf<K extends HandlerName> = NonNullable<Parameters<Parameters<Handlers[K]>[1]>[1]>;

let handlers: Handlers | undefined;

function ask<K extends HandlerName>(name: K, request: RequestOf<K>): ResponseOf<K> | undefined {
  handlers ??= getChannelzHandlers();
  const handler = handlers[name] as unknown as (
    call: { request: RequestOf<K> },
    callback: (err: unknown, value?: ResponseOf<K> | null) => void,
  ) => void;
  let out: ResponseOf<K> | undefined;
  try {
    handler({ request }, (err, value) => {
      if (err === null && value !== null && value !== undefined) out = value;
    });
  } catch {
    // grpc-js throws describing a session whose socket is already gone: it is closed.
    return undefined;
  }
  return out;
}

/** One TCP connection as channelz sees it. */
export interface ConnectionInfo {
  /** Channelz's socket id: stable for the connection's life, never reused. */
  readonly id: string;
  /** The remote end, "host:port", when known. */
  readonly remote: string | undefined;
  /** Keepalive pings this end sent on the connection. */
  readonly keepalivesSent: number;
  readonly streamsStarted: number;
}

/** The socket's description, or undefined when it is closed or gone. */
function describeSocket(id: string): ConnectionInfo | undefined {
  const socket = ask('GetSocket', { socket_id: id, summary: false } as RequestOf<'GetSocket'>)?.socket;
  if (socket === undefined || socket === null) return undefined;
  const tcp = socket.remote?.tcpip_address;
  let remote: string | undefined;
  if (tcp?.ip_address) {
    const ip = Buffer.from(tcp.ip_address as Uint8Array);
    const host = ip.length === 4 ? [...ip].join('.') : ipv6Text(ip);
    remote = host.includes(':') ? `[${host}]:${String(tcp.port)}` : `${host}:${String(tcp.port)}`;
  }
  return {
    id,
    remote,
    keepalivesSent: Number(socket.data?.keep_alives_sent ?? 0),
    streamsStarted: Number(socket.data?.streams_started ?? 0),
  };
}

function ipv6Text(ip: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i + 1 < ip.length; i += 2) groups.push(ip.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/** The TCP connections a server has open now (accepted, not yet closed). */
export function serverConnections(server: Server): ConnectionInfo[] {
  const ref = server.getChannelzRef();
  const out: ConnectionInfo[] = [];
  let start = 0;
  for (;;) {
    const page = ask('GetServerSockets', {
      server_id: String(ref.id),
      start_socket_id: String(start),
      max_results: '100',
    } as RequestOf<'GetServerSockets'>);
    if (page === undefined) return out;
    for (const r of page.socket_ref ?? []) {
      const id = String(r.socket_id);
      const info = describeSocket(id);
      if (info !== undefined) out.push(info);
      start = Number(id) + 1;
    }
    if (page.end !== false || (page.socket_ref ?? []).length === 0) return out;
  }
}

/** The TCP connections a client's channel has open now. */
export function clientConnections(client: Client): ConnectionInfo[] {
  const ref = getClientChannel(client).getChannelzRef();
  const channel = ask('GetChannel', { channel_id: String(ref.id) } as RequestOf<'GetChannel'>)?.channel;
  const out: ConnectionInfo[] = [];
  for (const sub of channel?.subchannel_ref ?? []) {
    const subchannel = ask('GetSubchannel', { subchannel_id: String(sub.subchannel_id) } as RequestOf<'GetSubchannel'>)?.subchannel;
    for (const s of subchannel?.socket_ref ?? []) {
      const info = describeSocket(String(s.socket_id));
      if (info !== undefined) out.push(info);
    }
  }
  return out;
}
