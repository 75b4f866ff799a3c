// Every example in the READMEs and docs works as written. Each fenced code block of
// README.md, docs/*.md, packages/*/README.md, apps/*/README.md, bench/README.md and
// tools/*/README.md is covered in one of these ways, or the test fails naming its
// file and line:
//
// - RUN. `sh` blocks are run line by line (see runShSteps for what a line may be);
//   TS_RUN blocks are whole programs run with tsx; CUSTOM_RUN blocks need a harness
//   (a config file and the plug-in it names, an application module run by the CLI).
//   Exit codes are checked, and the output against the block's own output samples.
// - TYPECHECK: fragments of real API use, compiled with tsc against the workspace
//   sources, with declarations of the identifiers they take as given (a preamble).
// - ILLUSTRATIVE: listed below with a one-line reason (a diagram, an output sample, a
//   production cluster with certificates).
// - COVERED_BY_TEST: exercised by another package's tests.
//
// A README that is wrong is fixed in the README, never hidden here. The only
// rewrites of a command are of addresses: 127.0.0.1:2379 (a local etcd, in any block)
// becomes the address of an etcd this test starts; a few blocks that name other
// machines are listed with what they are pointed at instead (SH_SUBSTITUTE, TS_RUN).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, startEtcdCluster } from '@taskgraph/testkit';
import type { EtcdCluster, EtcdServer } from '@taskgraph/testkit';
import { startConsulEmulator } from '@taskgraph/emulators';
import { resolveCoordinator } from '@taskgraph/core';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const packageDir = fileURLToPath(new URL('../', import.meta.url));
const bin = join(root, 'node_modules', '.bin');

// ---------------------------------------------------------------------------
// The blocks
// ---------------------------------------------------------------------------

interface Block {
  /** Relative to the repository root. */
  readonly file: string;
  /** The line of the opening fence (1-based). */
  readonly line: number;
  readonly lang: string;
  readonly body: string;
}

function docFiles(): string[] {
  const files = ['README.md'];
  const inDir = (dir: string, match: (name: string) => boolean) => {
    if (!existsSync(join(root, dir))) return;
    for (const name of readdirSync(join(root, dir)).sort()) if (match(name)) files.push(`${dir}/${name}`);
  };
  inDir('docs', (n) => n.endsWith('.md'));
  for (const parent of ['packages', 'apps', 'tools']) {
    if (!existsSync(join(root, parent))) continue;
    for (const name of readdirSync(join(root, parent)).sort()) {
      const readme = `${parent}/${name}/README.md`;
      if (existsSync(join(root, readme))) files.push(readme);
    }
  }
  if (existsSync(join(root, 'bench/README.md'))) files.push('bench/README.md');
  return files;
}

/** Every fenced block (``` or ~~~, any language, indented ones too) of a Markdown file. */
export function extractBlocks(file: string, text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.split('\n');
  let open: { line: number; indent: number; fence: string; lang: string; body: string[] } | undefined;
  lines.forEach((line, i) => {
    const m = /^( *)(`{3,}|~{3,})(.*)$/.exec(line);
    if (open === undefined) {
      if (m) open = { line: i + 1, indent: m[1]!.length, fence: m[2]!, lang: m[3]!.trim().split(/\s+/)[0] ?? '', body: [] };
      return;
    }
    if (m && m[2]![0] === open.fence[0] && m[2]!.length >= open.fence.length && m[3]!.trim() === '') {
      blocks.push({ file, line: open.line, lang: open.lang, body: open.body.join('\n') });
      open = undefined;
      return;
    }
    const indent = Math.min(open.indent, /^ */.exec(line)![0].length);
    open.body.push(line.slice(indent));
  });
  if (open !== undefined) throw new Error(`${file}:${open.line}: the code block is never closed`);
  return blocks;
}

const allBlocks: Block[] = docFiles().flatMap((file) => extractBlocks(file, readFileSync(join(root, file), 'utf8')));
const where = (b: Block, offset = 0) => `${b.file}:${b.line + offset}`;

// ---------------------------------------------------------------------------
// Coverage maps. `block` is text that occurs in exactly one block of `file`
// (usually its first line); an entry that matches no block, or several, fails.
// ---------------------------------------------------------------------------

interface Where {
  readonly file: string;
  readonly block: string;
}

/** Not runnable here, and nothing to compile: the reason says why. */
const ILLUSTRATIVE: readonly (Where & { readonly reason: string })[] = [
  { file: 'README.md', block: 'npm ci && npm test', reason: "installs, then runs every package's tests, this one included" },
  { file: 'README.md', block: 'etcd --cert-file server.pem', reason: 'setting up a production etcd on 10.0.0.2 with TLS certificates, users and roles' },
  {
    file: 'README.md',
    block: "export TASKGRAPH_COORDINATOR='etcd://10.0.0.2:2379?namespace=prod&ca=",
    reason: 'a production node: etcd with TLS and a password, a job CA and certificates under /etc/tg (packages/cli/test/security.test.ts runs the --tls-* flags and the job secret with files it makes)',
  },
  { file: 'docs/concepts.md', block: 'application code: Task, TaskBuilder, one Topology per link type', reason: 'a diagram' },
  { file: 'docs/concepts.md', block: 'demo/state/epoch ', reason: "a sample of a job's keys in the store" },
  { file: 'docs/concepts.md', block: 'sequenceDiagram', reason: 'a sequence diagram (mermaid)' },
  { file: 'packages/core/README.md', block: '<job>/state/epoch ', reason: "the layout of a job's keys in the store" },
  { file: 'packages/coord-consul/README.md', block: 'consul://host:8500?namespace=<name>', reason: 'the URL syntax, with placeholders' },
  { file: 'packages/coord-etcd/README.md', block: 'etcd://host:2379[,host2:2379...]', reason: 'the URL syntax, with placeholders' },
  { file: 'packages/transport-grpc/README.md', block: 'grpcs://0.0.0.0:7000?advertise=10.0.0.5&ca=/etc/tg/job-ca.pem', reason: 'a URL naming certificate files under /etc/tg (test/tls.test.ts runs grpcs:// with files it makes)' },
  { file: 'packages/transport-grpc/README.md', block: 'import grpc, json', reason: 'a Python client (grpcio, not installed here) of a node at 10.0.0.5 (test/interop.test.ts makes the same calls with a plain grpc-js client)' },
  { file: 'packages/transport-grpc/README.md', block: 'syntax = "proto3";', reason: 'a protocol definition; the regression/v1/gradient.proto it imports is not part of the repository' },
  { file: 'packages/transport-grpc/README.md', block: 'grpcurl -plaintext -proto task.proto', reason: 'grpcurl is not installed here, and task.proto imports a file the repository does not have' },
  { file: 'packages/transport-grpc/README.md', block: 'grpc_health_probe -addr=10.0.0.5:7000', reason: 'grpc_health_probe is not installed here, and 10.0.0.5 is another machine (test/health.test.ts asks the same of the health service with the standard client)' },
  { file: 'packages/cli/README.md', block: 'taskgraph run ./my-app.mjs --tasks 5 --coordinator redis://', reason: 'needs a Redis server and a taskgraph-coord-redis package, which is not part of TaskGraph (the plug-in it loads runs in the CLI config test below)' },
  // bench: the runs are the benchmarks, whose size and minutes are the point; bench/test runs each command with tiny sizes.
  { file: 'bench/README.md', block: 'npm run -s bench:data-plane ', reason: 'the data-plane benchmark (~2 min; bench/test/data-plane.test.ts runs the command with tiny sizes)' },
  { file: 'bench/README.md', block: 'npm run -s bench:coordination ', reason: 'the coordination benchmark (~2 min; bench/test/coordination.test.ts runs the command with tiny sizes)' },
  { file: 'bench/README.md', block: 'npm run -s bench:hot-standby ', reason: 'the hot-standby benchmark (~2.5 min; bench/test/hot-standby.test.ts runs the command with tiny sizes)' },
  { file: 'bench/README.md', block: 'npm run -s bench:mapreduce ', reason: 'the MapReduce benchmark (~90 s; bench/test/mapreduce.test.ts runs the command with tiny sizes)' },
  { file: 'bench/README.md', block: 'npm run -s bench:scale ', reason: 'the scale benchmark (~6 min, 1,000 tasks on etcd; bench/test/scale.test.ts runs it with tiny sizes)' },
  { file: 'bench/README.md', block: '{"case":"64B x16"', reason: 'an output sample' },
  { file: 'bench/README.md', block: '{"summary":true,"throughput_ratio_min"', reason: 'an output sample' },
  { file: 'bench/README.md', block: 'spawn ──(start-up)──', reason: 'a timeline diagram' },
  { file: 'bench/README.md', block: 'T(W) = ceil(M/W)', reason: 'a formula' },
  { file: 'bench/README.md', block: '"rounds":3,"plain_s"', reason: 'an output sample' },
  { file: 'bench/README.md', block: '"rounds":1,"plain_s"', reason: 'an output sample' },
];

/** Exercised by another package's tests; `block: '*'` is every block of the file (a README still being written). */
const COVERED_BY_TEST: readonly (Where & { readonly test: string; readonly reason: string })[] = [
  { file: 'packages/metrics/README.md', block: '*', test: 'packages/metrics/test', reason: 'covered by packages/metrics/test (the package and its README are being written)' },
  { file: 'packages/dashboard/README.md', block: '*', test: 'packages/dashboard/test', reason: 'covered by packages/dashboard/test (the package and its README are being written)' },
  { file: 'packages/sim/README.md', block: 'npm run sim -- --seeds 200', test: 'packages/sim/test/sim.test.ts', reason: 'the command line is tested (replay, usage) and the 200-seed run is the package test; 100000 seeds do not fit a test' },
];

interface TypecheckEntry extends Where {
  /** Declarations of what the fragment takes as given (written before it). */
  readonly preamble?: string;
  /** The fragment is a function body (`return` at top level): its imports stay, the rest goes in an async function. */
  readonly wrap?: boolean;
  /** Diagnostics the block's own elisions (`// ...`) cause, with why. */
  readonly ignore?: readonly { readonly code: string; readonly message: RegExp; readonly why: string }[];
  /** More files the fragment imports (relative to it). */
  readonly files?: Readonly<Record<string, (dir: string) => string>>;
}

const TYPECHECK: readonly TypecheckEntry[] = [
  { file: 'packages/api/README.md', block: "import type { Framework, MethodSpec, Task, EpochContext } from '@taskgraph/api';" },
  { file: 'packages/api/README.md', block: 'class Counter implements Task, Backupable' },
  {
    file: 'packages/api/README.md',
    block: "import { TaskGraphError } from '@taskgraph/api';",
    wrap: true,
    preamble: `import type { EpochContext, Framework, MethodSpec } from '@taskgraph/api';
declare const fw: Framework;
declare const ctx: EpochContext;
declare const getParam: MethodSpec<null, number>;`,
  },
  {
    file: 'packages/backend-kit/README.md',
    block: 'class MySession extends LeaseSession',
    preamble: `import type { CoordinatorCaps, Entry } from '@taskgraph/api';
interface MyClient {
  renew(id: string, options: { timeoutMs: number }): Promise<boolean>;
  destroySession(id: string): Promise<void>;
  get(key: string): Promise<Entry | undefined>;
  createSession(ttlMs: number): Promise<string>;
  close(): void;
}
declare const MY_CAPS: CoordinatorCaps;`,
    ignore: [
      { code: 'TS2655', message: /'MyCoordinator' is missing implementations/, why: 'the block elides doList, doCreate, ... (`// ...`)' },
      { code: 'TS2416', message: /'doAcquire'/, why: "the block elides doAcquire's body (`// ... wait with stops.race(...)`)" },
    ],
  },
  {
    file: 'packages/cli/README.md',
    block: 'export default defineApp({',
    preamble: `import type { AppContext } from '@taskgraph/core';
import type { Task, TaskBuilder } from '@taskgraph/api';
declare class MyTaskBuilder implements TaskBuilder {
  constructor(ctx: AppContext);
  getTask(taskId: number): Task;
}`,
  },
  { file: 'packages/coord-k8s/README.md', block: "import { createK8sCoordinator } from '@taskgraph/coord-k8s';", preamble: 'declare const signal: AbortSignal;' },
  {
    file: 'packages/core/README.md',
    block: "const coordinator = await resolveCoordinator('etcd://127.0.0.1:2379?namespace=tg');",
    preamble: `import type { TaskBuilder, Topology } from '@taskgraph/api';
declare const myBuilder: TaskBuilder;
declare const parents: Topology;
declare const children: Topology;`,
  },
  {
    file: 'packages/core/README.md',
    block: "import type { NodeObserver } from '@taskgraph/api';",
    preamble: `import { createBootstrap } from '@taskgraph/core';
import type { NodeHost } from '@taskgraph/core';
import type { Coordinator, Transport } from '@taskgraph/api';
declare const job: string;
declare const coordinator: Coordinator;
declare const transport: Transport;
declare const other: NodeObserver;
declare const host: NodeHost;`,
  },
  {
    file: 'packages/core/README.md',
    block: "registerCoordinator('redis', () => import('taskgraph-coord-redis')",
    // `taskgraph-coord-redis` (a third-party plug-in the READMEs name) is declared in ambient.d.ts.
    preamble: `import type { TransportFactory } from '@taskgraph/api';
declare const createQuicTransport: TransportFactory;`,
  },
  {
    file: 'packages/core/README.md',
    block: 'const host = createNodeHost({',
    preamble: `import type { Coordinator, TaskBuilder, Topology, Transport } from '@taskgraph/api';
declare const coordinator: Coordinator;
declare const transport: Transport;
declare const builder: TaskBuilder;
declare function linkages(): Record<string, Topology>;`,
  },
  { file: 'packages/emulators/README.md', block: 'const consul = await startConsulEmulator();' },
  {
    file: 'packages/testkit/README.md',
    block: "await eventually('the watch saw the delete'",
    preamble: `import type { Coordinator, Session, WatchEvent } from '@taskgraph/api';
declare const events: WatchEvent[];
declare const b: Coordinator;
declare const session: Session;`,
  },
  {
    file: 'packages/testkit/README.md',
    block: "expect((await rejection(c.update('k', bytes('x'), stale))).code).toBe('CONFLICT');",
    preamble: `import { expect } from 'vitest';
import { rejection } from '@taskgraph/testkit';
import type { Coordinator, Version } from '@taskgraph/api';
declare const c: Coordinator;
declare function bytes(text: string): Uint8Array;
declare const stale: Version;`,
  },
  { file: 'packages/testkit/README.md', block: 'transportSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach }' },
  { file: 'packages/testkit/README.md', block: 'coordinatorSuite(' },
  {
    file: 'packages/testkit/README.md',
    block: 'scenarioSuite({ describe, it, beforeAll, afterAll, beforeEach, afterEach }, {',
    preamble: `import { afterAll, afterEach, beforeAll, beforeEach, describe, it } from 'vitest';
import { createEtcdCoordinator } from '@taskgraph/coord-etcd';
import type { TcpProxy } from '@taskgraph/testkit';
import type { LocalNetwork } from '@taskgraph/transport-local';
import type { Coordinator, Transport } from '@taskgraph/api';
declare const url: string;
declare const coordinator: Coordinator;
declare const transport: Transport;
declare function close(): Promise<void>;
declare const proxy: TcpProxy;
declare const network: LocalNetwork;`,
  },
  {
    file: 'packages/topologies/README.md',
    block: 'addLinkages(node, tree({ numTasks: 15, fanout: 2 }));',
    preamble: `import type { TaskGraphNode } from '@taskgraph/core';
declare const node: TaskGraphNode;`,
  },
  { file: 'packages/transport-grpc/README.md', block: "const transportUrl = 'grpc://0.0.0.0:0?advertise=10.0.0.5';" },
  {
    file: 'packages/transport-grpc/README.md',
    block: "const transport = await createGrpcTransport('grpc://0.0.0.0:0?advertise=10.0.0.5');",
    preamble: `import type { RequestMeta } from '@taskgraph/api';
declare const meta: RequestMeta;
declare const bytes: Uint8Array;`,
  },
  {
    file: 'packages/transport-grpc/README.md',
    block: 'transport.stats();',
    preamble: `import type { GrpcTransport, GrpcTransportServer } from '@taskgraph/transport-grpc';
declare const transport: GrpcTransport;
declare const server: GrpcTransportServer;`,
  },
  {
    file: 'packages/transport-grpc/README.md',
    block: 'const codec = protobufCodec(GradientSchema);',
    preamble: `import type { EpochContext, Framework } from '@taskgraph/api';
declare const framework: Framework;
declare const ctx: EpochContext;`,
    // protoc-gen-es output for the block's gradient.proto: the package's test fixture has the same shape.
    files: {
      'gen/regression/v1/gradient_pb.ts': (dir) =>
        `export { GradientSchema, type Gradient } from '${relative(join(dir, 'gen/regression/v1'), join(root, 'packages/transport-grpc/test/proto-fixture.js'))}';\n`,
    },
  },
  {
    file: 'packages/transport-local/README.md',
    block: "const transport = await createLocalTransport('local://');",
    preamble: `import type { RequestMeta } from '@taskgraph/api';
declare const meta: RequestMeta;`,
  },
  {
    file: 'packages/workloads/README.md',
    block: 'node.setTaskBuilder(new RegressionTaskBuilder(',
    preamble: `import type { Controller, TaskGraphNode } from '@taskgraph/core';
declare const controller: Controller;
declare const node: TaskGraphNode;
declare const sums: Map<number, number>;`,
  },
  {
    file: 'packages/workloads/README.md',
    block: 'node.setTaskBuilder(new RunningStatsTaskBuilder(',
    preamble: `import type { Controller, TaskGraphNode } from '@taskgraph/core';
import type { RunningStatsRecord } from '@taskgraph/workloads';
declare const controller: Controller;
declare const node: TaskGraphNode;
declare const records: RunningStatsRecord[];`,
  },
  { file: 'packages/workloads/README.md', block: 'const { dir, files } = brownCorpus();' },
];

/** Backends a run needs, started by this test. */
interface Backends {
  etcd(): Promise<EtcdServer>;
  etcdCluster(): Promise<EtcdCluster>;
  consul(): Promise<string>;
}

interface TsRunEntry extends Where {
  /** What the output (stdout) must match. */
  readonly expect: readonly RegExp[];
  /** Servers the block names, pointed at ones this test starts: [text in the block, its replacement]. */
  readonly substitute?: (backends: Backends) => Promise<readonly (readonly [string, string])[]>;
}

/** Whole programs, run with tsx from a file in this package (so the workspace packages resolve). */
const TS_RUN: readonly TsRunEntry[] = [
  { file: 'README.md', block: "import { createBootstrap, createController, resolveCoordinator, resolveTransport, installSignalHandlers } from '@taskgraph/core';", expect: [/reason: 'job-done'/] },
  { file: 'packages/coord-memory/README.md', block: "await createMemoryCoordinator('memory://demo?namespace=jobs')", expect: [/^$/] },
  {
    file: 'packages/coord-consul/README.md',
    block: "await createConsulCoordinator('consul://127.0.0.1:8500?namespace=tg')",
    expect: [/^holding task 0 with fencing token \S+\n$/],
    // The Consul emulator of @taskgraph/emulators stands in for the agent on 127.0.0.1:8500.
    substitute: async (b) => [['127.0.0.1:8500', await b.consul()]],
  },
  {
    file: 'packages/coord-etcd/README.md',
    block: "await createEtcdCoordinator('etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379?namespace=tg')",
    expect: [/^holding task 0 with fencing token \S+\n$/],
    // The block's three-member cluster: a real one, started by this test.
    substitute: async (b) => [['10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379', (await b.etcdCluster()).clientAddresses]],
  },
  {
    file: 'packages/core/README.md',
    block: "import { context, propagation, trace } from '@opentelemetry/api';",
    // What its comments say it prints.
    expect: [/'taskgraph\.claim': 3/, /served in the same trace: true/],
  },
];

/** Blocks run by a harness of their own (the tests at the end of this file). */
const CUSTOM_RUN: readonly (Where & { readonly test: string })[] = [
  { file: 'packages/cli/README.md', block: '{ "coordinator": "etcd://127.0.0.1:2379?namespace=tg"', test: 'the CLI config file and the plug-in it names' },
  { file: 'packages/cli/README.md', block: '// redis-plugin.mjs', test: 'the CLI config file and the plug-in it names' },
  { file: 'packages/core/README.md', block: 'export default defineMasterWorkerApp({', test: 'the master/worker application, run by taskgraph run' },
];

// ---------------------------------------------------------------------------
// Lines of sh blocks
// ---------------------------------------------------------------------------

interface LineRule {
  readonly file: string;
  /** The whole command as the block writes it, without its trailing comment (whitespace runs count as one space). */
  readonly command: string;
}

/** Lines of runnable blocks that are not run, with why. */
const SH_SKIP: readonly (LineRule & { readonly reason: string })[] = [
  { file: 'packages/cli/README.md', command: 'taskgraph node regression --job reg1', reason: 'one node of a 15-task job per machine; the --count 16 line after it runs the same job in one process' },
  { file: 'tools/repo-checks/README.md', command: 'npx vitest run', reason: 'runs this test' },
];

/**
 * Lines run with addresses of other machines pointed at this one ($ETCD: the etcd this test starts).
 * The CLI README's multi-machine lines: the store at 10.0.0.1 becomes that etcd and the node's
 * address a loopback one, so `job create`, the 16-node host (which runs the whole job), `job list`,
 * `status`, `watch` and `delete` all run; the one-node-per-machine line is in SH_SKIP.
 */
const SH_SUBSTITUTE: readonly (LineRule & { readonly replace: readonly (readonly [string, string])[] })[] = [
  {
    file: 'packages/cli/README.md',
    command: "export TASKGRAPH_COORDINATOR='etcd://10.0.0.1:2379?namespace=prod' TASKGRAPH_TRANSPORT='grpc://0.0.0.0:7000?advertise=10.0.0.7'",
    replace: [
      ['10.0.0.1:2379', '$ETCD'],
      ['grpc://0.0.0.0:7000?advertise=10.0.0.7', 'grpc://127.0.0.1:0'],
    ],
  },
];

/** What a run prints, where the block does not show it but the README's text says it. */
const SH_EXPECT: readonly (LineRule & { readonly output: readonly string[] })[] = [
  {
    file: 'README.md',
    command: 'npx taskgraph run ./apps/running-stats/dist/app.js --tasks 7 --backups 1 --standbys 1 --coordinator memory:// --arg wait-backups=1 --arg kill-at=4:2',
    output: ['running-stats: PASS', '1 promotion(s) with the state'],
  },
  { file: 'README.md', command: 'npx taskgraph run mapreduce --workers 4 --standbys 1 --coordinator memory://', output: ['PASS: count exact (equal to a single-process count)'] },
  { file: 'apps/regression/README.md', command: 'npm start', output: ['sums are exact'] },
  { file: 'README.md', command: 'npm start', output: ['sums are exact'] },
];

/** Commands that serve until stopped: started, checked ready, then stopped with SIGTERM. */
const SERVERS: readonly { readonly prefix: string; readonly ready: RegExp }[] = [{ prefix: 'npx taskgraph-emulator ', ready: /emulator listening on \S+/ }];

const PRECONDITIONS: Readonly<Record<string, string>> = {
  'npm ci': 'the checkout this test runs in is installed (running it would replace node_modules under the running tests)',
  'npm run build': 'turbo.json makes this test depend on the builds it uses (@taskgraph/repo-checks#test)',
};

const SH_LANGS = new Set(['sh', 'bash', 'shell']);

// ---------------------------------------------------------------------------
// Who covers what
// ---------------------------------------------------------------------------

type Kind = 'run-sh' | 'run-ts' | 'run-custom' | 'typecheck' | 'illustrative' | 'covered-by-test';

interface Plan {
  readonly kind: Map<Block, Kind>;
  readonly typecheck: Map<Block, TypecheckEntry>;
  readonly tsRun: Map<Block, TsRunEntry>;
  readonly problems: string[];
}

function plan(blocks: readonly Block[]): Plan {
  const kind = new Map<Block, Kind>();
  const typecheck = new Map<Block, TypecheckEntry>();
  const tsRun = new Map<Block, TsRunEntry>();
  const problems: string[] = [];
  const claim = <E extends Where>(entries: readonly E[], k: Kind, keep?: Map<Block, E>) => {
    for (const e of entries) {
      const inFile = blocks.filter((b) => b.file === e.file);
      const matches = e.block === '*' ? inFile : inFile.filter((b) => b.body.includes(e.block));
      if (e.block !== '*' && matches.length !== 1) {
        problems.push(
          matches.length === 0
            ? `${e.file}: no code block contains ${JSON.stringify(e.block)} (a stale ${k} entry: remove or update it)`
            : `${e.file}: ${matches.length} code blocks contain ${JSON.stringify(e.block)} (lines ${matches.map((b) => b.line).join(', ')}): make the ${k} entry name one`,
        );
      }
      for (const b of matches) {
        const before = kind.get(b);
        if (before !== undefined) problems.push(`${where(b)}: covered twice (${before} and ${k})`);
        kind.set(b, k);
        keep?.set(b, e);
      }
    }
  };
  claim(ILLUSTRATIVE, 'illustrative');
  claim(COVERED_BY_TEST, 'covered-by-test');
  claim(TYPECHECK, 'typecheck', typecheck);
  claim(TS_RUN, 'run-ts', tsRun);
  claim(CUSTOM_RUN, 'run-custom');
  for (const b of blocks) {
    if (kind.has(b)) continue;
    if (SH_LANGS.has(b.lang)) kind.set(b, 'run-sh');
    else {
      problems.push(
        `${where(b)}: the \`\`\`${b.lang} block (${JSON.stringify(firstLine(b))}) is not covered: run it, type-check it, ` +
          'or list it in ILLUSTRATIVE / COVERED_BY_TEST in tools/repo-checks/test/readme.test.ts with a reason',
      );
    }
  }
  for (const b of blocks) {
    if ((kind.get(b) === 'typecheck' || kind.get(b) === 'run-ts') && b.lang !== 'ts') problems.push(`${where(b)}: a \`\`\`${b.lang} block cannot be type-checked or run as TypeScript`);
  }
  // Line rules must name a line of a block that is run.
  for (const rule of [...SH_SKIP, ...SH_SUBSTITUTE, ...SH_EXPECT]) {
    const found = blocks.some((b) => b.file === rule.file && kind.get(b) === 'run-sh' && shSteps(b).some((s) => bare(s.command) === normalize(rule.command)));
    if (!found) problems.push(`${rule.file}: no line of a run sh block is ${JSON.stringify(rule.command)} (a stale line rule: update or remove it)`);
  }
  return { kind, typecheck, tsRun, problems };
}

function firstLine(b: Block): string {
  return b.body.split('\n').find((l) => l.trim() !== '') ?? '';
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

interface Result {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    // Nothing of the test runner's own setup, nor a store or transport of the environment.
    if (k.startsWith('TASKGRAPH_') || k.startsWith('VITEST') || k === 'NODE_OPTIONS' || k === 'NODE_ENV' || k === 'FORCE_COLOR') continue;
    env[k] = v;
  }
  return { ...env, PATH: `${bin}:${process.env['PATH'] ?? ''}`, NO_COLOR: '1', ...extra };
}

/** Runs `script` with bash in its own process group; the group is killed after `timeoutMs`. */
function runBash(script: string, options: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<Result> {
  return runProcess('bash', ['-c', script], options);
}

function runProcess(command: string, args: readonly string[], options: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? childEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), options.timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** Starts a server command, waits until its output matches `ready`, stops it with SIGTERM. */
async function runServer(script: string, ready: RegExp, options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<{ output: string; result: Result }> {
  const child = spawn('bash', ['-c', script], { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const closed = new Promise<Result>((resolveClosed) => child.on('close', (code, signal) => resolveClosed({ code, signal, stdout, stderr })));
  const seen = new Promise<boolean>((resolveSeen) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (ready.test(stdout + stderr)) resolveSeen(true);
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (ready.test(stdout + stderr)) resolveSeen(true);
    });
    void closed.then(() => resolveSeen(false));
    setTimeout(() => resolveSeen(false), 60_000).unref();
  });
  const up = await seen;
  const output = stdout + stderr;
  // As Ctrl-C would: the whole group (npx, and the server under it), once it had a moment to settle.
  await new Promise((r) => setTimeout(r, 500));
  killGroup(child.pid, 'SIGTERM');
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    killGroup(child.pid, 'SIGKILL');
  }, 15_000);
  const result = await closed;
  clearTimeout(timer);
  if (!up) throw new Error(`never printed ${String(ready)}; output:\n${tail(result.stdout + result.stderr)}`);
  if (killed) throw new Error(`still running 15 s after SIGTERM; output:\n${tail(result.stdout + result.stderr)}`);
  return { output, result };
}

function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

const normalize = (s: string) => s.replace(/\s+/g, ' ').trim();

// ---------------------------------------------------------------------------
// Backends started on demand
// ---------------------------------------------------------------------------

let etcdServer: Promise<EtcdServer> | undefined;
let etcdClusterStarted: Promise<EtcdCluster> | undefined;
let consulEmulator: Promise<{ address: string; close(): Promise<void> }> | undefined;

const backends: Backends = {
  etcd: () => (etcdServer ??= startEtcd()),
  etcdCluster: () => (etcdClusterStarted ??= startEtcdCluster(3)),
  consul: async () => {
    consulEmulator ??= startConsulEmulator().then((c) => ({ address: `127.0.0.1:${c.port}`, close: () => c.close() }));
    return (await consulEmulator).address;
  },
};

let tmpDir: string | undefined;
/** A directory in this package (so the workspace packages resolve from it), removed at the end. */
function tmp(): string {
  tmpDir ??= mkdtempSync(join(packageDir, '.readme-blocks-'));
  return tmpDir;
}

afterAll(async () => {
  const stops: Promise<unknown>[] = [];
  if (etcdServer) stops.push(etcdServer.then((s) => s.cleanup()));
  if (etcdClusterStarted) stops.push(etcdClusterStarted.then((c) => c.cleanup()));
  if (consulEmulator) stops.push(consulEmulator.then((c) => c.close()));
  await Promise.allSettled(stops);
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
}, 60_000);

/** `127.0.0.1:2379` (a local etcd) becomes the test's etcd; `$ETCD` in a substitution likewise. */
async function withEtcd(text: string): Promise<string> {
  if (!text.includes('127.0.0.1:2379') && !text.includes('$ETCD')) return text;
  const etcd = await backends.etcd();
  return text.replaceAll('127.0.0.1:2379', etcd.clientAddress).replaceAll('$ETCD', etcd.clientAddress);
}

// ---------------------------------------------------------------------------
// sh blocks, line by line
// ---------------------------------------------------------------------------

interface ShStep {
  /** Offset of the line in the block's body (0-based). */
  readonly offset: number;
  readonly command: string;
  /** Output the block shows for it: comment lines right after it that look like output (`app: ...`, `PASS`, `FAIL`, `... `). */
  readonly samples: string[];
}

/** The commands of an sh block, continuation lines joined and `a && b` split, each with the output samples after it. */
function shSteps(b: Block): ShStep[] {
  const lines = b.body.split('\n');
  const steps: ShStep[] = [];
  let last: ShStep | undefined;
  for (let i = 0; i < lines.length; i++) {
    const offset = i;
    let text = lines[i]!;
    while (text.endsWith('\\') && i + 1 < lines.length) text = `${text.slice(0, -1).trimEnd()} ${lines[++i]!.trim()}`;
    const trimmed = text.trim();
    if (trimmed === '') {
      last = undefined;
      continue;
    }
    if (trimmed.startsWith('#')) {
      const comment = trimmed.replace(/^#\s?/, '');
      if (last === undefined) continue;
      if (/^\s{2,}\S/.test(comment) && last.samples.length > 0) {
        last.samples[last.samples.length - 1] += ` ${comment.trim()}`;
      } else if (/^(\.\.\. )?([a-z][\w-]*: |PASS\b|FAIL\b)/.test(comment)) {
        last.samples.push(comment.trim());
      }
      continue;
    }
    for (const command of trimmed.split(/\s+&&\s+/)) {
      last = { offset, command: command.trim(), samples: [] };
      steps.push(last);
    }
  }
  return steps;
}

/** The command without its trailing comment, whitespace runs as one space (for matching and messages). */
function bare(command: string): string {
  return normalize(command.replace(/\s+#.*$/, ''));
}

const workspacePackages = new Map<string, boolean>();
for (const parent of ['packages', 'apps', 'tools', '.']) {
  const dirs = parent === '.' ? ['bench'] : existsSync(join(root, parent)) ? readdirSync(join(root, parent)).map((d) => `${parent}/${d}`) : [];
  for (const dir of dirs) {
    const file = join(root, dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; private?: boolean };
    if (pkg.name) workspacePackages.set(pkg.name, pkg.private === true);
  }
}

/** `npm install a b`: each is a package of this repository that is published (not private). */
function checkInstall(command: string): string[] {
  const names = bare(command)
    .split(/\s+/)
    .slice(2)
    .filter((t) => !t.startsWith('-'));
  const problems: string[] = [];
  if (names.length === 0) problems.push('names no package');
  for (const name of names) {
    const isPrivate = workspacePackages.get(name);
    if (isPrivate === undefined) problems.push(`${name} is not a package of this repository`);
    else if (isPrivate) problems.push(`${name} is private: it is never published, so it cannot be installed`);
  }
  return problems;
}

/** Counts for the summary. */
const tally = { blocksRun: 0, blocksInstallOnly: 0, runLines: 0, preconditions: 0, installs: 0, skipped: 0, servers: 0, outputSamples: 0 };

async function runShBlock(b: Block): Promise<void> {
  const before = { ...tally };
  await runShSteps(b);
  if (tally.runLines > before.runLines) tally.blocksRun++;
  else if (tally.installs > before.installs) tally.blocksInstallOnly++;
  else throw new Error(`${where(b)}: no line of this block runs here: list the block in ILLUSTRATIVE with a reason`);
}

/**
 * The lines of an sh block, in order, from the repository root:
 * - `npm ci`, `npm run build`: PRECONDITIONS, already met, not run;
 * - `npm install a b`: each must be a published (not private) package of this repository;
 * - a line in SH_SKIP: not run, for its reason;
 * - `cd DIR` and `export ...`: apply to the lines after them;
 * - `taskgraph`, `npx taskgraph`, `npm start`, `npm run`, `npx tsc`, `npx eslint`: run with bash,
 *   exit code 0 (1 when the block shows `FAIL` for it), the block's output samples and
 *   SH_EXPECT in the output, and for `taskgraph run` a last line starting `PASS`/`FAIL`;
 *   a SERVERS command is started, waited for until ready, and stopped with SIGTERM;
 * - anything else fails the test (say why it cannot run, in SH_SKIP or ILLUSTRATIVE).
 */
async function runShSteps(b: Block): Promise<void> {
  let cwd = root;
  const exports: string[] = [];
  for (const step of shSteps(b)) {
    const at = `${where(b, step.offset + 1)}: \`${bare(step.command)}\``;
    const command = bare(step.command);
    const rule = <R extends LineRule>(rules: readonly R[]) => rules.find((r) => r.file === b.file && command === normalize(r.command));
    if (rule(SH_SKIP)) {
      tally.skipped++;
      continue;
    }
    if (PRECONDITIONS[command] !== undefined) {
      tally.preconditions++;
      continue;
    }
    if (/^npm (install|i)\b/.test(command)) {
      const problems = checkInstall(command);
      expect(problems, `${at}: ${problems.join('; ')}`).toEqual([]);
      tally.installs++;
      continue;
    }
    let script = step.command;
    for (const [from, to] of rule(SH_SUBSTITUTE)?.replace ?? []) script = script.replaceAll(from, to);
    script = await withEtcd(script);
    if (/^cd\s/.test(command)) {
      cwd = resolve(cwd, command.slice(3).trim());
      expect(existsSync(cwd) && statSync(cwd).isDirectory(), `${at}: no such directory`).toBe(true);
      tally.runLines++;
      continue;
    }
    if (/^export\s/.test(command)) {
      exports.push(script);
      tally.runLines++;
      continue;
    }
    if (!/^(npx taskgraph(-emulator)?|taskgraph|npm start|npm run|npx (tsc|eslint))\b/.test(command)) {
      throw new Error(
        `${at} is not a command this test knows how to run: list it in SH_SKIP (or the block in ILLUSTRATIVE) ` +
          'in tools/repo-checks/test/readme.test.ts with a reason, or teach runShBlock to run it',
      );
    }
    const full = [...exports, script].join('\n');
    const server = SERVERS.find((s) => command.startsWith(s.prefix));
    if (server) {
      await runServerStep(at, full, server, cwd);
      tally.servers++;
      tally.runLines++;
      continue;
    }
    const result = await runBash(full, { cwd, timeoutMs: 150_000, env: childEnv() });
    const output = `${result.stdout}\n${result.stderr}`;
    const fails = step.samples.some((s) => /\bFAIL\b/.test(s));
    const context = `${at} (run as ${JSON.stringify(script)} in ${relative(root, cwd) || '.'})\nexit ${String(result.code)}${result.signal ? ` (${result.signal})` : ''}; output:\n${tail(output)}`;
    expect(result.code, context).toBe(fails ? 1 : 0);
    if (/^(npx )?taskgraph run\b/.test(command)) {
      // `run`'s last line on stdout starts with PASS or FAIL.
      const lastLine = result.stdout.trimEnd().split('\n').pop() ?? '';
      expect(lastLine.startsWith(fails ? 'FAIL' : 'PASS'), `${context}\nthe last line is not ${fails ? 'FAIL' : 'PASS'}`).toBe(true);
    }
    const wanted = [...step.samples.flatMap(sampleFragments), ...(rule(SH_EXPECT)?.output ?? [])];
    for (const fragment of wanted) expect(normalize(output).includes(normalize(fragment)), `${context}\nwhat the README shows is missing: ${JSON.stringify(fragment)}`).toBe(true);
    tally.outputSamples += wanted.length;
    tally.runLines++;
  }
}

/** The parts of an output sample between its elisions (`...`, `(...)`), each of which must be printed. */
function sampleFragments(sample: string): string[] {
  return sample
    .replace(/^\.\.\.\s*/, '')
    .split(/\(\.\.\.\)|\.\.\.|…/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

async function runServerStep(at: string, script: string, server: (typeof SERVERS)[number], cwd: string): Promise<void> {
  // Files the command writes (`--kubeconfig ./kubeconfig`, and the CA beside it) are removed afterwards, unless they were there before.
  const kubeconfig = /--kubeconfig\s+(\S+)/.exec(script)?.[1];
  const written = kubeconfig ? [resolve(cwd, kubeconfig), `${resolve(cwd, kubeconfig)}.ca.crt`] : [];
  const existed = written.filter((f) => existsSync(f));
  try {
    const { output } = await runServer(script, server.ready, { cwd, env: childEnv() }).catch((err: unknown) => {
      throw new Error(`${at}: ${err instanceof Error ? err.message : String(err)}`);
    });
    for (const f of written) expect(existsSync(f) || existed.includes(f), `${at}: ${relative(root, f)} was not written\n${tail(output)}`).toBe(true);
  } finally {
    for (const f of written) if (!existed.includes(f)) rmSync(f, { force: true });
  }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

const coverage = plan(allBlocks);
const blocksOf = (k: Kind) => allBlocks.filter((b) => coverage.kind.get(b) === k);

/**
 * Compiles every TYPECHECK block (its preamble first) in one tsc program against the
 * workspace sources; returns the errors in the blocks, at their README lines.
 */
async function typecheck(): Promise<string[]> {
  const dir = join(tmp(), 'typecheck');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      extends: join(root, 'tsconfig.base.json'),
      compilerOptions: { baseUrl: root, noEmit: true },
      include: ['*.ts', 'gen/**/*.ts'],
    }),
  );
  // A third-party plug-in package the READMEs use as their example.
  writeFileSync(join(dir, 'ambient.d.ts'), "declare module 'taskgraph-coord-redis';\n");
  const files = new Map<string, { block: Block; entry: TypecheckEntry; offset: number }>();
  for (const b of blocksOf('typecheck')) {
    const entry = coverage.typecheck.get(b)!;
    const preamble = entry.preamble ? `${entry.preamble}\n` : '';
    const name = `check-${b.file.replace(/\W+/g, '-')}-${b.line}.ts`;
    const preambleLines = preamble.split('\n').length - 1;
    if (entry.wrap) {
      // The imports go on one line before the wrapper; the block's other lines keep their order after it.
      const lines = b.body.split('\n');
      const imports = lines.filter((l) => /^import\s/.test(l)).join(' ');
      const rest = lines.map((l) => (/^import\s/.test(l) ? '' : l)).join('\n');
      writeFileSync(join(dir, name), `${preamble}${imports}\nexport async function readmeBlock(): Promise<void> {\n${rest}\n}\n`);
      files.set(name, { block: b, entry, offset: preambleLines + 2 });
    } else {
      writeFileSync(join(dir, name), `${preamble}${b.body}\nexport {};\n`);
      files.set(name, { block: b, entry, offset: preambleLines });
    }
    for (const [path, content] of Object.entries(entry.files ?? {})) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), content(dir));
    }
  }
  const result = await runProcess(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json'), '--pretty', 'false'], {
    cwd: dir,
    timeoutMs: 240_000,
  });
  // One diagnostic per line that starts with a location; the indented lines after it belong to it.
  const diagnostics: { file: string; line: number; code: string; message: string }[] = [];
  for (const line of result.stdout.split('\n')) {
    const m = /^(.+?)\((\d+),\d+\): error (TS\d+): (.*)$/.exec(line);
    if (m) diagnostics.push({ file: m[1]!, line: Number(m[2]), code: m[3]!, message: m[4]! });
    else if (/^\s/.test(line) && diagnostics.length > 0) diagnostics[diagnostics.length - 1]!.message += `\n${line}`;
  }
  const errors: string[] = [];
  for (const d of diagnostics) {
    const name = relative(dir, resolve(dir, d.file));
    const source = files.get(name);
    // Errors in the workspace's own sources are their packages' typecheck's to report.
    if (source === undefined) continue;
    if (source.entry.ignore?.some((i) => i.code === d.code && i.message.test(d.message))) continue;
    const readmeLine = d.line - source.offset;
    const at = readmeLine >= 1 ? where(source.block, readmeLine) : `${where(source.block)} (its preamble in readme.test.ts)`;
    errors.push(`${at}: ${d.code} ${d.message}`);
  }
  if (result.signal !== null) errors.push(`tsc was killed (${result.signal}):\n${tail(result.stdout + result.stderr)}`);
  if (files.size !== blocksOf('typecheck').length) errors.push(`${files.size} files for ${blocksOf('typecheck').length} blocks`);
  return errors;
}


describe('README code blocks', () => {
  // tsc runs (one process, one core) while the blocks below run.
  let typechecked: Promise<string[]> | undefined;
  beforeAll(() => {
    typechecked = typecheck();
    typechecked.catch(() => undefined);
  });

  it('are each run, type-checked, or listed with a reason', () => {
    expect(allBlocks.length).toBeGreaterThan(0);
    expect(coverage.problems, coverage.problems.join('\n')).toEqual([]);
    const counts: Record<string, number> = {};
    for (const k of coverage.kind.values()) counts[k] = (counts[k] ?? 0) + 1;
    console.log(`README code blocks: ${allBlocks.length} in ${new Set(allBlocks.map((b) => b.file)).size} files; ${JSON.stringify(counts)}`);
  });

  describe('sh blocks, run line by line', () => {
    for (const b of blocksOf('run-sh')) {
      it(`${where(b)}: ${firstLine(b)}`, async () => {
        await runShBlock(b);
      }, 600_000);
    }
  });

  describe('TypeScript programs, run with tsx', () => {
    for (const b of blocksOf('run-ts')) {
      const entry = coverage.tsRun.get(b)!;
      it(`${where(b)}: ${firstLine(b)}`, async () => {
        let source = await withEtcd(b.body);
        for (const [from, to] of (await entry.substitute?.(backends)) ?? []) {
          expect(source.includes(from), `${where(b)}: the block no longer names ${from}`).toBe(true);
          source = source.replaceAll(from, to);
        }
        const file = join(tmp(), `run-${b.file.replace(/\W+/g, '-')}-${b.line}.ts`);
        writeFileSync(file, source);
        const result = await runProcess(join(bin, 'tsx'), [file], { cwd: root, timeoutMs: 60_000 });
        const context = `${where(b)}: exit ${String(result.code)}${result.signal ? ` (${result.signal})` : ''}; output:\n${tail(result.stdout + result.stderr)}`;
        expect(result.code, context).toBe(0);
        for (const wanted of entry.expect) expect(result.stdout, context).toMatch(wanted);
      }, 120_000);
    }
  });

  it('TypeScript fragments compile against the workspace sources', async () => {
    const errors = await typechecked!;
    expect(errors, errors.join('\n')).toEqual([]);
  }, 300_000);

  it('the CLI config file and the plug-in it names (packages/cli/README.md)', async () => {
    const block = (text: string) => allBlocks.find((b) => b.file === 'packages/cli/README.md' && b.body.includes(text))!;
    const config = block('{ "coordinator": "etcd://127.0.0.1:2379?namespace=tg"');
    const plugin = block('// redis-plugin.mjs');
    const dir = join(tmp(), 'cli-config');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'taskgraph.config.json'), await withEtcd(config.body));
    expect(firstLine(plugin)).toBe('// redis-plugin.mjs');
    expect(config.body).toContain('"./redis-plugin.mjs"');
    writeFileSync(join(dir, 'redis-plugin.mjs'), plugin.body);
    // The config file (./taskgraph.config.json, the default) gives the store; the plug-in loads.
    const list = await runBash('taskgraph job list', { cwd: dir, timeoutMs: 60_000 });
    expect(list.code, `${where(config)}: taskgraph job list with this config: exit ${String(list.code)}\n${tail(list.stdout + list.stderr)}`).toBe(0);
    // The plug-in registered redis://: the command knows the scheme, and which package it needs.
    const redis = await runBash('taskgraph job list --coordinator redis://10.0.0.1:6379', { cwd: dir, timeoutMs: 60_000 });
    expect(redis.code, `${where(plugin)}: ${tail(redis.stdout + redis.stderr)}`).toBe(2);
    expect(redis.stdout + redis.stderr).toContain('needs the package taskgraph-coord-redis');
  }, 120_000);

  it('the master/worker application, run by taskgraph run (packages/core/README.md)', async () => {
    const b = allBlocks.find((x) => x.file === 'packages/core/README.md' && x.body.includes('export default defineMasterWorkerApp({'))!;
    const dir = join(tmp(), 'master-worker');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'squares.ts'), b.body);
    // The block's master reports { sum: 30 } (its comment): a verify() on top of the block's app checks it.
    writeFileSync(
      join(dir, 'squares-checked.ts'),
      `import app from './squares.ts';
export default {
  ...app,
  verify: (_ctx: unknown, results: readonly unknown[]) => {
    const ok = results.some((r) => (r as { sum?: unknown }).sum === 30);
    return { ok, message: \`reported \${JSON.stringify(results)}\` };
  },
};
`,
    );
    const result = await runProcess(process.execPath, ['--import', 'tsx', join(root, 'packages/cli/dist/cli.js'), 'run', join(dir, 'squares-checked.ts'), '--workers', '2'], {
      cwd: root,
      timeoutMs: 90_000,
    });
    const context = `${where(b)}: exit ${String(result.code)}; output:\n${tail(result.stdout + result.stderr)}`;
    expect(result.code, context).toBe(0);
    expect(result.stdout, context).toContain('reported [{"sum":30}]');
    expect(result.stdout.trimEnd().split('\n').pop(), context).toMatch(/^PASS: job squares-/);
  }, 120_000);
});

describe('hints the CLI prints', () => {
  // Every `(e.g. <url>)` in the CLI's messages.
  const cliSources = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? cliSources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
  const hinted = new Set<string>();
  for (const file of cliSources(join(root, 'packages/cli/src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/\(e\.g\. ([a-z][a-z0-9+.-]*:\/\/[^\s)]*)\)/g)) hinted.add(m[1]!);
  }

  it('the CLI says which coordinator URL to pass when none is configured', async () => {
    expect(hinted.size, 'no "(e.g. <url>)" hint found in packages/cli/src').toBeGreaterThan(0);
    const dir = join(tmp(), 'no-config');
    mkdirSync(dir, { recursive: true });
    const result = await runBash('taskgraph job list', { cwd: dir, timeoutMs: 60_000 });
    expect(result.code).toBe(2);
    const shown = /\(e\.g\. (\S+?)\)/.exec(result.stdout + result.stderr)?.[1];
    expect(shown, tail(result.stdout + result.stderr)).toBeDefined();
    expect(hinted.has(shown!)).toBe(true);
  }, 60_000);

  it('the example URL of each hint is accepted, and connects to a real etcd', async () => {
    for (const url of hinted) {
      // As printed: the URL is valid (the etcd coordinator connects lazily, so nothing need listen there).
      await (await resolveCoordinator(url)).close();
      // A local etcd at the hint's address: the one this test started.
      const local = await withEtcd(url);
      const coordinator = await resolveCoordinator(local);
      try {
        const key = `readme-hint-check-${process.pid}`;
        await coordinator.create(key, new TextEncoder().encode('ok'));
        expect(new TextDecoder().decode((await coordinator.get(key))?.value)).toBe('ok');
        await coordinator.delete(key, (await coordinator.get(key))!.version);
      } finally {
        await coordinator.close();
      }
    }
  }, 60_000);
});

describe('the check itself', () => {
  const readme = ['# x', '', '```ts', 'const a = 1;', '```', '', '  ~~~sh', '  cp a b', '  ~~~', ''].join('\n');
  const synthetic = extractBlocks('README.md', readme);

  it('finds fenced blocks of any language, indented ones too', () => {
    expect(synthetic).toEqual([
      { file: 'README.md', line: 3, lang: 'ts', body: 'const a = 1;' },
      { file: 'README.md', line: 7, lang: 'sh', body: 'cp a b' },
    ]);
    expect(() => extractBlocks('x.md', '```sh\nopen')).toThrow('x.md:1: the code block is never closed');
  });

  it('names the file and line of a block nobody covers, and of a stale entry', () => {
    const problems = plan([...allBlocks, { ...synthetic[0]!, line: 9999 }]).problems;
    expect(problems).toContain(
      'README.md:9999: the ```ts block ("const a = 1;") is not covered: run it, type-check it, or list it in ILLUSTRATIVE / COVERED_BY_TEST in tools/repo-checks/test/readme.test.ts with a reason',
    );
    const withoutOne = plan(allBlocks.filter((b) => !(b.file === 'docs/concepts.md' && b.lang === 'mermaid'))).problems;
    expect(withoutOne.join('\n')).toContain('docs/concepts.md: no code block contains "sequenceDiagram" (a stale illustrative entry');
  });

  it('refuses to run a command it does not know', async () => {
    await expect(runShBlock({ ...synthetic[1]!, line: 41 })).rejects.toThrow('README.md:42: `cp a b` is not a command this test knows how to run');
  });

  it('splits an output sample at its elisions', () => {
    expect(sampleFragments('... app: PASS: 7 tasks (...); 1 promotion ...')).toEqual(['app: PASS: 7 tasks', '; 1 promotion']);
    const steps = shSteps({ file: 'x.md', line: 1, lang: 'sh', body: 'npm ci && taskgraph run x \\\n  --tasks 2\n# x: PASS: all\n#   of it\n\n# a description\ntaskgraph job list' });
    expect(steps).toEqual([
      { offset: 0, command: 'npm ci', samples: [] },
      { offset: 0, command: 'taskgraph run x --tasks 2', samples: ['x: PASS: all of it'] },
      { offset: 6, command: 'taskgraph job list', samples: [] },
    ]);
  });
});

describe('the summary', () => {
  it('counts the lines of the sh blocks', () => {
    console.log(`sh lines: ${JSON.stringify(tally)}`);
  });
});
