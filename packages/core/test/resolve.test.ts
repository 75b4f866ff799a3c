import { BackendNotInstalledError, ConflictError, InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { CoordinatorRuntimeOptions } from '@taskgraph/api';
import { describe, expect, it, vi } from 'vitest';
import {
  maskUrl,
  importPackage,
  installPlugin,
  registerCoordinator,
  registerTransport,
  registeredSchemes,
  resolveCoordinator,
  resolveTransport,
} from '../src/index.js';
import type { ModuleImporter, TaskGraphPlugin } from '../src/index.js';

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

  it('never quotes a URL’s password in what it says: user info, password/token/secret parameters, a cause that quotes the URL whole', async () => {
    const url = 'etcd://root:s3cr%40t@h:2379/?namespace=x&token=tok123';
    const importer: ModuleImporter = async () => ({
      createCoordinator: () => Promise.reject(new Error(`bad URL ${url} (password s3cr@t)`)),
    });
    const opened = (await resolveCoordinator(url, { importer }).catch((e: unknown) => e)) as Error;
    expect(opened.message).toBe('cannot open coordinator etcd://root:***@h:2379/?namespace=x&token=***: bad URL etcd://root:***@h:2379/?namespace=x&token=*** (password ***)');
    const unknown = (await resolveCoordinator('zk://u:pw1@h/?password=pw2').catch((e: unknown) => e)) as Error;
    expect(unknown.message).toContain('"zk://u:***@h/?password=***"');
    expect(unknown.message).not.toMatch(/pw1|pw2/);
    expect(maskUrl('grpcs://h:1?secret=a&ca=/x.pem')).toBe('grpcs://h:1?secret=***&ca=/x.pem');
  });
});

describe('the backend registry', () => {
  it('opens a backend defined here, under a scheme of its own, through both loader forms', async () => {
    const opened: string[] = [];
    // A factory returned directly: wraps the embedded coordinator.
    const undoCoordinator = registerCoordinator('test-wrapped', () => async (url: string | URL, runtime?: CoordinatorRuntimeOptions) => {
      opened.push(String(url));
      return resolveCoordinator(String(url).replace(/^test-wrapped:/i, 'memory:'), runtime);
    });
    // A module exporting createTransport, the shape a backend package has.
    const undoTransport = registerTransport('test-wrapped', async () => ({
      createTransport: (url: string | URL) => {
        opened.push(String(url));
        return resolveTransport('local://');
      },
    }));
    try {
      const c = await resolveCoordinator('TEST-WRAPPED://registry-test?namespace=r');
      await c.create('k', new Uint8Array([7]));
      const direct = await resolveCoordinator('memory://registry-test?namespace=r');
      expect((await direct.get('k'))?.value).toEqual(new Uint8Array([7]));
      const t = await resolveTransport('test-wrapped://');
      expect(t.kind).toBe('local');
      expect(opened).toEqual(['TEST-WRAPPED://registry-test?namespace=r', 'test-wrapped://']);
      expect(registeredSchemes('coordinator')).toEqual(['memory', 'etcd', 'consul', 'k8s', 'test-wrapped']);
      await Promise.all([c.close(), direct.close(), t.close()]);
    } finally {
      undoCoordinator();
      undoTransport();
    }
    await expect(resolveCoordinator('test-wrapped://x')).rejects.toThrow('unknown scheme "test-wrapped": supported are memory, etcd, consul, k8s (a plug-in adds more with registerCoordinator())');
    expect(registeredSchemes('transport')).toEqual(['local', 'grpc', 'grpcs']);
  });

  it('refuses a taken scheme unless told to replace it, and undoing a replacement restores the built-in', async () => {
    const mine = () => ({ createCoordinator: () => Promise.reject(new Error('mine')) });
    const err = (() => {
      try {
        return registerCoordinator('etcd', mine);
      } catch (e) {
        return e;
      }
    })();
    expect(TaskGraphError.is(err, 'CONFLICT')).toBe(true);
    expect((err as Error).message).toBe('the coordinator scheme etcd:// is already registered (@taskgraph/coord-etcd): pass { replace: true } to take it over');

    const undo = registerCoordinator('etcd://', mine, { replace: true });
    await expect(resolveCoordinator('etcd://h:2379')).rejects.toThrow('cannot open coordinator etcd://h:2379: mine');
    undo();
    const seen: string[] = [];
    const importer: ModuleImporter = async (spec) => {
      seen.push(spec);
      return { createCoordinator: () => Promise.reject(new Error('built-in again')) };
    };
    await expect(resolveCoordinator('etcd://h:2379', { importer })).rejects.toThrow('built-in again');
    expect(seen).toEqual(['@taskgraph/coord-etcd']);
  });

  it('accepts the same loader twice (a plug-in evaluated twice), and refuses a different one', () => {
    const loader = () => ({ createTransport: () => Promise.reject(new Error('x')) });
    const undo = registerTransport('test-twice', loader);
    try {
      expect(() => registerTransport('test-twice', loader)).not.toThrow();
      expect(() => registerTransport('test-twice', () => loader())).toThrow(ConflictError);
      expect(() => registerTransport('test-twice', loader)()).not.toThrow();
      expect(registeredSchemes('transport')).toContain('test-twice');
    } finally {
      undo();
    }
    expect(registeredSchemes('transport')).not.toContain('test-twice');
  });

  it.each([
    ['', 'is not a URL scheme'],
    ['1etcd', 'is not a URL scheme'],
    ['my_scheme', 'is not a URL scheme'],
  ])('refuses the scheme %j', (scheme, message) => {
    expect(() => registerCoordinator(scheme, '@x/y')).toThrow(message);
  });

  it('refuses a loader that is neither a specifier nor a function', () => {
    expect(() => registerTransport('test-bad', '')).toThrow('must be a module specifier or a function');
    expect(() => registerTransport('test-bad', 42 as unknown as string)).toThrow(InvalidArgumentError);
  });

  it('gives the install hint for a function loader that names its package', async () => {
    const undo = registerCoordinator(
      'test-pkg',
      () => Promise.reject(Object.assign(new Error("Cannot find package 'taskgraph-test-pkg' imported from /p.mjs"), { code: 'ERR_MODULE_NOT_FOUND' })),
      { package: 'taskgraph-test-pkg' },
    );
    try {
      await expect(resolveCoordinator('test-pkg://h')).rejects.toThrow(
        'the coordinator test-pkg:// needs the package taskgraph-test-pkg, which is not installed: run `npm install taskgraph-test-pkg`',
      );
    } finally {
      undo();
    }
    const undo2 = registerCoordinator('test-nothing', () => ({ notAFactory: true }));
    try {
      await expect(resolveCoordinator('test-nothing://h')).rejects.toThrow(
        'the loader registered for test-nothing:// does not export createCoordinator()',
      );
    } finally {
      undo2();
    }
  });

  it('is one table for every copy of core loaded in the process', async () => {
    vi.resetModules();
    const copy = (await import('../src/registry.js')) as typeof import('../src/registry.js');
    expect(copy.registerCoordinator).not.toBe(registerCoordinator);
    const undo = copy.registerCoordinator('test-other-copy', () => async () => resolveCoordinator('memory://other-copy'));
    try {
      const c = await resolveCoordinator('test-other-copy://');
      expect(c.caps.backend).toBe('memory');
      await c.close();
    } finally {
      undo();
    }
    expect(registeredSchemes('coordinator')).not.toContain('test-other-copy');
  });

  it('installs a plug-in module: its default export gets the registry and the resolvers', async () => {
    const undos: Array<() => void> = [];
    const plugin: TaskGraphPlugin = (host) => {
      undos.push(
        host.registerTransport('test-plugin', () => async (url: string | URL) => host.resolveTransport(String(url).replace(/^test-plugin:/, 'local:'))),
      );
    };
    const mod = { default: plugin };
    await installPlugin(mod, 'test-plugin.mjs');
    await installPlugin(mod, 'test-plugin.mjs');
    expect(undos).toHaveLength(1);
    try {
      const t = await resolveTransport('test-plugin://');
      expect(t.kind).toBe('local');
      await t.close();
    } finally {
      for (const u of undos) u();
    }
    await expect(installPlugin({}, 'self-registering.mjs')).resolves.toBeUndefined();
    const failing = { default: () => Promise.reject(new Error('cannot register')) };
    await expect(installPlugin(failing, 'failing.mjs')).rejects.toThrow('cannot register');
    await expect(installPlugin(failing, 'failing.mjs')).rejects.toThrow('cannot register');
    await expect(installPlugin({ default: { registerCoordinator: 1 } }, 'odd.mjs')).rejects.toThrow(
      'plug-in odd.mjs: its default export must be a function',
    );
  });

  it('imports a package with the same one-line hint when it is missing', async () => {
    const importer: ModuleImporter = (spec) =>
      Promise.reject(Object.assign(new Error(`Cannot find package '${spec}' imported from /cli.js`), { code: 'ERR_MODULE_NOT_FOUND' }));
    await expect(importPackage('@taskgraph/app-regression', 'application regression', importer)).rejects.toThrow(
      'the application regression needs the package @taskgraph/app-regression, which is not installed: run `npm install @taskgraph/app-regression`',
    );
    expect(await importPackage('x', 'y', async () => ({ ok: 1 }))).toEqual({ ok: 1 });
  });
});
