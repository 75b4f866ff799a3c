/**
 * A MapReduce worker: maps splits (counts their words, partitioned by reducer, and
 * keeps the encoded partitions in memory, as Google's MapReduce keeps map output
 * on the mapper's local disk), serves those partitions to reducers, and reduces
 * (pulls one partition of every split from the workers that hold them and merges).
 * What it holds dies with its node: the master re-runs those splits elsewhere.
 */
import { InvalidArgumentError, NotFoundError } from '@taskgraph/api';
import type { EpochContext, WorkerFrame, WorkerTask } from '@taskgraph/api';
import { servePeer } from '@taskgraph/core';
import { countSplitTable } from '../wordcount/corpus.js';
import type { Split } from '../wordcount/corpus.js';
import { encodeTablePartitions, mergeEncodedCounts } from '../wordcount/table-codec.js';
import { WordTable } from '../wordcount/word-table.js';
import { countsDigest, topWords } from '../wordcount/plain.js';
import { CANCEL, FETCH, MAP, REDUCE } from './protocol.js';
import type { FetchInput, MapInput, MapOutput, ReduceInput, ReduceResult, Source } from './protocol.js';

/** How many partitions a reducer pulls at once. */
const FETCH_CONCURRENCY = 4;

export interface MapReduceWorkerOptions {
  /** The corpus directory on this machine. */
  readonly corpusDir: string;
  /**
   * Counts a split's words (default: read its files from `corpusDir`, letting the
   * event loop run between files). A simulator passes a count of texts it read
   * beforehand, so that no file read happens on its virtual time.
   */
  readonly countSplit?: (split: Pick<Split, 'id' | 'files'>) => WordTable | Promise<WordTable>;
  /** Called before each map and reduce starts (tests hold the job at a chosen point with it). */
  readonly before?: (what: 'map' | 'reduce', workerId: number, id: number, incarnation: number) => void | Promise<void>;
}

export class MapReduceWorker implements WorkerTask {
  private frame!: WorkerFrame;
  /** Map output: per split, its partitions encoded (served as they are). */
  private readonly outputs = new Map<number, Uint8Array[]>();
  /** Reduce attempts running here, by attempt id. */
  private readonly attempts = new Map<number, AbortController>();
  readonly methods = [
    servePeer(MAP, (_ctx: EpochContext, input: MapInput) => this.map(input)),
    servePeer(FETCH, (_ctx: EpochContext, input: FetchInput) => this.fetch(input)),
    servePeer(REDUCE, (ctx: EpochContext, input: ReduceInput) => this.reduce(ctx, input)),
    servePeer(CANCEL, (_ctx: EpochContext, input: { attempt: number }) => this.cancel(input.attempt)),
  ];

  constructor(private readonly o: MapReduceWorkerOptions) {}

  setup(frame: WorkerFrame): void {
    this.frame = frame;
  }

  exit(): void {
    for (const ac of this.attempts.values()) ac.abort();
    this.outputs.clear();
  }

  private async map(input: MapInput): Promise<MapOutput> {
    await this.o.before?.('map', this.frame.getWorkerId(), input.split.id, this.frame.getIncarnation());
    const table = this.o.countSplit ? await this.o.countSplit(input.split) : await countSplitTable(this.o.corpusDir, input.split);
    const { size, counts } = table.view();
    let words = 0;
    for (let e = 0; e < size; e++) words += counts[e]!;
    this.outputs.set(input.split.id, encodeTablePartitions(table, input.reducers));
    return { split: input.split.id, incarnation: this.frame.getIncarnation(), words };
  }

  private fetch(input: FetchInput): Uint8Array {
    const parts = input.incarnation === this.frame.getIncarnation() ? this.outputs.get(input.split) : undefined;
    if (!parts) throw new NotFoundError(`worker ${this.frame.getWorkerId()} (incarnation ${this.frame.getIncarnation()}) holds no output of split ${input.split} from incarnation ${input.incarnation}`);
    const part = parts[input.reducer];
    if (!part) throw new InvalidArgumentError(`split ${input.split} has no partition ${input.reducer}`);
    return part;
  }

  private async reduce(ctx: EpochContext, input: ReduceInput): Promise<ReduceResult> {
    const ac = new AbortController();
    this.attempts.set(input.attempt, ac);
    try {
      await this.o.before?.('reduce', this.frame.getWorkerId(), input.reducer, this.frame.getIncarnation());
      // Merged as bytes into one table; a string per distinct word only at the end.
      const table = new WordTable();
      const queue = [...input.sources];
      const pull = async (source: Source) => {
        const bytes = await this.frame.dataRequest(ctx, source.workerId, FETCH, { split: source.split, reducer: input.reducer, incarnation: source.incarnation }, { signal: ac.signal });
        mergeEncodedCounts(bytes, table);
      };
      const lane = async () => {
        for (let s = queue.shift(); s !== undefined; s = queue.shift()) await pull(s);
      };
      try {
        await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, queue.length) }, lane));
      } catch (err) {
        // One source failed: the other lanes stop pulling too.
        ac.abort();
        throw err;
      }
      const merged = new Map<string, number>();
      table.addInto(merged);
      let words = 0;
      for (const n of merged.values()) words += n;
      return { reducer: input.reducer, digest: countsDigest(merged), distinct: merged.size, words, top: topWords(merged, input.top) };
    } finally {
      this.attempts.delete(input.attempt);
    }
  }

  private cancel(attempt: number): boolean {
    const ac = this.attempts.get(attempt);
    ac?.abort();
    return ac !== undefined;
  }
}
