import { BackendNotInstalledError, InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import { describe, expect, it } from 'vitest';
import { resolveCoordinator, resolveTransport } from '../src/index.js';
import type { ModuleImporter } from '../src/index.js';

describe('backends chosen by URL', () => {
  it('opens the embedded coordinator and the in-process transport by URL', async () => {
    const c = await resolveCoordinator('memory://resolve-test?namespace=x');
    expect(c.caps.backend).toBe('memory');
    await c.create('k', new Uint8Array([1]));
    const c2 = await resolveCoordinator('memory://resolve-test?namespace=x');
    expect((await c2.get('k'))?.value).toEqual(new Uint8Array([1]));
    await c.close();
    await c2.close();
    const t = await resolveTransport('local://');
    expect(t.kind).toBe('local');
    await t.close();
  });

  it.each([
    ['', 'URL is empty'],
    ['localhost:2379', 'has no scheme'],
    ['redis://localhost', 'unknown scheme "redis"'],
    ['ETCDX://h', 'unknown scheme'],
  ])('rejects the coordinator URL %j with one clear sentence', async (url, message) => {
    const err = await resolveCoordinator(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toContain(message);
  });

  it('rejects a bad transport URL', async () => {
    await expect(resolveTransport('http://x')).rejects.toThrow('unknown scheme "http": supported are local, grpc');
  });

  it('says which package to install when a backend is missing', async () => {
    const importer: ModuleImporter = (spec) => {
      const err = Object.assign(new Error(`Cannot find package '${spec}' imported from /app/x.js`), { code: 'ERR_MODULE_NOT_FOUND' });
      return Promise.reject(err);
    };
    const err = await resolveCoordinator('consul://127.0.0.1:8500', { importer }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendNotInstalledError);
    expect((err as Error).message).toBe(
      'the coordinator consul:// needs the package @taskgraph/coord-consul, which is not installed: run `npm install @taskgraph/coord-consul`',
    );
    await expect(resolveTransport('grpc://0.0.0.0:0', { importer })).rejects.toThrow('npm install @taskgraph/transport-grpc');
  });

  it('reports a package that is not a backend, and passes through a missing dependency of the backend', async () => {
    const notBackend: ModuleImporter = async () => ({ somethingElse: 1 });
    await expect(resolveCoordinator('etcd://h:2379', { importer: notBackend })).rejects.toThrow('does not export createCoordinator()');
    const brokenDep: ModuleImporter = () =>
      Promise.reject(Object.assign(new Error("Cannot find package 'etcd3'"), { code: 'ERR_MODULE_NOT_FOUND' }));
    const err = await resolveCoordinator('etcd://h:2379', { importer: brokenDep }).catch((e: unknown) => e);
    expect(TaskGraphError.is(err)).toBe(false);
    expect((err as Error).message).toContain('etcd3');
  });

  it('wraps a factory that throws a plain error', async () => {
    const importer: ModuleImporter = async () => ({
      createCoordinator: () => Promise.reject(new Error('boom')),
    });
    await expect(resolveCoordinator('k8s://', { importer })).rejects.toThrow('cannot open coordinator k8s://: boom');
  });
});
