import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { brownCorpus } from '../src/index.js';
import { FileBuffer } from '../src/wordcount/file-buffer.js';

describe('FileBuffer', () => {
  const corpus = brownCorpus();
  const dir = mkdtempSync(join(tmpdir(), 'wc-file-buffer-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads whole files, larger than its first buffer and then smaller ones, through one buffer', () => {
    // 20 corpus files together: ~400 KB, past the 64 KB the reader starts with.
    const big = Buffer.concat(corpus.files.slice(0, 20).map((f) => readFileSync(join(corpus.dir, f.name))));
    expect(big.length).toBeGreaterThan(1 << 16);
    const bigPath = join(dir, 'big');
    writeFileSync(bigPath, big);
    const emptyPath = join(dir, 'empty');
    writeFileSync(emptyPath, '');

    const reader = new FileBuffer();
    const small = join(corpus.dir, 'ca01');
    expect(Buffer.from(reader.read(small)).equals(readFileSync(small))).toBe(true);
    expect(Buffer.from(reader.read(bigPath)).equals(big)).toBe(true);
    expect(Buffer.from(reader.read(small)).equals(readFileSync(small))).toBe(true);
    expect(reader.read(emptyPath)).toHaveLength(0);
  });

  it('throws the file system error for a missing file', () => {
    expect(() => new FileBuffer().read(join(dir, 'missing'))).toThrow(/ENOENT/);
  });
});
