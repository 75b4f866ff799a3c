/**
 * Server-sent events: the framing, and one open stream with a bound on what it may
 * leave unsent (a page that stops reading is cut off rather than buffered without
 * end; its EventSource reconnects and starts again from a snapshot).
 */
import type { ServerResponse } from 'node:http';

/**
 * One event in the text/event-stream format: `event:` then one `data:` line per line
 * of `data` (JSON has none, but a line break must never end a frame early), then a
 * blank line.
 */
export function sseFrame(event: string, data: string): string {
  if (!/^[a-z][a-z-]*$/.test(event)) throw new Error(`bad event name ${JSON.stringify(event)}`);
  let out = `event: ${event}\n`;
  for (const line of data.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  return `${out}\n`;
}

/** A comment line: ignored by EventSource, keeps idle connections (and proxies) open. */
export const SSE_KEEPALIVE = ': keep-alive\n\n';

export class SseClient {
  private closed = false;

  constructor(
    private readonly res: ServerResponse,
    /** The most bytes this stream may leave unsent before it is cut off. */
    private readonly maxBuffered: number,
    private readonly onClose: (client: SseClient) => void,
  ) {
    res.on('close', () => this.finish());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(frame: string): void {
    if (this.closed) return;
    this.res.write(frame);
    if (this.res.writableLength > this.maxBuffered) {
      // A page that does not read: cut it off; it reconnects and gets a snapshot.
      this.res.destroy();
      this.finish();
    }
  }

  /** Ends the stream (the server is closing). */
  end(): void {
    if (this.closed) return;
    this.res.end();
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
  }
}
