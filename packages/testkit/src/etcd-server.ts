/**
 * Real etcd servers for tests: the `etcd` binary (Debian's `etcd-server`) on free
 * loopback ports with a temporary data dir, one member or a small cluster, with
 * the faults tests need: stop, kill -9, pause (SIGSTOP) and restart on the same
 * data dir and ports. etcd's own output goes to a log file in its data dir, and
 * the tail of that log is part of every startup error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BackendNotInstalledError, InvalidArgumentError, UnavailableError } from '@taskgraph/api';
import { guardChild } from './process/child-guard.js';
import { freePorts } from './process/free-port.js';

const LOOPBACK = '127.0.0.1';
const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const PORT_ATTEMPTS = 5;

export interface StartEtcdOptions {
  /** etcd's data dir; created when missing. Default: a new temporary dir. `cleanup()` removes it. */
  readonly dataDir?: string;
  /** The member name. Default `etcd0`. */
  readonly name?: string;
  /** The etcd executable. Default: TASKGRAPH_ETCD_BIN, else `etcd` on the PATH. */
  readonly bin?: string;
  /** How long to wait until etcd answers its health check. Default 30 s. */
  readonly startTimeoutMs?: number;
  /** Extra command-line flags for etcd (e.g. `--auto-compaction-retention=1`). */
  readonly args?: readonly string[];
  /**
   * Also serve clients over TLS, on a second port (`tlsClientAddress`), requiring a
   * client certificate signed by `trustedCaFile`. The plain port stays, for the health check.
   */
  readonly clientTls?: EtcdClientTls;
}

export interface EtcdClientTls {
  /** The server's certificate and key (PEM files), valid for 127.0.0.1. */
  readonly certFile: string;
  readonly keyFile: string;
  /** The CA that signs the clients' certificates. */
  readonly trustedCaFile: string;
}

/** One running (or stopped) etcd member. */
export interface EtcdServer {
  readonly name: string;
  readonly dataDir: string;
  /** etcd's stdout and stderr, appended across restarts. */
  readonly logFile: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** `http://127.0.0.1:<clientPort>` */
  readonly clientUrl: string;
  /** `127.0.0.1:<clientPort>`, the form an `etcd://` URL takes. */
  readonly clientAddress: string;
  /** `127.0.0.1:<port>` of the TLS client port, when started with `clientTls`. */
  readonly tlsClientAddress?: string | undefined;
  /** `[clientUrl]`: what an etcd client takes as hosts. */
  readonly endpoints: readonly string[];
  /** The running process's pid, if it runs. */
  readonly pid: number | undefined;
  readonly running: boolean;
  readonly paused: boolean;
  /** SIGTERM, then waits for the exit (SIGKILL after 10 s). */
  stop(): Promise<void>;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
  /** SIGSTOP: the process keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT after `pause()`. */
  resume(): void;
  /** Stops it if it runs, then starts it again on the same data dir and ports and waits until it is healthy. */
  restart(): Promise<void>;
  /** Kills it if it runs and removes its data dir. */
  cleanup(): Promise<void>;
  /** The last `lines` lines of its log. */
  logTail(lines?: number): string;
}

export interface StartEtcdClusterOptions {
  /** The parent of the members' data dirs. Default: a new temporary dir. `cleanup()` removes it. */
  readonly baseDir?: string;
  readonly bin?: string;
  readonly startTimeoutMs?: number;
  readonly args?: readonly string[];
}

export interface EtcdCluster {
  readonly members: readonly EtcdServer[];
  /** Every member's client URL. */
  readonly endpoints: readonly string[];
  /** Every member's `host:port`, comma-separated: the host list of an `etcd://` URL. */
  readonly clientAddresses: string;
  member(index: number): EtcdServer;
  /** Stops every running member. */
  stop(): Promise<void>;
  /** Kills every member and removes the data dirs. */
  cleanup(): Promise<void>;
}

/** The etcd executable: TASKGRAPH_ETCD_BIN, else `etcd` on the PATH. Throws one clear sentence when there is none. */
export function etcdBinary(bin?: string): string {
  const explicit = bin ?? process.env['TASKGRAPH_ETCD_BIN'];
  if (explicit !== undefined && explicit !== '') {
    if (isExecutable(explicit)) return explicit;
    throw new BackendNotInstalledError(
      `The etcd executable ${JSON.stringify(explicit)} (from ${bin === undefined ? 'TASKGRAPH_ETCD_BIN' : 'the bin option'}) does not exist or is not executable: point it at an etcd binary, or unset it and install Debian's etcd-server (sudo apt-get install -y etcd-server).`,
    );
  }
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'etcd');
    if (isExecutable(candidate)) return candidate;
  }
  throw new BackendNotInstalledError(
    'etcd is not installed: install Debian\'s etcd-server (sudo apt-get install -y etcd-server; `npm test` does it through scripts/ensure-test-deps.mjs) or set TASKGRAPH_ETCD_BIN to an etcd executable.',
  );
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

interface MemberConfig {
  readonly bin: string;
  readonly name: string;
  readonly dataDir: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly initialCluster: string;
  readonly clusterToken: string;
  readonly args: readonly string[];
  readonly startTimeoutMs: number;
  readonly tls?: { readonly port: number; readonly files: EtcdClientTls } | undefined;
}

/** Thrown by a start attempt that lost its port to another process; the caller retries on new ports. */
class PortTakenError extends UnavailableError {}

class EtcdMember implements EtcdServer {
  readonly #config: MemberConfig;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #paused = false;

  constructor(config: MemberConfig) {
    this.#config = config;
  }

  get name(): string {
    return this.#config.name;
  }
  get dataDir(): string {
    return this.#config.dataDir;
  }
  get logFile(): string {
    return join(this.#config.dataDir, 'etcd.log');
  }
  get clientPort(): number {
    return this.#config.clientPort;
  }
  get peerPort(): number {
    return this.#config.peerPort;
  }
  get clientUrl(): string {
    return `http://${LOOPBACK}:${this.#config.clientPort}`;
  }
  get clientAddress(): string {
    return `${LOOPBACK}:${this.#config.clientPort}`;
  }
  get tlsClientAddress(): string | undefined {
    return this.#config.tls === undefined ? undefined : `${LOOPBACK}:${this.#config.tls.port}`;
  }
  get peerUrl(): string {
    return `http://${LOOPBACK}:${this.#config.peerPort}`;
  }
  get endpoints(): readonly string[] {
    return [this.clientUrl];
  }
  get pid(): number | undefined {
    return this.running ? this.#child?.pid : undefined;
  }
  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }
  get paused(): boolean {
    return this.running && this.#paused;
  }

  /** Spawns etcd and waits until it answers its health check; kills it if it does not. */
  async start(): Promise<void> {
    if (this.running) return;
    await mkdir(this.#config.dataDir, { recursive: true, mode: 0o700 });
    this.#spawn();
    try {
      await this.#waitHealthy(this.#config.startTimeoutMs);
    } catch (err) {
      await this.kill();
      throw err;
    }
  }

  #clientUrlArgs(): string[] {
    const tls = this.#config.tls;
    if (tls === undefined) return [`--listen-client-urls=${this.clientUrl}`, `--advertise-client-urls=${this.clientUrl}`];
    const urls = `${this.clientUrl},https://${LOOPBACK}:${tls.port}`;
    return [
      `--listen-client-urls=${urls}`,
      `--advertise-client-urls=${urls}`,
      `--cert-file=${tls.files.certFile}`,
      `--key-file=${tls.files.keyFile}`,
      `--trusted-ca-file=${tls.files.trustedCaFile}`,
      '--client-cert-auth',
    ];
  }

  #spawn(): void {
    const c = this.#config;
    const args = [
      `--name=${c.name}`,
      `--data-dir=${c.dataDir}`,
      ...this.#clientUrlArgs(),
      `--listen-peer-urls=${this.peerUrl}`,
      `--initial-advertise-peer-urls=${this.peerUrl}`,
      `--initial-cluster=${c.initialCluster}`,
      `--initial-cluster-token=${c.clusterToken}`,
      '--initial-cluster-state=new',
      '--logger=zap',
      '--log-outputs=stderr',
      ...c.args,
    ];
    const log = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(c.bin, args, { stdio: ['ignore', log, log] });
    } finally {
      closeSync(log);
    }
    guardChild(child);
    this.#child = child;
    this.#paused = false;
    this.#exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    // A spawn failure (ENOENT, EACCES) arrives as an event; it also ends the process.
    child.once('error', () => undefined);
  }

  async #waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) {
        const tail = this.logTail();
        const how = this.#child?.exitCode !== null ? `exited with code ${String(this.#child?.exitCode)}` : `was killed by ${String(this.#child?.signalCode)}`;
        const message = `etcd ${this.name} ${how} while starting on ports ${this.clientPort}/${this.peerPort} (log ${this.logFile}):\n${tail}`;
        if (/address already in use/i.test(tail)) throw new PortTakenError(message);
        throw new UnavailableError(message);
      }
      if (await healthy(this.clientPort)) return;
      if (Date.now() >= deadline) {
        throw new UnavailableError(`etcd ${this.name} did not become healthy within ${timeoutMs} ms (log ${this.logFile}):\n${this.logTail()}`);
      }
      await sleep(100);
    }
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || !this.running) return;
    if (this.#paused) this.resume();
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    try {
      await this.#exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    const child = this.#child;
    if (!child || !this.running) return;
    child.kill('SIGKILL');
    await this.#exited;
    this.#paused = false;
  }

  pause(): void {
    if (!this.running) throw new InvalidArgumentError(`etcd ${this.name} is not running; it cannot be paused`);
    this.#child?.kill('SIGSTOP');
    this.#paused = true;
  }

  resume(): void {
    if (!this.running) return;
    this.#child?.kill('SIGCONT');
    this.#paused = false;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async cleanup(): Promise<void> {
    await this.kill();
    await rm(this.#config.dataDir, { recursive: true, force: true });
  }

  logTail(lines = 40): string {
    try {
      const text = readFileSync(this.logFile, 'utf8');
      return text.split('\n').filter((l) => l !== '').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

function healthy(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: LOOPBACK, port, path: '/health', method: 'GET', agent: false, timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: unknown }).health === 'true');
        } catch {
          resolve(false);
        }
      });
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function token(): string {
  return `taskgraph-${randomBytes(6).toString('hex')}`;
}

function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/.test(name)) {
    throw new InvalidArgumentError(`etcd member name ${JSON.stringify(name)} must be letters, digits, "_" or "-"`);
  }
}

/** Starts one etcd member on free loopback ports and waits until it is healthy. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  const bin = etcdBinary(options.bin);
  const name = options.name ?? 'etcd0';
  checkName(name);
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'taskgraph-etcd-')));
  const fresh = !existsSync(join(dataDir, 'member'));
  const ownDir = options.dataDir === undefined;
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    const [clientPort, peerPort, tlsPort] = (await freePorts(3)) as [number, number, number];
    const member = new EtcdMember({
      bin,
      name,
      dataDir,
      clientPort,
      peerPort,
      initialCluster: `${name}=http://${LOOPBACK}:${peerPort}`,
      clusterToken: token(),
      args: options.args ?? [],
      startTimeoutMs: timeoutMs,
      tls: options.clientTls === undefined ? undefined : { port: tlsPort, files: options.clientTls },
    });
    try {
      await member.start();
      return member;
    } catch (err) {
      const retry = err instanceof PortTakenError && attempt < PORT_ATTEMPTS;
      // The error carries the log's tail; a dir we made for a server that never ran is of no further use.
      if (ownDir && !retry) await rm(dataDir, { recursive: true, force: true });
      else if (fresh) await rm(join(dataDir, 'member'), { recursive: true, force: true });
      if (!retry) throw err;
    }
  }
}

/** Starts a cluster of `size` members on loopback and waits until every member is healthy. */
export async function startEtcdCluster(size = 3, options: StartEtcdClusterOptions = {}): Promise<EtcdCluster> {
  if (!Number.isInteger(size) || size < 1 || size > 7) throw new InvalidArgumentError(`an etcd cluster has 1 to 7 members, not ${size}`);
  const bin = etcdBinary(options.bin);
  const baseDir = options.baseDir ?? (await mkdtemp(join(tmpdir(), 'taskgraph-etcd-cluster-')));
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(2 * size);
    const names = Array.from({ length: size }, (_, i) => `etcd${i}`);
    const initialCluster = names.map((n, i) => `${n}=http://${LOOPBACK}:${String(ports[2 * i + 1])}`).join(',');
    const clusterToken = token();
    const members = names.map(
      (name, i) =>
        new EtcdMember({
          bin,
          name,
          dataDir: join(baseDir, name),
          clientPort: ports[2 * i] as number,
          peerPort: ports[2 * i + 1] as number,
          initialCluster,
          clusterToken,
          args: options.args ?? [],
          startTimeoutMs: timeoutMs,
        }),
    );
    const started = await Promise.allSettled(members.map((m) => m.start()));
    const failure = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (!failure) return new Cluster(members, baseDir);
    await Promise.all(members.map((m) => m.kill()));
    await Promise.all(members.map((m) => rm(m.dataDir, { recursive: true, force: true })));
    const portTaken = started.some((r) => r.status === 'rejected' && r.reason instanceof PortTakenError);
    if (!portTaken || attempt >= PORT_ATTEMPTS) {
      if (options.baseDir === undefined) await rm(baseDir, { recursive: true, force: true });
      throw failure.reason;
    }
  }
}

class Cluster implements EtcdCluster {
  readonly members: readonly EtcdServer[];
  readonly #baseDir: string;

  constructor(members: readonly EtcdServer[], baseDir: string) {
    this.members = members;
    this.#baseDir = baseDir;
  }

  get endpoints(): readonly string[] {
    return this.members.map((m) => m.clientUrl);
  }

  get clientAddresses(): string {
    return this.members.map((m) => m.clientAddress).join(',');
  }

  member(index: number): EtcdServer {
    const m = this.members[index];
    if (!m) throw new InvalidArgumentError(`the cluster has ${this.members.length} members; there is no member ${index}`);
    return m;
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => m.stop()));
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.members.map((m) => m.kill()));
    await rm(this.#baseDir, { recursive: true, force: true });
  }
}
