/**
 * The frames of the multiplexed data plane. Calls between TaskGraph nodes ride one
 * bidirectional gRPC stream per peer; each stream message carries one or more frames,
 * each tagged with the call's request id, so many calls share one HTTP/2 stream and
 * one write. A payload larger than what fits in a message continues in DATA frames:
 * no stream message is ever larger than STREAM_MESSAGE_BYTES, whatever the payload,
 * so a peer with a smaller size limit answers a too large call with a typed error
 * instead of losing the whole stream to grpc-js's RESOURCE_EXHAUSTED.
 *
 * Client to server:
 *   CALL   [1][id u32][timeoutMs u32][method u8-len][envelope u16-len][auth u8-len][total u32][chunk u32][bytes]
 *   CANCEL [2][id u32]
 *   DATA   [3][id u32][chunk u32][bytes]
 * Server to client:
 *   OK     [1][id u32][proof u8-len][total u32][chunk u32][bytes]
 *   ERROR  [2][id u32][grpc code u8][proof u8-len][details u16-len][error JSON u32-len]
 *   DATA   [3][id u32][chunk u32][bytes]
 * Text fields are length-prefixed UTF-8; the envelope is the `tg-env` header's text.
 */
import { DecodeFailedError } from '@taskgraph/api';

export const FrameKind = { call: 1, cancel: 2, data: 3, ok: 1, error: 2 } as const;

/** The largest stream message: frames are packed up to it and payloads split across it. */
export const STREAM_MESSAGE_BYTES = 256 * 1024;
/**
 * What the gRPC size limits add to `maxMessageBytes` so that stream messages always fit
 * (and unary calls are then held to `maxMessageBytes` by the transport's own checks).
 */
export const STREAM_LIMIT_SLACK = STREAM_MESSAGE_BYTES + 64 * 1024;

const MAX_U8_TEXT = 255;
const MAX_U16_TEXT = 65_535;

export interface CallFrame {
  readonly kind: typeof FrameKind.call;
  readonly id: number;
  readonly timeoutMs: number;
  readonly method: string;
  readonly envelope: string;
  readonly auth: string;
  readonly total: number;
  readonly chunk: Uint8Array;
}

export interface CancelFrame {
  readonly kind: typeof FrameKind.cancel;
  readonly id: number;
}

export interface DataFrame {
  readonly kind: typeof FrameKind.data;
  readonly id: number;
  readonly chunk: Uint8Array;
}

export interface OkFrame {
  readonly kind: typeof FrameKind.ok;
  readonly id: number;
  readonly proof: string;
  readonly total: number;
  readonly chunk: Uint8Array;
}

export interface ErrorFrame {
  readonly kind: typeof FrameKind.error;
  readonly id: number;
  readonly grpcCode: number;
  readonly proof: string;
  readonly details: string;
  readonly json: Uint8Array;
}

export type RequestFrame = CallFrame | CancelFrame | DataFrame;
export type ResponseFrame = OkFrame | ErrorFrame | DataFrame;

/** A frame's header, and the payload that follows it (written in chunks by the writer). */
export interface OutFrame {
  readonly id: number;
  /** The header of the frame's first chunk: everything up to, not including, its chunk length. */
  readonly head: Buffer;
  readonly payload: Uint8Array;
  /** How much of the payload has been written. */
  offset: number;
  /** False for frames without a payload (CANCEL, ERROR): `head` is the whole frame. */
  readonly chunked: boolean;
}

function textBytes(text: string, max: number, what: string): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length > max) throw new DecodeFailedError(`the ${what} of a stream frame is ${b.length} bytes; the limit is ${max}`);
  return b;
}

export function callFrame(id: number, timeoutMs: number, method: string, envelope: string, auth: string, payload: Uint8Array): OutFrame {
  const m = textBytes(method, MAX_U8_TEXT, 'method');
  const e = textBytes(envelope, MAX_U16_TEXT, 'envelope');
  const a = textBytes(auth, MAX_U8_TEXT, 'authenticator');
  const head = Buffer.allocUnsafe(1 + 4 + 4 + 1 + m.length + 2 + e.length + 1 + a.length + 4);
  let o = head.writeUInt8(FrameKind.call, 0);
  o = head.writeUInt32BE(id, o);
  o = head.writeUInt32BE(Math.min(Math.ceil(timeoutMs), 0xffffffff), o);
  o = head.writeUInt8(m.length, o);
  o += m.copy(head, o);
  o = head.writeUInt16BE(e.length, o);
  o += e.copy(head, o);
  o = head.writeUInt8(a.length, o);
  o += a.copy(head, o);
  head.writeUInt32BE(payload.byteLength, o);
  return { id, head, payload, offset: 0, chunked: true };
}

export function cancelFrame(id: number): OutFrame {
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(FrameKind.cancel, 0);
  head.writeUInt32BE(id, 1);
  return { id, head, payload: EMPTY, offset: 0, chunked: false };
}

export function okFrame(id: number, proof: string, payload: Uint8Array): OutFrame {
  const p = textBytes(proof, MAX_U8_TEXT, 'proof');
  const head = Buffer.allocUnsafe(1 + 4 + 1 + p.length + 4);
  let o = head.writeUInt8(FrameKind.ok, 0);
  o = head.writeUInt32BE(id, o);
  o = head.writeUInt8(p.length, o);
  o += p.copy(head, o);
  head.writeUInt32BE(payload.byteLength, o);
  return { id, head, payload, offset: 0, chunked: true };
}

export function errorFrame(id: number, grpcCode: number, proof: string, details: string, json: Uint8Array): OutFrame {
  const p = textBytes(proof, MAX_U8_TEXT, 'proof');
  const d = Buffer.from(details.length > 4096 ? details.slice(0, 4096) : details, 'utf8');
  const head = Buffer.allocUnsafe(1 + 4 + 1 + 1 + p.length + 2 + d.length + 4 + json.byteLength);
  let o = head.writeUInt8(FrameKind.error, 0);
  o = head.writeUInt32BE(id, o);
  o = head.writeUInt8(grpcCode & 0xff, o);
  o = head.writeUInt8(p.length, o);
  o += p.copy(head, o);
  o = head.writeUInt16BE(Math.min(d.length, MAX_U16_TEXT), o);
  o += d.copy(head, o, 0, Math.min(d.length, MAX_U16_TEXT));
  o = head.writeUInt32BE(json.byteLength, o);
  head.set(json, o);
  return { id, head, payload: EMPTY, offset: 0, chunked: false };
}

const EMPTY = new Uint8Array(0);

/** The bytes a DATA frame's header takes. */
export const DATA_HEAD_BYTES = 1 + 4 + 4;

/** Reads frames out of one stream message; every overrun or unknown kind is a DecodeFailedError. */
class Reader {
  #o = 0;
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.#o >= this.buf.length;
  }

  #need(n: number): void {
    if (this.#o + n > this.buf.length) throw new DecodeFailedError(`a stream message ends inside a frame (offset ${this.#o}, ${n} more bytes expected)`);
  }

  u8(): number {
    this.#need(1);
    return this.buf.readUInt8(this.#o++);
  }

  u16(): number {
    this.#need(2);
    const v = this.buf.readUInt16BE(this.#o);
    this.#o += 2;
    return v;
  }

  u32(): number {
    this.#need(4);
    const v = this.buf.readUInt32BE(this.#o);
    this.#o += 4;
    return v;
  }

  bytes(n: number): Uint8Array {
    this.#need(n);
    const b = this.buf;
    const out = new Uint8Array(b.buffer, b.byteOffset + this.#o, n);
    this.#o += n;
    return out;
  }

  text(n: number): string {
    this.#need(n);
    const s = this.buf.toString('utf8', this.#o, this.#o + n);
    this.#o += n;
    return s;
  }
}

/** The frames of one client-to-server message, in order. Throws DecodeFailedError on malformed bytes. */
export function readRequestFrames(message: Buffer): RequestFrame[] {
  const r = new Reader(message);
  const out: RequestFrame[] = [];
  while (!r.done) {
    const kind = r.u8();
    const id = r.u32();
    if (kind === FrameKind.call) {
      const timeoutMs = r.u32();
      const method = r.text(r.u8());
      const envelope = r.text(r.u16());
      const auth = r.text(r.u8());
      const total = r.u32();
      const chunk = r.bytes(r.u32());
      if (chunk.byteLength > total) throw new DecodeFailedError(`stream frame ${id} carries ${chunk.byteLength} bytes of a ${total}-byte payload`);
      out.push({ kind, id, timeoutMs, method, envelope, auth, total, chunk });
    } else if (kind === FrameKind.cancel) {
      out.push({ kind, id });
    } else if (kind === FrameKind.data) {
      out.push({ kind, id, chunk: r.bytes(r.u32()) });
    } else {
      throw new DecodeFailedError(`unknown stream frame kind ${kind}`);
    }
  }
  return out;
}

/** The frames of one server-to-client message, in order. Throws DecodeFailedError on malformed bytes. */
export function readResponseFrames(message: Buffer): ResponseFrame[] {
  const r = new Reader(message);
  const out: ResponseFrame[] = [];
  while (!r.done) {
    const kind = r.u8();
    const id = r.u32();
    if (kind === FrameKind.ok) {
      const proof = r.text(r.u8());
      const total = r.u32();
      const chunk = r.bytes(r.u32());
      if (chunk.byteLength > total) throw new DecodeFailedError(`stream frame ${id} carries ${chunk.byteLength} bytes of a ${total}-byte payload`);
      out.push({ kind, id, proof, total, chunk });
    } else if (kind === FrameKind.error) {
      const grpcCode = r.u8();
      const proof = r.text(r.u8());
      const details = r.text(r.u16());
      out.push({ kind, id, grpcCode, proof, details, json: r.bytes(r.u32()) });
    } else if (kind === FrameKind.data) {
      out.push({ kind, id, chunk: r.bytes(r.u32()) });
    } else {
      throw new DecodeFailedError(`unknown stream frame kind ${kind}`);
    }
  }
  return out;
}

/**
 * A payload arriving in chunks: the first chunk's view when it is whole (no copy, the
 * common case), else the pieces copied into one buffer as they come.
 */
export class Assembly {
  readonly #buf: Uint8Array;
  #filled: number;

  constructor(
    readonly total: number,
    first: Uint8Array,
  ) {
    this.#buf = new Uint8Array(total);
    this.#buf.set(first, 0);
    this.#filled = first.byteLength;
  }

  /** Adds a chunk; the whole payload once the last one arrived, else undefined. */
  add(chunk: Uint8Array): Uint8Array | undefined {
    if (this.#filled + chunk.byteLength > this.total) {
      throw new DecodeFailedError(`a stream payload of ${this.total} bytes got ${this.#filled + chunk.byteLength}`);
    }
    this.#buf.set(chunk, this.#filled);
    this.#filled += chunk.byteLength;
    return this.#filled === this.total ? this.#buf : undefined;
  }
}
