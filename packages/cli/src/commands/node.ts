/**
 * `taskgraph node <app>`: runs one node of a job in this process, until the job is
 * done, the node is killed or stopped (SIGTERM leaves gracefully), or it fails.
 * Results the application reports are printed as `TG-RESULT <json>` lines and the
 * outcome as one `TG-OUTCOME <json>` line on stdout; the node's store session, once
 * open and before the node claims anything, as one `TG-SESSION {"nodeId","sessionId"}`
 * line, for the supervisor alone (see `run`); logs go to stderr, with the
 * configured URLs' passwords masked. A configuration error (a TTL the store refuses,
 * an address that cannot be bound, a bad argument) exits with EXIT.usage, so a
 * supervisor knows a restart would fail the same way.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { createBootstrap, createController, installSignalHandlers, resolveCoordinator, resolveTransport, retryStore, sleep } from '@taskgraph/core';
import { systemClock } from '@taskgraph/api';
import { securedTransportUrl } from '../config.js';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { loadPlugins } from '../plugins.js';
import { EXIT, isConfigurationError } from '../exit-codes.js';
import { redactor, scrubbedLogger } from '../secrets.js';

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
    const node = createBootstrap({
      job: o.job,
      coordinator,
      transport,
      logger,
      ...(o.nodeId ? { nodeId: o.nodeId } : {}),
      ...(o.config.sessionTtlMs ? { sessionTtlMs: o.config.sessionTtlMs } : {}),
      // On stdout, a pipe only the parent reads (synchronous on Linux: the line is out before the claim starts).
      onSession: (sessionId) => print('TG-SESSION', { nodeId: node.nodeId, sessionId }),
    });
    node.setTaskBuilder(app.taskBuilder(ctx));
    for (const [lt, topo] of Object.entries(app.linkages(ctx))) node.addLinkage(lt, topo);
    const uninstall = installSignalHandlers(node, { logger });
    const parentGone = () => void node.stop('the run that started this node is gone').catch(() => undefined);
    const watchParent = process.env[STOP_WITH_PARENT_ENV] === '1';
    if (watchParent) process.stdin.on('end', parentGone).on('error', parentGone).resume();
    try {
      const outcome = await node.start();
      print('TG-OUTCOME', { ...outcome, nodeId: node.nodeId, stats: node.stats });
      return outcome.reason === 'lease-lost' ? EXIT.leaseLost : EXIT.ok;
    } catch (err) {
      const config = isConfigurationError(err);
      const error = redact(err instanceof Error ? err.message : String(err));
      print('TG-OUTCOME', { reason: config ? 'configuration' : 'failed', error, nodeId: node.nodeId, stats: node.stats });
      return config ? EXIT.usage : EXIT.failed;
    } finally {
      uninstall();
      // An open stdin would hold the process after its node ended.
      if (watchParent) process.stdin.off('end', parentGone).off('error', parentGone).destroy();
    }
  } finally {
    clearInterval(keepAlive);
    await transport.close().catch(() => undefined);
    await coordinator.close().catch(() => undefined);
  }
}
