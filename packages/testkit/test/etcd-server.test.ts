import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { TaskGraphError } from '@taskgraph/api';
import { etcdBinary, eventually, startEtcd, startEtcdCluster, type EtcdCluster, type EtcdServer } from '@taskgraph/testkit';

// etcd's JSON gateway (/v3/kv/...) lets these tests read and write without a
// client library: keys and values travel base64-encoded.
function gateway(port: number, path: string, body: unknown, timeoutMs = 5000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      { host: '127.0.0.1', port, path, method: 'POST', agent: false, timeout: timeoutMs, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`${path}: HTTP ${String(res.statusCode)} ${text}`));
          else resolve(JSON.parse(text) as Record<string, unknown>);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

async function put(server: EtcdServer, key: string, value: string): Promise<void> {
  await gateway(server.clientPort, '/v3/kv/put', { key: b64(key), value: b64(value) });
}

async function get(server: EtcdServer, key: string): Promise<string | undefined> {
  const res = await gateway(server.clientPort, '/v3/kv/range', { key: b64(key) });
  const kvs = res['kvs'] as { value?: string }[] | undefined;
  const first = kvs?.[0];
  return first ? Buffer.from(first.value ?? '', 'base64').toString() : undefined;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The process state letter from /proc (T = stopped). */
function processState(pid: number): string | undefined {
  try {
    return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

describe('etcdBinary', () => {
  it('finds the installed etcd', () => {
    expect(existsSync(etcdBinary())).toBe(true);
  });

  it('says in one sentence what to install when etcd is missing', () => {
    const saved = { path: process.env['PATH'], bin: process.env['TASKGRAPH_ETCD_BIN'] };
    process.env['PATH'] = '/nonexistent';
    delete process.env['TASKGRAPH_ETCD_BIN'];
    try {
      let caught: unknown;
      try {
        etcdBinary();
      } catch (err) {
        caught = err;
      }
      expect(TaskGraphError.is(caught, 'BACKEND_NOT_INSTALLED')).toBe(true);
      expect((caught as Error).message).toMatch(/etcd-server/);
      expect((caught as Error).message).toMatch(/TASKGRAPH_ETCD_BIN/);
    } finally {
      process.env['PATH'] = saved.path;
      if (saved.bin !== undefined) process.env['TASKGRAPH_ETCD_BIN'] = saved.bin;
    }
  });

  it('rejects a TASKGRAPH_ETCD_BIN that is not an executable', () => {
    expect(() => etcdBinary('/nonexistent/etcd')).toThrow(/not executable/);
  });
});

describe('startEtcd', () => {
  let server: EtcdServer;

  beforeAll(async () => {
    server = await startEtcd();
  });

  afterAll(async () => {
    await server.cleanup();
  });

  it('runs etcd on loopback and answers reads and writes', async () => {
    expect(server.running).toBe(true);
    expect(server.endpoints).toEqual([`http://127.0.0.1:${server.clientPort}`]);
    await put(server, 'greeting', 'hello');
    expect(await get(server, 'greeting')).toBe('hello');
  });

  it("writes etcd's output to a log file in its data dir", () => {
    expect(server.logFile.startsWith(server.dataDir)).toBe(true);
    expect(readFileSync(server.logFile, 'utf8')).toMatch(/became leader/);
    expect(server.logTail(3).split('\n')).toHaveLength(3);
  });

  it('keeps its data through kill -9 and a restart on the same dir and ports', async () => {
    await put(server, 'durable', 'yes');
    const { clientPort, pid } = server;
    await server.kill();
    expect(server.running).toBe(false);
    expect(processExists(pid as number)).toBe(false);
    await expect(get(server, 'durable')).rejects.toThrow();
    await server.restart();
    expect(server.running).toBe(true);
    expect(server.clientPort).toBe(clientPort);
    expect(await get(server, 'durable')).toBe('yes');
  });

  it('keeps its data through a graceful stop and restart', async () => {
    await put(server, 'graceful', 'yes');
    await server.stop();
    expect(server.running).toBe(false);
    await server.restart();
    expect(await get(server, 'graceful')).toBe('yes');
  });

  it('pauses (SIGSTOP) and resumes', async () => {
    const pid = server.pid as number;
    server.pause();
    expect(server.paused).toBe(true);
    await eventually('etcd is stopped', () => processState(pid) === 'T', { timeoutMs: 30_000 });
    // A stopped process never answers, however long we wait.
    await expect(gateway(server.clientPort, '/v3/kv/range', { key: b64('greeting') }, 500)).rejects.toThrow(/no answer/);
    server.resume();
    expect(server.paused).toBe(false);
    await eventually('etcd runs again', () => processState(pid) !== 'T', { timeoutMs: 30_000 });
    expect(await get(server, 'greeting')).toBe('hello');
  });

  it('stops a paused etcd', async () => {
    const other = await startEtcd({ name: 'paused' });
    try {
      const pid = other.pid as number;
      other.pause();
      await other.stop();
      expect(processExists(pid)).toBe(false);
    } finally {
      await other.cleanup();
    }
    expect(existsSync(other.dataDir)).toBe(false);
  });

  it('starts on a data dir the test names, and two servers get different ports', async () => {
    const first = await startEtcd({ name: 'first' });
    const second = await startEtcd({ name: 'second', dataDir: `${first.dataDir}-second` });
    try {
      expect(second.dataDir).toBe(`${first.dataDir}-second`);
      expect(new Set([first.clientPort, first.peerPort, second.clientPort, second.peerPort]).size).toBe(4);
      await put(second, 'k', 'v');
      expect(await get(first, 'k')).toBeUndefined();
    } finally {
      await Promise.all([first.cleanup(), second.cleanup()]);
    }
  });

  it('puts the log tail into the error when etcd cannot start', async () => {
    // An unknown flag makes etcd exit at once and say why in its log.
    await expect(startEtcd({ args: ['--no-such-flag'] })).rejects.toThrow(/exited with code[\s\S]*no-such-flag/);
  });
});

describe('startEtcd leaves no etcd behind', () => {
  it('kills its etcd when the test process exits without stopping it', async () => {
    // A child node process starts etcd and exits without calling stop(); the
    // exit guard must take etcd with it.
    const script = `
      import { startEtcd } from '${new URL('../src/etcd-server.ts', import.meta.url).pathname}';
      const server = await startEtcd();
      console.log(JSON.stringify({ pid: server.pid, dataDir: server.dataDir }));
      process.exit(0);
    `;
    const tsx = new URL('../../../node_modules/.bin/tsx', import.meta.url).pathname;
    const out = spawnSync(tsx, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(out.status, out.stderr).toBe(0);
    const { pid, dataDir } = JSON.parse(out.stdout.trim().split('\n').pop() as string) as { pid: number; dataDir: string };
    expect(pid).toBeGreaterThan(0);
    try {
      await eventually(`etcd ${pid} is gone`, () => !processExists(pid), { timeoutMs: 30_000 });
    } finally {
      spawnSync('rm', ['-rf', dataDir]);
    }
  }, 90_000);
});

describe('startEtcdCluster', () => {
  let cluster: EtcdCluster;

  beforeAll(async () => {
    cluster = await startEtcdCluster(3);
  }, 120_000);

  afterAll(async () => {
    await cluster.cleanup();
  });

  it('runs three members that agree', async () => {
    expect(cluster.members).toHaveLength(3);
    expect(cluster.clientAddresses.split(',')).toHaveLength(3);
    await put(cluster.member(0), 'shared', 'one');
    expect(await get(cluster.member(1), 'shared')).toBe('one');
    expect(await get(cluster.member(2), 'shared')).toBe('one');
    const members = (await gateway(cluster.member(0).clientPort, '/v3/cluster/member/list', {}))['members'] as unknown[];
    expect(members).toHaveLength(3);
  });

  it('survives losing one member, and the member catches up after its restart', async () => {
    const lost = cluster.member(1);
    await lost.kill();
    expect(lost.running).toBe(false);
    // The survivors still have a quorum; a leader election may be under way, so retry.
    await eventually('the two survivors accept a write', async () => {
      await put(cluster.member(2), 'after-loss', 'two');
      return true;
    }, { timeoutMs: 30_000 });
    expect(await get(cluster.member(0), 'after-loss')).toBe('two');
    await lost.restart();
    expect(await get(lost, 'after-loss')).toBe('two');
  }, 120_000);

  it('rejects a cluster size it cannot run', async () => {
    await expect(startEtcdCluster(0)).rejects.toThrow(/1 to 7 members/);
  });
});
