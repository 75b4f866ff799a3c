/**
 * Reads whole files into one buffer that is reused from file to file. Counting
 * 200 MB of 20 KB files means ten thousand reads: a fresh buffer per file cost a
 * fifth of the plain count's time, and fs/promises' readFile (several thread-pool
 * round trips a file) three times the counting itself. The bytes a read returns
 * are valid until the next read.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

export class FileBuffer {
  private buffer: Uint8Array = new Uint8Array(1 << 16);

  /** The whole content of `path`, as a view of the shared buffer. */
  read(path: string): Uint8Array {
    const fd = openSync(path, 'r');
    try {
      const expected = fstatSync(fd).size;
      if (this.buffer.length < expected + 1) this.buffer = new Uint8Array(expected * 2 + 1);
      // Read to EOF rather than to the size fstat gave, in case the file changed.
      let size = 0;
      for (;;) {
        if (size === this.buffer.length) this.grow(size);
        const got = readSync(fd, this.buffer, size, this.buffer.length - size, null);
        if (got === 0) break;
        size += got;
      }
      return this.buffer.subarray(0, size);
    } finally {
      closeSync(fd);
    }
  }

  private grow(used: number): void {
    const bigger = new Uint8Array(this.buffer.length * 2);
    bigger.set(this.buffer.subarray(0, used));
    this.buffer = bigger;
  }
}
