/**
 * How master/worker maps onto the task graph, and what its calls carry on the wire.
 *
 * The master is task 0 and worker `w` is task `w + 1`, joined by a star of two link
 * types: `workers` (the master's neighbours: every worker) and `master` (a worker's
 * neighbour: the master). Neighbour events then tell the master about its workers
 * and each worker about the master, and nothing about the other workers.
 *
 * Every paradigm call wraps its input in an envelope that names the caller's
 * incarnation (the data plane already carries the caller's task), so the callee
 * can refuse a call from an incarnation that is over.
 */
import { DecodeFailedError, InvalidArgumentError } from '@taskgraph/api';
import type { Caller, Codec, MethodSpec, Topology } from '@taskgraph/api';
import { defineMethod } from '../codec.js';

export const MASTER_TASK = 0;
export const MASTER_LINK = 'master';
export const WORKERS_LINK = 'workers';
export const MASTER_WORKER_LINK_TYPES: readonly string[] = [MASTER_LINK, WORKERS_LINK];
/** Method names the paradigm keeps for itself. */
export const PARADIGM_PREFIX = 'tgmw_';

/** A worker announces itself to the master; the answer names the master's incarnation. */
export const HELLO: MethodSpec<Record<string, never>, { incarnation: number }> = defineMethod(`${PARADIGM_PREFIX}hello`);

export const taskOfWorker = (workerId: number): number => workerId + 1;
export const workerOfTask = (task: number): number => task - 1;

/** Who a call came from, given the data plane's sender task and the envelope's incarnation. */
export function callerOf(fromTask: number, incarnation: number): Caller {
  return fromTask === MASTER_TASK ? { role: 'master', incarnation } : { role: 'worker', workerId: workerOfTask(fromTask), incarnation };
}

/** The star: every worker is the master's neighbour in `workers`, the master every worker's in `master`. */
export function masterWorkerLinkages(numWorkers: number): Record<string, Topology> {
  if (!Number.isInteger(numWorkers) || numWorkers < 1) throw new InvalidArgumentError(`a master/worker job needs at least one worker, got ${String(numWorkers)}`);
  const star = (link: string): Topology => {
    let task = -1;
    return {
      setTaskId: (id) => void (task = id),
      getNeighbors: () => {
        if (task === MASTER_TASK) return link === WORKERS_LINK ? Array.from({ length: numWorkers }, (_, w) => taskOfWorker(w)) : [];
        return link === MASTER_LINK ? [MASTER_TASK] : [];
      },
    };
  };
  return { [MASTER_LINK]: star(MASTER_LINK), [WORKERS_LINK]: star(WORKERS_LINK) };
}

/** An input with the caller's incarnation. */
export interface Enveloped<I> {
  readonly incarnation: number;
  readonly input: I;
}

const HEADER = 5;
const VERSION = 1;

function envelopeCodec<I>(inner: Codec<I>): Codec<Enveloped<I>> {
  return {
    name: `mw(${inner.name})`,
    encode({ incarnation, input }) {
      const body = inner.encode(input);
      const out = new Uint8Array(HEADER + body.length);
      out[0] = VERSION;
      new DataView(out.buffer).setUint32(1, incarnation);
      out.set(body, HEADER);
      return out;
    },
    decode(bytes) {
      if (bytes.length < HEADER || bytes[0] !== VERSION) throw new DecodeFailedError(`a master/worker call without its envelope (${bytes.length} bytes)`);
      const incarnation = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
      return { incarnation, input: inner.decode(bytes.subarray(HEADER)) };
    },
  };
}

const wrapped = new WeakMap<MethodSpec<unknown, unknown>, MethodSpec<Enveloped<unknown>, unknown>>();

/** The spec as it travels: the same name and output, the input in an envelope. Made once per spec. */
export function envelopeSpec<I, O>(spec: MethodSpec<I, O>): MethodSpec<Enveloped<I>, O> {
  const key = spec as MethodSpec<unknown, unknown>;
  let out = wrapped.get(key);
  if (!out) {
    if (!spec || typeof spec.name !== 'string' || !spec.input || !spec.output) throw new InvalidArgumentError('a master/worker call needs a MethodSpec ({ name, input, output })');
    out = { name: spec.name, input: envelopeCodec(key.input), output: key.output };
    wrapped.set(key, out);
  }
  return out as MethodSpec<Enveloped<I>, O>;
}
