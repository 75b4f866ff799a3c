// The command line's conventions: --version, help per command, refused and
// misspelt flags, -o on the read commands, job list, watch printing only changes,
// the PASS/FAIL last line, job names from the application's name, exit codes, and
// the terminal (in-place redraw, colour, NO_COLOR).
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { EXIT, main } from '../src/index.js';
import { CLEAR_LINE, terminalOf, type Terminal } from '../src/terminal.js';
import { defaultJobName } from '../src/commands/run.js';
import { runDashboard } from '../src/commands/dashboard.js';

async function run(argv: string[], terminal?: Terminal): Promise<{ code: number; out: string; lines: string[] }> {
  const lines: string[] = [];
  const code = await main(argv, (s) => void lines.push(s), terminal ? { terminal } : {});
  const out = lines.join('\n');
  return { code, out, lines: out.split('\n') };
}

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

describe('help and version', () => {
  it('--version and -V print the package version and exit 0', async () => {
    expect(await run(['--version'])).toMatchObject({ code: 0, out: VERSION });
    expect(await run(['-V'])).toMatchObject({ code: 0, out: VERSION });
  });

  it('help <command>, <command> --help and job <sub> --help show that command with its flags; exit 0', async () => {
    const viaHelp = await run(['help', 'run']);
    const viaFlag = await run(['run', '--help']);
    expect(viaHelp.code).toBe(0);
    expect(viaFlag.code).toBe(0);
    expect(viaHelp.out).toBe(viaFlag.out);
    expect(viaHelp.out).toContain('Usage: taskgraph run [options] <app>');
    expect(viaHelp.out).toMatch(/--tasks <n>/);
    expect(viaHelp.out).not.toMatch(/--node-id/);
    const status = await run(['job', 'status', '--help']);
    expect(status.code).toBe(0);
    expect(status.out).toContain('-o, --output <format>');
    expect(status.out).toMatch(/\(choices: "table", "wide", "json",\s+"yaml", default: "table"\)/);
    expect((await run(['help', 'job'])).out).toMatch(/list \[options\]\s+list the jobs in the store/);
  });

  it('the top-level help lists the commands and documents every exit code; no command at all shows it and exits 2', async () => {
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    for (const c of ['run', 'node', 'job', 'help']) expect(help.out).toMatch(new RegExp(`\\n  ${c} `));
    const documented = /Exit codes: 0 success, 1 the job or node failed, 2 bad usage or configuration, 3 the node lost its lease,\n4 the job's records in the store are unreadable, 130 \/ 143 interrupted by SIGINT \/ SIGTERM\./;
    expect(help.out).toMatch(documented);
    expect([EXIT.ok, EXIT.failed, EXIT.usage, EXIT.leaseLost, EXIT.unreadable, EXIT.interrupted, EXIT.terminated]).toEqual([0, 1, 2, 3, 4, 130, 143]);
    const bare = await run([]);
    expect(bare.code).toBe(EXIT.usage);
    expect(bare.out).toContain('Usage: taskgraph [options] [command]');
    expect((await run(['job'])).code).toBe(EXIT.usage);
  });
});

describe('flags', () => {
  it('a misspelt flag gets one line with a suggestion, exit 2', async () => {
    expect(await run(['run', 'regression', '--tsks', '3'])).toMatchObject({ code: EXIT.usage, out: "error: unknown option '--tsks' (did you mean --tasks?)" });
    expect(await run(['job', 'lst'])).toMatchObject({ code: EXIT.usage, out: "error: unknown command 'lst' (did you mean list?)" });
  });

  it('a flag of another command is refused, not ignored', async () => {
    expect(await run(['job', 'status', 'j', '--tasks', '3', '--coordinator', 'memory://x'])).toMatchObject({ code: EXIT.usage, out: "error: unknown option '--tasks'" });
    expect(await run(['job', 'delete', 'j', '-o', 'json', '--coordinator', 'memory://x'])).toMatchObject({ code: EXIT.usage, out: "error: unknown option '-o'" });
    expect(await run(['node', 'regression', '--job', 'j', '--backups', '1'])).toMatchObject({ code: EXIT.usage, out: "error: unknown option '--backups'" });
  });

  it('an output format outside the list is refused with the choices', async () => {
    expect(await run(['job', 'list', '-o', 'xml', '--coordinator', 'memory://x'])).toMatchObject({
      code: EXIT.usage,
      out: "error: option '-o, --output <format>' argument 'xml' is invalid. Allowed choices are table, wide, json, yaml.",
    });
  });

  it('node needs a shared store: without a coordinator it says so (run defaults to memory://)', async () => {
    const saved = process.env['TASKGRAPH_COORDINATOR'];
    delete process.env['TASKGRAPH_COORDINATOR'];
    try {
      const r = await run(['node', 'regression', '--job', 'j']);
      expect(r.code).toBe(EXIT.usage);
      expect(r.out).toMatch(/^taskgraph: no coordinator: node needs the job's store: pass --coordinator URL/);
    } finally {
      if (saved !== undefined) process.env['TASKGRAPH_COORDINATOR'] = saved;
    }
  });
});

describe('job list and -o', () => {
  it('lists the jobs of a store in every format', async () => {
    const c = ['--coordinator', 'memory://cli-list'];
    expect(await run(['job', 'list', ...c])).toMatchObject({ code: 0, out: 'no jobs' });
    expect((await run(['job', 'create', 'alpha', '--tasks', '3', '--app', 'regression', ...c])).code).toBe(0);
    expect((await run(['job', 'create', 'beta-2', '--workers', '2', '--backups', '1', '--app', 'mapreduce', ...c])).code).toBe(0);
    const table = await run(['job', 'list', ...c]);
    expect(table.code).toBe(0);
    expect(table.lines, table.out).toHaveLength(3);
    expect(table.lines[0]).toMatch(/^NAME\s+STATE\s+EPOCH\s+TASKS\s+NODES\s+FAILOVERS$/);
    expect(table.lines[1]).toMatch(/^alpha\s+running\s+0\s+3\s+0\s+0$/);
    expect(table.lines[2]).toMatch(/^beta-2\s+running\s+0\s+3\s+0\s+0$/);
    expect((await run(['job', 'list', '-o', 'wide', ...c])).lines[0]).toMatch(/BACKUPS\s+STANDBYS\s+CREATED$/);
    const json = JSON.parse((await run(['job', 'list', '-o', 'json', ...c])).out) as Array<{ job: string; tasks: number; backups: number }>;
    expect(json.map((j) => [j.job, j.tasks, j.backups])).toEqual([
      ['alpha', 3, 0],
      ['beta-2', 3, 1],
    ]);
    const yaml = parseYaml((await run(['job', 'list', '--output', 'yaml', ...c])).out) as typeof json;
    expect(yaml).toEqual(json);
    const status = parseYaml((await run(['job', 'status', 'alpha', '-o', 'yaml', ...c])).out) as { job: string; spec: { numTasks: number } };
    expect(status).toMatchObject({ job: 'alpha', spec: { numTasks: 3 } });
    const wide = await run(['job', 'status', 'alpha', '-o', 'wide', ...c]);
    expect(wide.lines[1]).toMatch(/^task\s+role\s+node\s+address\s+token\s+incarnations$/);
    expect((await run(['job', 'status', 'alpha', ...c])).lines[1]).toMatch(/^task\s+role\s+node\s+incarnations$/);
  });
});

describe('job watch', () => {
  it('prints the table once, then one line per change, until the job is done (exit 0)', async () => {
    const c = ['--coordinator', 'memory://cli-watch'];
    expect((await run(['job', 'create', 'w1', '--tasks', '3', '--app', 'regression', ...c])).code).toBe(0);
    const watching = run(['job', 'watch', 'w1', ...c]);
    const job = await run(['run', 'regression', '--tasks', '3', '--job', 'w1', '--arg', 'epochs=4', ...c]);
    expect(job.code).toBe(0);
    const w = await watching;
    expect(w.code).toBe(0);
    expect(w.lines.filter((l) => l.startsWith('job w1:'))).toHaveLength(1);
    expect(w.lines[0]).toMatch(/^job w1: running, epoch 0, 3 tasks/);
    const changes = w.lines.slice(w.lines.indexOf(w.lines.find((l) => l.startsWith('nodes:')) ?? '') + 1);
    expect(changes.length).toBeGreaterThan(0);
    for (const l of changes) expect(l).toMatch(/^\d\d:\d\d:\d\d (state|epoch|task|nodes|problem)/);
    // Each epoch change once, in order, and the end.
    const epochs = changes.filter((l) => / epoch \d+ -> \d+$/.test(l)).map((l) => Number(/-> (\d+)$/.exec(l)?.[1]));
    expect(epochs).toEqual([...epochs].sort((a, b) => a - b));
    expect(new Set(epochs).size).toBe(epochs.length);
    expect(epochs.at(-1)).toBe(4);
    expect(changes.at(-1)).toMatch(/ state running -> done$/);
    expect(changes.filter((l) => / task \d: claimed by /.test(l))).toHaveLength(3);
  });
});

describe('run', () => {
  it('names the job after the application and ends with PASS', async () => {
    const r = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'memory://cli-pass']);
    expect(r.code).toBe(0);
    expect(r.lines.at(-1)).toMatch(/^PASS: job regression-[a-z0-9]+ done after [0-9.]+ s, epoch \d+, 0 failover\(s\)$/);
    expect(defaultJobName('My App_2!', 0)).toBe('my-app-2-0');
    expect(defaultJobName('---', 36)).toBe('job-10');
  });

  it('defaults to the embedded store (memory://) when no coordinator is configured', async () => {
    const saved = process.env['TASKGRAPH_COORDINATOR'];
    delete process.env['TASKGRAPH_COORDINATOR'];
    try {
      const r = await run(['run', 'regression', '--tasks', '3']);
      expect(r.code).toBe(0);
      expect(r.lines[0]).toMatch(/^job regression-[a-z0-9]+: regression, 3 tasks \+ 0 standbys, memory:\/\/ \/ local:\/\/ \(in-process\)$/);
    } finally {
      if (saved !== undefined) process.env['TASKGRAPH_COORDINATOR'] = saved;
    }
  });

  it('on a terminal, redraws the progress in one line and colours the verdict', async () => {
    const writes: string[] = [];
    const terminal: Terminal = { tty: true, color: true, write: (s) => void writes.push(s) };
    const r = await run(['run', 'regression', '--tasks', '3', '--coordinator', 'memory://cli-tty'], terminal);
    expect(r.code).toBe(0);
    expect(r.lines.filter((l) => l.startsWith('epoch '))).toEqual([]);
    expect(writes.length).toBeGreaterThan(0);
    for (const w of writes) expect(w.startsWith(CLEAR_LINE)).toBe(true);
    expect(writes.some((w) => /epoch \d+ \| tasks running 3\/3/.test(w))).toBe(true);
    expect(r.lines.at(-1)).toMatch(/^\u001b\[32mPASS\u001b\[0m: job regression-/);
  });

  it('a terminal colours unless NO_COLOR is set or TERM is dumb; a pipe gets plain lines', () => {
    const stream = (isTTY: boolean) => ({ isTTY, write: () => true }) as unknown as NodeJS.WriteStream;
    expect(terminalOf(stream(true), {})).toMatchObject({ tty: true, color: true });
    expect(terminalOf(stream(true), { NO_COLOR: '' })).toMatchObject({ tty: true, color: false });
    expect(terminalOf(stream(true), { TERM: 'dumb' })).toMatchObject({ tty: false, color: false });
    expect(terminalOf(stream(false), {})).toMatchObject({ tty: false, color: false });
    expect(terminalOf(stream(false), { FORCE_COLOR: '1' })).toMatchObject({ tty: false, color: true });
  });
});

describe('dashboard', () => {
  it('serves the live view on loopback, says where, and stops on its signal', async () => {
    const stop = new AbortController();
    const lines: string[] = [];
    let announce!: (url: string) => void;
    const announced = new Promise<string>((resolve) => (announce = resolve));
    const ended = runDashboard({ coordinator: 'memory://cli-dashboard' }, undefined, 0, (line) => {
      lines.push(line);
      const m = /^dashboard: (http:\/\/127\.0\.0\.1:\d+)\/? \(the jobs of memory:\/\/cli-dashboard\); Ctrl-C stops it$/.exec(line);
      if (m) announce(m[1] as string);
    }, stop.signal);
    const url = await announced;
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    stop.abort();
    expect(await ended).toBe(0);
    expect(lines.at(-1)).toBe('dashboard stopped');
    await expect(fetch(url)).rejects.toThrow();
  });

  it('needs a store: the command without a coordinator says so, exit 2', async () => {
    const saved = process.env['TASKGRAPH_COORDINATOR'];
    delete process.env['TASKGRAPH_COORDINATOR'];
    try {
      const r = await run(['dashboard']);
      expect(r.code).toBe(EXIT.usage);
      expect(r.out).toMatch(/^taskgraph: no coordinator: dashboard needs the job's store/);
    } finally {
      if (saved !== undefined) process.env['TASKGRAPH_COORDINATOR'] = saved;
    }
  });
});
