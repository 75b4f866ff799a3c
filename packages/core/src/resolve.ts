/**
 * Backends chosen by configuration: a URL's scheme names the package that
 * implements it, imported at run time, so core never depends on a backend and the
 * same application runs unchanged on every one.
 */
import { BackendNotInstalledError, InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { Coordinator, CoordinatorFactory, CoordinatorRuntimeOptions, Transport, TransportFactory } from '@taskgraph/api';

export const COORDINATOR_PACKAGES: Readonly<Record<string, string>> = {
  memory: '@taskgraph/coord-memory',
  etcd: '@taskgraph/coord-etcd',
  consul: '@taskgraph/coord-consul',
  k8s: '@taskgraph/coord-k8s',
};

export const TRANSPORT_PACKAGES: Readonly<Record<string, string>> = {
  local: '@taskgraph/transport-local',
  grpc: '@taskgraph/transport-grpc',
};

/** Imports a module by name; replaceable in tests. */
export type ModuleImporter = (specifier: string) => Promise<Record<string, unknown>>;

const defaultImporter: ModuleImporter = (specifier) => import(specifier) as Promise<Record<string, unknown>>;

function schemeOf(url: string, what: string, table: Readonly<Record<string, string>>): string {
  if (typeof url !== 'string' || url.trim() === '') {
    throw new InvalidArgumentError(`${what} URL is empty: use one of ${Object.keys(table).map((s) => `${s}://`).join(', ')}`);
  }
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url.trim());
  if (!m) {
    throw new InvalidArgumentError(
      `${what} URL ${JSON.stringify(url)} has no scheme: write it like ${Object.keys(table).map((s) => `${s}://...`).join(' or ')}`,
    );
  }
  const scheme = m[1]!.toLowerCase();
  if (!(scheme in table)) {
    throw new InvalidArgumentError(
      `${what} URL ${JSON.stringify(url)} has the unknown scheme "${scheme}": supported are ${Object.keys(table).join(', ')}`,
    );
  }
  return scheme;
}

async function load(pkg: string, what: string, importer: ModuleImporter): Promise<Record<string, unknown>> {
  try {
    return await importer(pkg);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const message = err instanceof Error ? err.message : String(err);
    if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message.includes(pkg)) {
      throw new BackendNotInstalledError(`the ${what} needs the package ${pkg}, which is not installed: run \`npm install ${pkg}\``, {
        cause: err,
        details: { package: pkg },
      });
    }
    throw err;
  }
}

function factoryOf<T>(mod: Record<string, unknown>, name: string, pkg: string): T {
  const f = mod[name];
  if (typeof f !== 'function') {
    throw new BackendNotInstalledError(`${pkg} does not export ${name}(): is it a TaskGraph backend of a compatible version?`, {
      details: { package: pkg },
    });
  }
  return f as T;
}

export interface ResolveOptions extends CoordinatorRuntimeOptions {
  readonly importer?: ModuleImporter;
}

/** `memory://`, `etcd://h:2379?namespace=tg`, `consul://h:8500`, `k8s://?namespace=default`. */
export async function resolveCoordinator(url: string, options: ResolveOptions = {}): Promise<Coordinator> {
  const scheme = schemeOf(url, 'coordinator', COORDINATOR_PACKAGES);
  const pkg = COORDINATOR_PACKAGES[scheme]!;
  const mod = await load(pkg, `coordinator ${scheme}://`, options.importer ?? defaultImporter);
  const create = factoryOf<CoordinatorFactory>(mod, 'createCoordinator', pkg);
  const runtime: { -readonly [K in keyof CoordinatorRuntimeOptions]: CoordinatorRuntimeOptions[K] } = {};
  if (options.clock) runtime.clock = options.clock;
  if (options.logger) runtime.logger = options.logger;
  try {
    return await create(url, runtime);
  } catch (err) {
    if (TaskGraphError.is(err)) throw err;
    throw new InvalidArgumentError(`cannot open coordinator ${url}: ${(err as Error).message}`, { cause: err });
  }
}

/** `local://`, `grpc://0.0.0.0:0`. */
export async function resolveTransport(url: string, options: { importer?: ModuleImporter } = {}): Promise<Transport> {
  const scheme = schemeOf(url, 'transport', TRANSPORT_PACKAGES);
  const pkg = TRANSPORT_PACKAGES[scheme]!;
  const mod = await load(pkg, `transport ${scheme}://`, options.importer ?? defaultImporter);
  const create = factoryOf<TransportFactory>(mod, 'createTransport', pkg);
  try {
    return await create(url);
  } catch (err) {
    if (TaskGraphError.is(err)) throw err;
    throw new InvalidArgumentError(`cannot open transport ${url}: ${(err as Error).message}`, { cause: err });
  }
}
