/**
 * `taskgraph node <app>`: runs one node of a job in this process, until the job is
 * done, the node is killed or stopped (SIGTERM leaves gracefully), or it fails.
 * Results the application reports are printed as `TG-RESULT <json>` lines and the
 * outcome as one `TG-OUTCOME <json>` line on stdout; logs go to stderr.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { createBootstrap, createController, createLogger, installSignalHandlers, resolveCoordinator, resolveTransport, sleep } from '@taskgraph/core';
import { systemClock } from '@taskgraph/api';
import { securedTransportUrl } from '../config.js';
import type { CliConfig } from '../config.js';
import { loadApp } from '../app-loader.js';
import { loadPlugins } from '../plugins.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, leaseLost: 3 } as const;

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
  const logger = createLogger({ level: o.config.logLevel ?? 'info' });
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
    let status = await ctl.status();
    if (!status) logger.info('waiting for the job to be created', { job: o.job });
    while (!status) {
      if (systemClock.now() > deadline) throw new InvalidArgumentError(`job ${o.job} does not exist (create it with \`taskgraph job create\`)`);
      await sleep(systemClock, 250);
      status = await ctl.status();
    }
    const ctx = { numTasks: status.spec.numTasks, args: o.args, logger, report: (r: unknown) => print('TG-RESULT', r) };
    const node = createBootstrap({
      job: o.job,
      coordinator,
      transport,
      logger,
      ...(o.nodeId ? { nodeId: o.nodeId } : {}),
      ...(o.config.sessionTtlMs ? { sessionTtlMs: o.config.sessionTtlMs } : {}),
    });
    node.setTaskBuilder(app.taskBuilder(ctx));
    for (const [lt, topo] of Object.entries(app.linkages(ctx))) node.addLinkage(lt, topo);
    const uninstall = installSignalHandlers(node, { logger });
    try {
      const outcome = await node.start();
      print('TG-OUTCOME', { ...outcome, nodeId: node.nodeId, stats: node.stats });
      return outcome.reason === 'lease-lost' ? EXIT.leaseLost : EXIT.ok;
    } catch (err) {
      print('TG-OUTCOME', { reason: 'failed', error: err instanceof Error ? err.message : String(err), nodeId: node.nodeId, stats: node.stats });
      return EXIT.failed;
    } finally {
      uninstall();
    }
  } finally {
    clearInterval(keepAlive);
    await transport.close().catch(() => undefined);
    await coordinator.close().catch(() => undefined);
  }
}
