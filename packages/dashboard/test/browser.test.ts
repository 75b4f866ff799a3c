/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * End to end: the page in Debian's Chromium (never a downloaded browser; the CI
 * script installs `chromium`), driven by playwright-core, over a real job run
 * in-process: the graph drawn, a node killed, the failover seen on the page.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { startDashboard } from '../src/index.js';
import type { Dashboard } from '../src/index.js';
import { startRegressionJob, waitUntilRunning } from './helpers.js';
import type { RunningJob } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const NUM_TASKS = 15;
/** Markup where the store has a name: it must show as text and never run. */
const EVIL = '<img src=x onerror="window.__pwned=1">';

/** What the page exposes for tests (window.taskgraphDashboard), as used here. */
interface Exposed {
  taskgraphDashboard?: {
    cy: {
      nodes(): { length: number };
      edges(): { length: number };
      getElementById(id: string): { data(name: string): unknown; hasClass(c: string): boolean };
    };
    view: { layoutRuns: number; snapshots: number };
  };
  __pwned?: number;
}

/** Waits until the element matching `selector` holds `text`. */
async function hasText(page: Page, selector: string, text: string | number): Promise<void> {
  await page.waitForFunction(([sel, t]) => document.querySelector(sel)?.textContent?.includes(t) === true, [selector, String(text)] as const);
}

describe('the page in Chromium', () => {
  let run: RunningJob | undefined;
  let dashboard: Dashboard | undefined;
  let browser: Browser | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await browser?.close();
    await dashboard?.close();
    await run?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    browser = dashboard = run = dir = undefined;
  });

  it('draws a running job, shows a failover as it happens, and shows what the store says as text', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`).toBe(true);
    run = await startRegressionJob({ numTasks: NUM_TASKS, standbys: 2, gateEpoch: 2 });
    await waitUntilRunning(run, 1);
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    // A standby whose key and record are markup, and a record that is not JSON under a markup key.
    await run.coordinator.create(`${run.job}/nodes/${EVIL}`, enc({ nodeId: EVIL, address: EVIL, pid: 1, host: EVIL, started: '' }));
    await run.coordinator.create(`${run.job}/nodes/<b>bold<b>`, new TextEncoder().encode('<script>window.__pwned=2</script>'));
    dashboard = await startDashboard({ coordinator: run.coordinator });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${String(e)}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') errors.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('request', (r) => requests.push(r.url()));

    await page.goto(`${dashboard.url}#job=${run.job}`);
    // The task graph: every task a graph node, the tree's links seen from its metas, laid out by ELK.
    await page.waitForFunction(
      (n) => {
        const d = (window as unknown as Exposed).taskgraphDashboard;
        return !!d && d.cy.nodes().length === n && d.cy.edges().length === n - 1 && d.view.layoutRuns > 0;
      },
      NUM_TASKS,
    );
    const graph = await page.evaluate(() => {
      const d = (window as unknown as Exposed).taskgraphDashboard!;
      return { nodes: d.cy.nodes().length, edges: d.cy.edges().length, incarnation: d.cy.getElementById('t6').data('incarnation'), node: d.cy.getElementById('t6').data('node') };
    });
    expect(graph).toMatchObject({ nodes: NUM_TASKS, edges: NUM_TASKS - 1, incarnation: 1 });
    const owner = run.cluster.ownerOf(6)!;
    expect(graph.node).toBe(`node-${owner.index}`);
    await hasText(page, '#job-facts', 'running');
    await hasText(page, '#job-facts', `${NUM_TASKS}`);
    await hasText(page, '#jobs', run.job);
    await hasText(page, '#rates', 'Not available');

    // Untrusted names are text: shown as written, never as markup.
    await page.waitForFunction((evil) => [...document.querySelectorAll('#standbys li')].some((li) => li.textContent?.includes(evil)), EVIL);
    await page.waitForFunction(() => document.querySelector('#problems li')?.textContent?.includes('<b>bold<b>'));
    expect(await page.locator('#standbys img, #problems b, #problems script, #events img').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as Exposed).__pwned)).toBeUndefined();

    // Kill the node running task 6: a standby takes it over in incarnation 2.
    const victim = await run.cluster.kill(6);
    await page.waitForFunction(() => (window as unknown as Exposed).taskgraphDashboard!.cy.getElementById('t6').data('incarnation') === 2);
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLElement>('#events li[data-kind="failover"]')].some((li) => li.dataset['task'] === '6'));
    await hasText(page, '#events li[data-kind="failover"][data-task="6"]', `task 6 failed over: incarnation 1 → 2, node-${victim.index} → node-`);
    expect(await page.locator('#events li[data-kind="primary-lost"][data-task="6"]').count()).toBeGreaterThanOrEqual(1);
    const after = await page.evaluate(() => {
      const t = (window as unknown as Exposed).taskgraphDashboard!.cy.getElementById('t6');
      return { node: t.data('node'), flash: t.hasClass('flash'), failedOver: t.hasClass('failed-over') };
    });
    expect(after.node).not.toBe(`node-${victim.index}`);
    expect(after).toMatchObject({ flash: true, failedOver: true });
    await hasText(page, '#job-facts', 'failovers seen1');

    dir = await mkdtemp(join(tmpdir(), 'tg-dashboard-'));
    const shot = join(dir, 'failover.png');
    await page.screenshot({ path: shot });
    expect((await stat(shot)).size).toBeGreaterThan(10_000);

    // The job goes on to its end, and the page says so.
    run.release();
    await hasText(page, '#job-facts', 'done');

    // Offline: every request went to the dashboard itself.
    expect(requests.length).toBeGreaterThan(0);
    for (const url of requests) expect(url.startsWith(dashboard.url), url).toBe(true);
    expect(errors).toEqual([]);
  }, 120_000);
});
