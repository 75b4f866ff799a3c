/**
 * One outbound call in flight, on either data plane (a unary gRPC call or a frame on
 * a peer's stream): its promise, what cancels it (close, its signal), and how its
 * outcome becomes a value or a typed error, with the job credential's proof checked.
 */
import { ClosedError, InternalError, InvalidArgumentError, UnauthenticatedError, abortError } from '@taskgraph/api';
import { status as Status } from '@grpc/grpc-js';
import type { ClientUnaryCall, Metadata } from '@grpc/grpc-js';
import type { JobCredential } from './auth.js';
import { errorFromStatus } from './status.js';

/** A failed call's status, from grpc-js or rebuilt from a stream's error frame. */
export interface CallStatus {
  readonly code: Status;
  readonly details: string;
  readonly metadata?: Metadata | undefined;
}

/**
 * gRPC codes that come without a proof from a genuine node too: the client's own
 * (connection failed, deadline passed, cancelled) and grpc-js's server answers before
 * any handler runs (a method not served, a message over the limit).
 */
const UNPROVABLE: ReadonlySet<number> = new Set([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED, Status.UNIMPLEMENTED, Status.RESOURCE_EXHAUSTED]);

/** One call in flight: its promise, and what cancels it (close, its signal). */
export class OutboundCall {
  /** What cancels the call on the wire: a grpc-js call, or a stream's frame. */
  call: { cancel(): void } | undefined;
  /** The calls sharing this call's signal, when it has one. */
  watchers: Set<OutboundCall> | undefined;
  readonly promise: Promise<Uint8Array>;
  #resolve!: (value: Uint8Array) => void;
  #reject!: (err: Error) => void;
  #closedUnder = false;
  /** With a job credential: what checks the answer's proof, the nonce it covers, and the answer's headers. */
  #credential: JobCredential | undefined;
  #nonce = '';
  #headers: Metadata | undefined;

  constructor(
    private readonly target: string,
    private readonly method: string,
    private readonly signal: AbortSignal | undefined,
    private readonly pending: Set<OutboundCall>,
    readonly maxMessageBytes: number,
  ) {
    this.promise = new Promise<Uint8Array>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  cancel(): void {
    this.call?.cancel();
  }

  expectProof(credential: JobCredential, nonce: string): void {
    this.#credential = credential;
    this.#nonce = nonce;
  }

  /** Keeps the answer's headers, which carry a success's proof (they arrive before the message). */
  listen(call: ClientUnaryCall): void {
    if (this.#credential === undefined) return;
    call.on('metadata', (headers: Metadata) => {
      this.#headers = headers;
    });
  }

  /** The answer's headers as a stream frame carried them. */
  headers(headers: Metadata): void {
    this.#headers = headers;
  }

  get proving(): boolean {
    return this.#credential !== undefined;
  }

  /** Cancelling sends RST_STREAM, so the server's handler hears that the caller left. */
  cancelForClose(): void {
    this.#closedUnder = true;
    this.call?.cancel();
  }

  forget(): void {
    this.pending.delete(this);
    this.watchers?.delete(this);
  }

  done(err: CallStatus | null, value: Uint8Array | undefined): void {
    this.forget();
    if (this.#closedUnder) this.#reject(new ClosedError(`${this.what()} was cut off: the gRPC transport closed`));
    else if (this.signal?.aborted) this.#reject(abortError(this.signal, this.what()));
    else if (err) this.#reject(this.#errorFrom(err));
    else if (this.#credential !== undefined && !this.#credential.proven(this.#headers, this.#nonce, 'OK', value)) this.#reject(this.#unproven(null));
    else if (value === undefined) this.#reject(new InternalError(`${this.what()} ended without a response`));
    else if (value.byteLength > this.maxMessageBytes) {
      // The channel's gRPC limit has room for stream messages; a single answer is held to ours.
      this.#reject(
        new InvalidArgumentError(`the response of ${this.method} is ${value.byteLength} bytes; the limit is ${this.maxMessageBytes}`, {
          details: { size: value.byteLength, limit: this.maxMessageBytes },
        }),
      );
    } else this.#resolve(value);
  }

  /**
   * With a credential, an error answer must prove its server holds the secret, except
   * the UNPROVABLE codes: for those only the status code counts, since trailers from an
   * unproven peer may claim anything.
   */
  #errorFrom(err: CallStatus): Error {
    const ctx = { address: this.target, method: this.method };
    const credential = this.#credential;
    if (credential === undefined || credential.proven(err.metadata, this.#nonce, String(err.code), undefined)) return errorFromStatus(err, ctx);
    if (UNPROVABLE.has(err.code)) return errorFromStatus({ code: err.code, details: err.details }, ctx);
    return this.#unproven(err);
  }

  #unproven(err: CallStatus | null): UnauthenticatedError {
    // Retryable: the task's real owner may publish its address again, or this node was
    // refused by a peer that does not share our secret; either way nothing of the answer is used.
    return new UnauthenticatedError(
      `${this.what()}: the answer does not prove that its server holds the job credential (refused, or not a node of this job); it was dropped`,
      { retryable: true, details: { address: this.target, method: this.method, ...(err ? { grpcCode: Status[err.code] ?? err.code } : {}) } },
    );
  }

  private what(): string {
    return `gRPC call ${this.method} to ${this.target}`;
  }
}

