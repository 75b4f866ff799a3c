/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * Runs a live job with a failover and photographs the dashboard showing it:
 * writes docs/images/dashboard.png at the repository's root.
 *
 *   cd packages/dashboard && npx tsx scripts/screenshot.ts [out.png]
 *
 * The job is the seed's regression job (31 tasks in a binary tree, 3 cold
 * standbys) on the in-process memory store, slowed to a few epochs a second so the
 * picture is of a job at work. The request rates shown are the job's own: each
 * task's served requests, counted by the workload's serve hook and turned into a
 * rate every second (a RequestRateSource). Midway, the node running task 5 is
 * killed; a standby takes the task over in a new incarnation, and the page flashes
 * it and lists it. Needs Chromium at /usr/bin/chromium (`apt-get install chromium`).
 */
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { MemoryStore, createMemoryCoordinator } from '@taskgraph/coord-memory';
import { LocalCluster, nodeResources, silentLogger } from '@taskgraph/core';
import { LocalNetwork, createLocalTransport } from '@taskgraph/transport-local';
import { REGRESSION_LINK_TYPES, RegressionTaskBuilder, regressionLinkages } from '@taskgraph/workloads';
import { startDashboard } from '../src/index.js';
import type { RequestRateSource } from '../src/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const out = resolve(process.argv[2] ?? `${root}/docs/images/dashboard.png`);
const NUM_TASKS = 31;
const KILLED_TASK = 5;
const JOB = 'regression-demo';
/** What the page exposes (window.taskgraphDashboard), as far as this script uses it. */
interface Page {
  taskgraphDashboard: { cy: { animated(): boolean; fit(eles: undefined, padding: number): void } };
}

const CHROMIUM = process.env['CHROMIUM'] ?? '/usr/bin/chromium';

/** Polls until `f` gives a truthy value (or throws after `ms`). */
async function until<T>(what: string, f: () => T | Promise<T>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  const store = new MemoryStore();
  const network = new LocalNetwork();
  const served = new Map<number, number>();
  const cluster = new LocalCluster({
    job: JOB,
    numTasks: NUM_TASKS,
    linkTypes: REGRESSION_LINK_TYPES,
    standbys: 3,
    controllerCoordinator: await createMemoryCoordinator({ store, namespace: 'demo' }),
    resources: async () => nodeResources(await createMemoryCoordinator({ store, namespace: 'demo' }), await createLocalTransport({ network })),
    builder: () =>
      new RegressionTaskBuilder({
        numTasks: NUM_TASKS,
        numEpochs: 100_000,
        // A few epochs a second: a job at work rather than a blur.
        beforeServe: async ({ taskId }) => {
          served.set(taskId, (served.get(taskId) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 40));
        },
      }),
    linkages: () => regressionLinkages({ numTasks: NUM_TASKS }),
    node: { sessionTtlMs: 1000 },
    logger: silentLogger,
  });

  // The rates the page shows: requests each task served in the last second.
  const rates: RequestRateSource = {
    label: 'the regression tasks’ served-request counters (1 s window)',
    subscribe(_job, emit) {
      let last = new Map(served);
      const t = setInterval(() => {
        const now = new Map(served);
        emit([...now].map(([task, n]) => [task, n - (last.get(task) ?? 0)] as const));
        last = now;
      }, 1000);
      return () => clearInterval(t);
    },
  };

  const coordinator = await createMemoryCoordinator({ store, namespace: 'demo' });
  await cluster.start();
  const dashboard = await startDashboard({ coordinator, requestRates: rates });
  console.log(`dashboard at ${dashboard.url}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 860 }, deviceScaleFactor: 1.5 });
    await page.goto(`${dashboard.url}#job=${JOB}`);
    await page.waitForFunction(
      (n) => {
        const d = (window as unknown as { taskgraphDashboard?: { cy: { nodes(): { length: number }; edges(): { length: number } }; view: { layoutRuns: number } } }).taskgraphDashboard;
        return !!d && d.cy.nodes().length === n && d.cy.edges().length === n - 1 && d.view.layoutRuns > 0;
      },
      NUM_TASKS,
      { timeout: 60_000 },
    );
    await until('the job reaches epoch 3', async () => ((await cluster.controller.status())?.epoch ?? 0) >= 3);
    // Show task 5 in the details pane, the whole graph in view (edges hide while the view moves).
    await page.fill('#find-task', String(KILLED_TASK));
    await page.press('#find-task', 'Enter');
    await page.waitForFunction(() => document.querySelector('#task-details table') !== null);
    await page.waitForFunction(() => !(window as unknown as Page).taskgraphDashboard.cy.animated());
    await page.evaluate(() => (window as unknown as Page).taskgraphDashboard.cy.fit(undefined, 24));
    await page.waitForFunction(() => (document.querySelector('#rates') as HTMLElement | null)?.dataset['available'] === 'true');

    const victim = await cluster.kill(KILLED_TASK);
    console.log(`killed node-${victim.index}, which ran task ${KILLED_TASK}`);
    // The failover listed and the task flashing on the graph.
    await page.waitForFunction(
      (task) => [...document.querySelectorAll('#events li[data-kind="failover"]')].some((li) => (li as HTMLElement).dataset['task'] === String(task)),
      KILLED_TASK,
      { timeout: 60_000 },
    );
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await mkdir(dirname(out), { recursive: true });
    await page.screenshot({ path: out });
    console.log(`wrote ${out}`);
  } finally {
    await browser.close();
    await dashboard.close();
    await cluster.close();
    await coordinator.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
