/**
 * The server's end of one multiplexed stream: reads request frames, assembles chunked
 * payloads, hands each whole call to the server (which applies every check the unary
 * path applies), routes cancel frames to the call's handler, and writes the answers
 * back through one coalescing writer. A malformed message ends the stream with a typed
 * DecodeFailedError (its calls' handlers are aborted); it never throws out of here.
 */
import { DecodeFailedError, InvalidArgumentError } from '@taskgraph/api';
import { Metadata, status as Status } from '@grpc/grpc-js';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { FrameWriter } from './frame-writer.js';
import { Assembly, FrameKind, errorFrame, okFrame, readRequestFrames } from './frames.js';
import type { CallFrame } from './frames.js';
import { TrailerKeys } from './metadata.js';
import { statusFromError } from './status.js';

/** How the server answers a call: a status (as the unary path makes it) or the output bytes. */
export type Answer = (err: { code: number; details: string; metadata: Metadata } | null, value?: Buffer) => void;

/** A call admitted on a stream: what a cancel frame or the stream's end reaches. */
export interface StreamedCall {
  cancelled(): void;
}

/** What a session needs from its server. */
export interface StreamHost {
  readonly maxMessageBytes: number;
  /**
   * Checks and runs one call. `proof(outcome, body)` signs an answer when the call was
   * authenticated by a job credential (else it returns ""). Returns the call while its
   * handler runs, undefined when it was answered at once.
   */
  admit(frame: CallFrame, payload: Uint8Array, answer: (proof: Prover) => Answer): StreamedCall | undefined;
  /** Called once when the session ends. */
  ended(session: StreamSession): void;
}

export type Prover = (outcome: string, body: Uint8Array | undefined) => string;

const NO_PROOF: Prover = () => '';

export class StreamSession {
  readonly #calls = new Map<number, StreamedCall>();
  readonly #assembling = new Map<number, { frame: CallFrame; assembly: Assembly }>();
  readonly #writer: FrameWriter;
  #ended = false;
  #closing = false;

  constructor(
    private readonly call: ServerDuplexStream<Buffer, Buffer>,
    private readonly host: StreamHost,
  ) {
    this.#writer = new FrameWriter(call);
    call.on('data', (message: Buffer) => this.#onMessage(message));
    // The caller went away (cancelled the stream, or its connection dropped).
    call.on('cancelled', () => this.#end());
    call.on('error', () => this.#end());
    // The caller half-closed: it sends nothing more, so the stream ends once its calls are answered.
    call.on('end', () => this.close());
  }

  get callsInFlight(): number {
    return this.#calls.size;
  }

  /** The server is closing: no new calls; the stream ends once the calls in flight are answered. */
  close(): void {
    this.#closing = true;
    this.#finishIfIdle();
  }

  #onMessage(message: Buffer): void {
    if (this.#ended) return;
    let frames;
    try {
      frames = readRequestFrames(message);
    } catch (err) {
      this.#fail(err instanceof DecodeFailedError ? err : new DecodeFailedError(`a malformed stream message: ${String(err)}`));
      return;
    }
    for (const frame of frames) {
      if (frame.kind === FrameKind.cancel) {
        this.#assembling.delete(frame.id);
        const call = this.#calls.get(frame.id);
        this.#calls.delete(frame.id);
        call?.cancelled();
      } else if (frame.kind === FrameKind.call) {
        if (this.#calls.has(frame.id) || this.#assembling.has(frame.id)) {
          this.#fail(new DecodeFailedError(`stream request id ${frame.id} is already in use`));
          return;
        }
        if (frame.total > this.host.maxMessageBytes) {
          // Refused by its declared size: nothing of it is kept, its DATA frames are ignored.
          this.#refuseTooLarge(frame);
        } else if (frame.chunk.byteLength === frame.total) {
          this.#admit(frame, frame.chunk);
        } else {
          this.#assembling.set(frame.id, { frame, assembly: new Assembly(frame.total, frame.chunk) });
        }
      } else {
        const pending = this.#assembling.get(frame.id);
        if (pending === undefined) continue; // the rest of a refused or cancelled call
        let whole: Uint8Array | undefined;
        try {
          whole = pending.assembly.add(frame.chunk);
        } catch (err) {
          this.#fail(err as DecodeFailedError);
          return;
        }
        if (whole !== undefined) {
          this.#assembling.delete(frame.id);
          this.#admit(pending.frame, whole);
        }
      }
    }
  }

  #refuseTooLarge(frame: CallFrame): void {
    const err = new InvalidArgumentError(`the request of ${frame.method} is ${frame.total} bytes; the limit is ${this.host.maxMessageBytes}`, {
      details: { size: frame.total, limit: this.host.maxMessageBytes },
    });
    this.#answerFor(frame.id, NO_PROOF)(statusFromError(err, Status.RESOURCE_EXHAUSTED));
  }

  #admit(frame: CallFrame, payload: Uint8Array): void {
    const id = frame.id;
    const call = this.host.admit(frame, payload, (prove) => this.#answerFor(id, prove));
    if (call !== undefined) this.#calls.set(id, call);
  }

  #answerFor(id: number, prove: Prover): Answer {
    return (err, value) => {
      if (this.#calls.get(id) !== undefined) this.#calls.delete(id);
      if (this.#ended) return;
      if (err !== null) {
        const json = err.metadata.get(TrailerKeys.error)[0];
        const bytes = json instanceof Buffer ? json : Buffer.alloc(0);
        this.#writer.push(errorFrame(id, err.code, prove(String(err.code), undefined), err.details, bytes));
      } else {
        const body = value ?? Buffer.alloc(0);
        this.#writer.push(okFrame(id, prove('OK', body), body));
      }
      this.#finishIfIdle();
    };
  }

  #finishIfIdle(): void {
    if (this.#ended || !this.#closing || this.#calls.size > 0 || this.#assembling.size > 0) return;
    this.#ended = true;
    // The answers still queued go out first: end() after the writer's next flush.
    setImmediate(() => {
      this.call.end();
      this.host.ended(this);
    });
  }

  /** Ends the stream with a typed error the caller can read from the trailers. */
  #fail(err: DecodeFailedError): void {
    this.#ended = true;
    this.#abortAll();
    this.#writer.close();
    const st = statusFromError(err);
    this.call.emit('error', { code: st.code, details: st.details, metadata: st.metadata });
    this.host.ended(this);
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#writer.close();
    this.#abortAll();
    this.host.ended(this);
  }

  /** The handlers of the calls in flight hear that their caller left. */
  #abortAll(): void {
    this.#assembling.clear();
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    for (const c of calls) c.cancelled();
  }
}
