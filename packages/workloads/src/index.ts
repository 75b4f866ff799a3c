/**
 * @taskgraph/workloads: reference workloads with known answers, for the scenario
 * suites, the simulator and demos. Each workload is a TaskBuilder, its link types
 * and linkages, and a function that gives the answer it must produce.
 */
export * from './regression.js';
export * from './running-stats.js';
export * from './running-stats-check.js';
export { seededRandom } from './seeded-random.js';
export { brownCorpus, corpusAt, corpusFilePath, countSplit, countSplitTable, makeSplits, readSplitText, repeatsFor } from './wordcount/corpus.js';
export type { Corpus, CorpusFile, Split, SplitOptions } from './wordcount/corpus.js';
export { countWords, scanWords } from './wordcount/tokenize.js';
export { WordTable } from './wordcount/word-table.js';
export type { WordTableView } from './wordcount/word-table.js';
export { encodeTablePartitions, mergeEncodedCounts } from './wordcount/table-codec.js';
export { fnv1a32, partitionOf } from './wordcount/partition.js';
export { COUNTS_CODEC_NAME, countsCodec } from './wordcount/counts-codec.js';
export { countsDigest, plainWordCount, topWords } from './wordcount/plain.js';
export * from './mapreduce/index.js';
