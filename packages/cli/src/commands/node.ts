/**
 * `taskgraph node <app>`: runs one node of a job in this process (or `--count N`
 * nodes in one node host: one store client, one watch per shared prefix, one
 * transport server, a session each), until the job is done, the nodes are killed or
 * stopped (SIGTERM leaves gracefully), or they fail.
 * Results the application reports are printed as `TG-RESULT <json>` lines and each
 * node's outcome as one `TG-OUTCOME <json>` line on stdout; each node's store
 * session, once open and before that node claims anything, as one `TG-SESSION
 * {"nodeId","sessionId"}` line, for the supervisor alone (see `run`: it ends them
 * all if the process dies); logs go to stderr, with the
 * configured URLs' passwords masked. A configuration error (a TTL the store refuses,
 * an address that cannot be bound, a bad argument) exits with EXIT.usage, so a
 * supervisor knows a restart would fail the same way.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { MAX_NODES_PER_HOST, createBootstrap, createController, createNodeHost, installSignalHandlers, resolveCoordinator, resolveTransport, retryStore, sleep } from '@taskgraph/core';
import { systemClock } from '@taskgraph/api';
import type { HostedOutcome, NodeHost, TaskGraphNode } from '@taskgraph/core';
import { securedTransportUrl } from '../config.js';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { loadPlugins } from '../plugins.js';
import { EXIT, isConfigurationError } from '../exit-codes.js';
import { redactor, scrubbedLogger } from '../secrets.js';
import { startMetrics, type MetricsEndpoint } from '../observability.js';
import type { MetricsServer } from '@taskgraph/metrics';

/**
 * Set by `run` in its nodes' environment: the node leaves gracefully when its stdin
 * ends, that is when the `run` that started it is gone (even SIGKILLed), so no node
 * outlives its supervisor holding a task.
 */
export const STOP_WITH_PARENT_ENV = 'TASKGRAPH_STOP_WITH_PARENT';

export interface NodeCommandOptions {
  readonly app: string;
  readonly job: string;
  readonly config: CliConfig;
  readonly args: Record<string, string>;
  readonly nodeId?: string;
  /** How long to wait for the job to be created, in ms (default: forever). */
  readonly waitForJobMs?: number;
  /**
   * How many nodes this process runs (default 1). More than one share the process's
   * store client, its watches and one transport server (a node host); node ids are
   * then `<nodeId>.<index>`.
   */
  readonly count?: number;
  /** Serve the nodes' metrics and `/healthz` (healthy while every node of the process is) there. */
  readonly metrics?: MetricsEndpoint;
}

/** Checks `--count` (or `--nodes-per-process`): a positive integer up to what one node host runs. */
export function nodeCount(raw: string | undefined, flag = 'count'): number {
  if (raw === undefined) return 1;
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isInteger(n) || n < 1 || n > MAX_NODES_PER_HOST) {
    throw new InvalidArgumentError(`--${flag} must be an integer from 1 to ${MAX_NODES_PER_HOST} (nodes in one process), got ${JSON.stringify(raw)}`);
  }
  return n;
}

export async function runNodeCommand(o: NodeCommandOptions): Promise<number> {
  if (!o.config.coordinator) throw new InvalidArgumentError('no coordinator: pass --coordinator URL or set TASKGRAPH_COORDINATOR');
  if (!o.config.transport) throw new InvalidArgumentError('no transport: pass --transport URL or set TASKGRAPH_TRANSPORT');
  const redact = redactor(o.config);
  const logger = scrubbedLogger(o.config.logLevel ?? 'info', redact);
  await loadPlugins(o.config.plugins);
  const app = await loadApp(o.app);
  const coordinator = await resolveCoordinator(o.config.coordinator, { logger });
  let transport;
  try {
    transport = await resolveTransport(securedTransportUrl(o.config, o.config.transport));
  } catch (err) {
    await coordinator.close();
    throw err;
  }
  const print = (tag: string, value: unknown) => process.stdout.write(`${tag} ${JSON.stringify(value)}\n`);
  let metrics: MetricsServer | undefined;
  try {
    metrics = o.metrics ? await startMetrics(o.metrics, 'all') : undefined;
  } catch (err) {
    await transport.close();
    await coordinator.close();
    throw err;
  }
  if (metrics) logger.info('serving metrics', { url: `${metrics.url}/metrics` });
  // The runtime's own timers do not hold the process open (a library must not keep
  // its host alive); this command runs until the node ends, whatever it waits on.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  try {
    const ctl = createController({ coordinator, job: o.job, logger });
    const deadline = o.waitForJobMs === undefined ? Infinity : systemClock.now() + o.waitForJobMs;
    // The store may be away for a while (restarting): wait for it rather than fail the node.
    const readStatus = () => retryStore(() => ctl.status(), { clock: systemClock, signal: new AbortController().signal, logger, what: `read job ${o.job}` });
    let status = await readStatus();
    if (!status) logger.info('waiting for the job to be created', { job: o.job });
    while (!status) {
      if (systemClock.now() > deadline) throw new InvalidArgumentError(`job ${o.job} does not exist (create it with \`taskgraph job create\`)`);
      await sleep(systemClock, 250);
      status = await readStatus();
    }
    const ctx = { numTasks: status.spec.numTasks, args: o.args, logger, report: (r: unknown) => print('TG-RESULT', r) };
    const count = o.count ?? 1;
    const common = {
      job: o.job,
      transport,
      logger,
      ...(o.config.sessionTtlMs ? { sessionTtlMs: o.config.sessionTtlMs } : {}),
      ...(metrics ? { instruments: metrics.metrics.observer } : {}),
    };
    // On stdout, a pipe only the parent reads (synchronous on Linux: the line is out before the claim starts).
    const printSession = (nodeId: string, sessionId: string) => print('TG-SESSION', { nodeId, sessionId });
    let host: NodeHost | undefined;
    let nodes: readonly TaskGraphNode[];
    const wire = (node: TaskGraphNode): void => {
      node.setTaskBuilder(app.taskBuilder(ctx));
      for (const [lt, topo] of Object.entries(app.linkages(ctx))) node.addLinkage(lt, topo);
    };
    if (count === 1) {
      const node: TaskGraphNode = createBootstrap({
        ...common,
        coordinator,
        ...(o.nodeId ? { nodeId: o.nodeId } : {}),
        onSession: (sessionId) => printSession(node.nodeId, sessionId),
      });
      wire(node);
      nodes = [node];
    } else {
      // A hosted node whose session is lost is replaced by a new one (the process lives on for the others).
      host = createNodeHost({ ...common, coordinator, count, ...(o.nodeId ? { nodeIdPrefix: o.nodeId } : {}), onSession: printSession, setup: wire });
      nodes = host.nodes;
    }
    const stopAll = host ?? nodes[0]!;
    const uninstall = installSignalHandlers(stopAll, { logger });
    const parentGone = () => void stopAll.stop('the run that started this node is gone').catch(() => undefined);
    const watchParent = process.env[STOP_WITH_PARENT_ENV] === '1';
    if (watchParent) process.stdin.on('end', parentGone).on('error', parentGone).resume();
    try {
      const ended = host ? await host.start() : [await settle(nodes[0]!)];
      // A host's nodes are the last of each index (a node that took a lost one's place).
      const codes = ended.map((end, i) => reportEnd(end, (host?.nodes ?? nodes)[i]!, print, redact));
      // The worst end decides: a configuration error, then a failure, then a lost lease.
      for (const code of [EXIT.usage, EXIT.failed, EXIT.leaseLost]) if (codes.includes(code)) return code;
      return EXIT.ok;
    } finally {
      uninstall();
      // An open stdin would hold the process after its node ended.
      if (watchParent) process.stdin.off('end', parentGone).off('error', parentGone).destroy();
    }
  } finally {
    clearInterval(keepAlive);
    await metrics?.close().catch(() => undefined);
    await transport.close().catch(() => undefined);
    await coordinator.close().catch(() => undefined);
  }
}

function settle(node: TaskGraphNode): Promise<HostedOutcome> {
  return node.start().then(
    (outcome) => ({ nodeId: node.nodeId, outcome }),
    (error: unknown) => ({ nodeId: node.nodeId, error }),
  );
}

/** Prints a node's `TG-OUTCOME` line and says what the process should exit with for it. */
function reportEnd(end: HostedOutcome, node: TaskGraphNode, print: (tag: string, value: unknown) => void, redact: (s: string) => string): number {
  if ('outcome' in end) {
    print('TG-OUTCOME', { ...end.outcome, nodeId: node.nodeId, stats: node.stats });
    return end.outcome.reason === 'lease-lost' ? EXIT.leaseLost : EXIT.ok;
  }
  const config = isConfigurationError(end.error);
  const error = redact(end.error instanceof Error ? end.error.message : String(end.error));
  print('TG-OUTCOME', { reason: config ? 'configuration' : 'failed', error, nodeId: node.nodeId, stats: node.stats });
  return config ? EXIT.usage : EXIT.failed;
}
