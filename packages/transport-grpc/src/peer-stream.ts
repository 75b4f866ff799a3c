/**
 * The client's end of the multiplexed data plane: one long-lived bidirectional gRPC
 * stream to a peer, opened on the peer's channel at the first call and re-opened at
 * the first call after it broke. Each call is a frame with its own request id; its
 * deadline is a local timer, and a call that ends early (deadline, its signal, close)
 * sends a cancel frame, which aborts the handler's signal on the server. Payload bytes
 * in flight are bounded per stream: calls beyond the bound wait in order.
 */
import { InternalError } from '@taskgraph/api';
import { Metadata, status as Status } from '@grpc/grpc-js';
import type { Client, ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import { PROOF_KEY } from './auth.js';
import { FrameWriter } from './frame-writer.js';
import { Assembly, FrameKind, callFrame, cancelFrame, readResponseFrames } from './frames.js';
import type { OutFrame, ResponseFrame } from './frames.js';
import { TrailerKeys } from './metadata.js';
import type { CallStatus, OutboundCall } from './outbound-call.js';

/** The framework-internal streaming method: `_` cannot start a task's method name, so it never collides. */
export const STREAM_METHOD = '_Stream';

/** Payload bytes (both ways) a stream carries at once before further calls wait. */
export const MAX_BYTES_IN_FLIGHT = 32 * 1024 * 1024;

const identity = (b: Buffer): Buffer => b;

/** One call on a stream: its frame, its bytes, its timer, its partly received answer. */
class StreamCall {
  timer: ReturnType<typeof setTimeout> | undefined;
  assembly: Assembly | undefined;
  proof = '';
  written = false;

  constructor(
    readonly id: number,
    readonly out: OutboundCall,
    readonly frame: OutFrame,
    readonly request: UnsentCall,
    private readonly stream: PeerStream,
  ) {}

  get bytes(): number {
    return this.request.payload.byteLength;
  }

  /** What OutboundCall's signal and close() reach: the call leaves, the server hears it. */
  cancel(): void {
    this.stream.end(this, { code: Status.CANCELLED, details: 'Cancelled on client' }, true);
  }
}

/** A call the peer never saw, handed back to go another way: what it carries and when its time is up. */
export interface UnsentCall {
  readonly out: OutboundCall;
  readonly method: string;
  readonly envelope: string;
  readonly auth: string;
  readonly payload: Uint8Array;
  readonly deadlineAt: number;
}

export class PeerStream {
  readonly #writer: FrameWriter;
  readonly #call: ClientDuplexStream<Buffer, Buffer>;
  readonly #calls = new Map<number, StreamCall>();
  /** Calls waiting for bytes in flight to fall under the bound. */
  readonly #waiting: StreamCall[] = [];
  #bytesInFlight = 0;
  #nextId = 0;
  #broken = false;
  #received = false;
  /** The stream ended or failed; its last answers may still be handed over, but it takes no new calls. */
  #over = false;
  /** Frames read but not yet handed over, and whether a turn to hand them over is scheduled. */
  readonly #inbox: ResponseFrame[] = [];
  #inboxHead = 0;
  #delivering = false;
  #finishing = false;

  /**
   * `onBroken` hears that the stream is gone; when the peer does not serve the stream
   * at all (a foreign gRPC server, or an older node) it also gets the calls in flight,
   * none of which reached a handler, to send another way.
   */
  constructor(
    client: Client,
    path: string,
    private readonly onBroken: (stream: PeerStream, unserved: UnsentCall[] | undefined) => void,
  ) {
    this.#call = client.makeBidiStreamRequest<Buffer, Buffer>(path, identity, identity, new Metadata(), {});
    this.#writer = new FrameWriter(this.#call);
    this.#call.on('data', (message: Buffer) => {
      this.#received = true;
      this.#onMessage(message);
    });
    this.#call.on('error', (err: ServiceError) => this.#breakAfterDeliveries(err.code, err.details));
    this.#call.on('end', () => this.#breakAfterDeliveries(Status.UNAVAILABLE, 'the server ended the stream'));
  }

  get broken(): boolean {
    return this.#broken || this.#over;
  }

  get callsInFlight(): number {
    return this.#calls.size;
  }

  /** Stream messages written and frames in them: what write coalescing achieved. */
  get writes(): { messages: number; frames: number } {
    return { messages: this.#writer.messages, frames: this.#writer.frames };
  }

  start(out: OutboundCall, method: string, envelope: string, auth: string, payload: Uint8Array, timeoutMs: number): void {
    if (this.#finishing) throw new InternalError('a finished stream takes no calls');
    this.#nextId = this.#nextId >= 0xfffffffe ? 1 : this.#nextId + 1;
    const id = this.#nextId;
    const request: UnsentCall = { out, method, envelope, auth, payload, deadlineAt: Date.now() + timeoutMs };
    const call = new StreamCall(id, out, callFrame(id, timeoutMs, method, envelope, auth, payload), request, this);
    out.call = call;
    this.#calls.set(id, call);
    call.timer = setTimeout(() => this.end(call, { code: Status.DEADLINE_EXCEEDED, details: 'Deadline exceeded' }, true), timeoutMs);
    if (this.#waiting.length > 0 || (this.#bytesInFlight > 0 && this.#bytesInFlight + call.bytes > MAX_BYTES_IN_FLIGHT)) {
      this.#waiting.push(call);
    } else {
      this.#send(call);
    }
  }

  #send(call: StreamCall): void {
    call.written = true;
    this.#bytesInFlight += call.bytes;
    this.#writer.push(call.frame);
  }

  /** Ends a call with an outcome; `cancel` tells the server to stop its handler. */
  end(call: StreamCall, status: CallStatus | null, cancel: boolean, value?: Uint8Array): void {
    if (this.#calls.get(call.id) !== call) return;
    this.#calls.delete(call.id);
    clearTimeout(call.timer);
    if (call.written) {
      this.#bytesInFlight -= call.bytes;
      if (cancel && !this.#broken) {
        this.#writer.drop(call.id);
        this.#writer.push(cancelFrame(call.id));
      }
      this.#admitWaiting();
    } else {
      const i = this.#waiting.indexOf(call);
      if (i >= 0) this.#waiting.splice(i, 1);
    }
    call.out.done(status, value);
  }

  #admitWaiting(): void {
    while (this.#waiting.length > 0) {
      const next = this.#waiting[0]!;
      if (this.#bytesInFlight > 0 && this.#bytesInFlight + next.bytes > MAX_BYTES_IN_FLIGHT) return;
      this.#waiting.shift();
      this.#send(next);
    }
  }

  #onMessage(message: Buffer): void {
    let frames: ResponseFrame[];
    try {
      frames = readResponseFrames(message);
    } catch (err) {
      // A server that speaks garbage: nothing on this stream can be trusted any more.
      this.#break(Status.INTERNAL, `the server sent a malformed stream message: ${(err as Error).message}`);
      this.#call.cancel();
      return;
    }
    // Each answer is handed over in its own turn of the event loop, as grpc-js hands over
    // unary answers: what the caller does with one answer (abort its signal, stop a node)
    // is done before the next answer is looked at, so no answer outlives its caller's abort.
    // One queue for every message keeps a payload's chunks in order across messages.
    for (const frame of frames) this.#inbox.push(frame);
    if (!this.#delivering) this.#deliver();
  }

  #deliver(): void {
    while (this.#inboxHead < this.#inbox.length) {
      const frame = this.#inbox[this.#inboxHead]!;
      this.#inboxHead += 1;
      const call = this.#calls.get(frame.id);
      if (call === undefined) continue; // an answer to a call that already ended here
      if (frame.kind === FrameKind.error) {
        const md = new Metadata();
        if (frame.json.byteLength > 0) md.set(TrailerKeys.error, Buffer.from(frame.json));
        if (frame.proof !== '') md.set(PROOF_KEY, frame.proof);
        this.end(call, { code: frame.grpcCode, details: frame.details, metadata: md }, false);
        continue;
      }
      let whole: Uint8Array | undefined;
      if (frame.kind === FrameKind.ok) {
        call.proof = frame.proof;
        if (frame.chunk.byteLength === frame.total) whole = frame.chunk;
        else if (frame.total > call.out.maxMessageBytes) {
          // Refused by its declared size before any of it is kept; the cancel stops the rest.
          const details = `the response is ${frame.total} bytes; the limit is ${call.out.maxMessageBytes}`;
          this.end(call, { code: Status.RESOURCE_EXHAUSTED, details }, true);
          continue;
        } else call.assembly = new Assembly(frame.total, frame.chunk);
      } else if (call.assembly !== undefined) {
        try {
          whole = call.assembly.add(frame.chunk);
        } catch (err) {
          this.end(call, { code: Status.INTERNAL, details: (err as Error).message }, true);
          continue;
        }
      }
      if (whole === undefined) continue;
      if (call.out.proving) {
        const headers = new Metadata();
        headers.set(PROOF_KEY, call.proof);
        call.out.headers(headers);
      }
      this.end(call, null, false, whole);
      if (this.#inboxHead < this.#inbox.length) {
        this.#delivering = true;
        setImmediate(() => {
          this.#delivering = false;
          this.#deliver();
        });
        return;
      }
    }
    this.#inbox.length = 0;
    this.#inboxHead = 0;
  }

  /** The answers that arrived before the stream's end are handed over before its calls fail. */
  #breakAfterDeliveries(code: Status, details: string): void {
    this.#over = true;
    if (this.#delivering) setImmediate(() => this.#breakAfterDeliveries(code, details));
    else this.#break(code, details);
  }

  /** The stream failed or ended: its calls fail retryable (a new stream carries the next ones). */
  #break(code: Status, details: string): void {
    if (this.#broken) return;
    this.#broken = true;
    this.#writer.close();
    if (code === Status.UNIMPLEMENTED && !this.#received) {
      const unsent: UnsentCall[] = [];
      for (const call of [...this.#calls.values()]) {
        this.#calls.delete(call.id);
        clearTimeout(call.timer);
        unsent.push(call.request);
      }
      this.#waiting.length = 0;
      this.onBroken(this, unsent);
      return;
    }
    this.onBroken(this, undefined);
    // "Connection dropped" marks the calls as maybe delivered, as grpc-js's own words do for unary calls.
    const status: CallStatus = {
      code: Status.UNAVAILABLE,
      details: `the call's stream broke (Connection dropped; ${Status[code] ?? code}): ${details}`,
    };
    for (const call of [...this.#calls.values()]) this.end(call, status, false);
  }

  /** Cuts the stream off (the transport closes). */
  close(): void {
    if (this.#broken) return;
    this.#call.cancel();
  }

  /**
   * Half-closes the stream once every call, including those waiting, is written: the
   * calls in flight still get their answers, then the server ends the stream (the peer
   * was forgotten: its channel closes after its last call, as with unary calls).
   */
  finish(): void {
    if (this.#broken || this.#finishing) return;
    this.#finishing = true;
    this.#endWhenSent();
  }

  #endWhenSent(): void {
    if (this.#broken) return;
    if (this.#waiting.length === 0 && this.#writer.pending === 0) {
      this.#writer.close();
      this.#call.end();
      return;
    }
    setImmediate(() => this.#endWhenSent());
  }
}
