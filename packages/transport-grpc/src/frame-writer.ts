/**
 * Coalesced, flow-controlled writes of frames onto one gRPC stream. Frames queued
 * during one turn of the event loop leave as one stream message (one HTTP/2 DATA
 * write instead of one per call); a payload that does not fit in the message's room
 * continues in DATA frames queued behind the others, so a large payload does not hold
 * up the small calls beside it. When the stream's buffer is full (`write()` returned
 * false) nothing more is written until it drains.
 */
import { DATA_HEAD_BYTES, FrameKind, STREAM_MESSAGE_BYTES } from './frames.js';
import type { OutFrame } from './frames.js';

/** The part of a grpc-js stream the writer uses. */
export interface WritableStream {
  write(message: Buffer): boolean;
  once(event: 'drain', listener: () => void): unknown;
}

/** Below this, a chunk is not worth a frame header: the payload waits for the next message. */
const MIN_CHUNK = 4096;

export class FrameWriter {
  readonly #queue: OutFrame[] = [];
  /** Where the queue starts: shifting an array per frame costs more than an index. */
  #head = 0;
  #scheduled = false;
  #blocked = false;
  #closed = false;
  /** Stream messages written, and frames in them: what coalescing achieved. */
  messages = 0;
  frames = 0;

  constructor(private readonly stream: WritableStream) {}

  push(frame: OutFrame): void {
    if (this.#closed) return;
    this.#queue.push(frame);
    this.#schedule();
  }

  /** Drops the frames of call `id` not yet written (a cancelled call's remaining chunks). */
  drop(id: number): void {
    for (let i = this.#head; i < this.#queue.length; i++) {
      const f = this.#queue[i];
      if (f !== undefined && f.id === id && f.chunked) {
        this.#queue.splice(i, 1);
        i--;
      }
    }
  }

  /** Writes nothing more. */
  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#head = 0;
  }

  get pending(): number {
    return this.#queue.length - this.#head;
  }

  #schedule(): void {
    if (this.#scheduled || this.#blocked) return;
    this.#scheduled = true;
    // After the I/O phase: every call started by the answers of one read is queued by then.
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    while (!this.#closed && !this.#blocked && this.pending > 0) {
      const message = this.#message();
      this.messages += 1;
      if (!this.stream.write(message)) {
        this.#blocked = true;
        this.stream.once('drain', () => {
          this.#blocked = false;
          this.#flush();
        });
      }
    }
    if (this.pending === 0) {
      this.#queue.length = 0;
      this.#head = 0;
    }
  }

  /** Takes frames off the queue into one message of at most STREAM_MESSAGE_BYTES. */
  #message(): Buffer {
    const parts: Uint8Array[] = [];
    let size = 0;
    while (this.pending > 0) {
      const frame = this.#queue[this.#head]!;
      const continuing = frame.offset > 0;
      const headBytes = frame.chunked ? (continuing ? DATA_HEAD_BYTES : frame.head.length + 4) : frame.head.length;
      const left = frame.payload.byteLength - frame.offset;
      const room = STREAM_MESSAGE_BYTES - size - headBytes;
      if (size > 0 && (room < Math.min(left, MIN_CHUNK) || (!frame.chunked && room < 0))) break;
      this.#head += 1;
      this.frames += 1;
      if (!frame.chunked) {
        parts.push(frame.head);
        size += headBytes;
        continue;
      }
      const take = Math.min(left, Math.max(room, MIN_CHUNK));
      const head = Buffer.allocUnsafe(continuing ? DATA_HEAD_BYTES : 4);
      if (continuing) {
        head.writeUInt8(FrameKind.data, 0);
        head.writeUInt32BE(frame.id, 1);
        head.writeUInt32BE(take, 5);
      } else {
        parts.push(frame.head);
        head.writeUInt32BE(take, 0);
      }
      parts.push(head);
      if (take > 0) parts.push(frame.payload.subarray(frame.offset, frame.offset + take));
      size += headBytes + take;
      frame.offset += take;
      // The rest goes to the back of the queue: other calls' frames are not held up behind it.
      if (frame.offset < frame.payload.byteLength) this.#queue.push(frame);
      if (size >= STREAM_MESSAGE_BYTES) break;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
  }
}
