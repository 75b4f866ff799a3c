/**
 * Backends chosen by configuration: a URL's scheme names, through the registry, the
 * module that implements it, imported at run time, so core never depends on a
 * backend and the same application runs unchanged on every one.
 */
import { BackendNotInstalledError, InvalidArgumentError, TaskGraphError } from '@taskgraph/api';
import type { Coordinator, CoordinatorFactory, CoordinatorRuntimeOptions, Transport, TransportFactory } from '@taskgraph/api';
import { maskUrl, scrubSecrets } from './redact.js';
import { lookupScheme, registeredSchemes } from './registry.js';
import type { BackendKind, Registration } from './registry.js';

/** Imports a module by name; replaceable in tests. */
export type ModuleImporter = (specifier: string) => Promise<Record<string, unknown>>;

const defaultImporter: ModuleImporter = (specifier) => import(specifier) as Promise<Record<string, unknown>>;

const REGISTER = { coordinator: 'registerCoordinator', transport: 'registerTransport' } as const;

function schemeOf(url: string, kind: BackendKind): string {
  const schemes = registeredSchemes(kind);
  if (typeof url !== 'string' || url.trim() === '') {
    throw new InvalidArgumentError(`${kind} URL is empty: use one of ${schemes.map((s) => `${s}://`).join(', ')}`);
  }
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url.trim());
  if (!m) {
    throw new InvalidArgumentError(`${kind} URL ${JSON.stringify(maskUrl(url))} has no scheme: write it like ${schemes.map((s) => `${s}://...`).join(' or ')}`);
  }
  const scheme = m[1]!.toLowerCase();
  if (!lookupScheme(kind, scheme)) {
    throw new InvalidArgumentError(
      `${kind} URL ${JSON.stringify(maskUrl(url))} has the unknown scheme "${scheme}": supported are ${schemes.join(', ')} (a plug-in adds more with ${REGISTER[kind]}())`,
    );
  }
  return scheme;
}

function isMissing(err: unknown, pkg: string): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  // Only the package itself: a missing dependency *of* the package is its own bug.
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message.includes(pkg);
}

/**
 * Imports an npm package, and when it is not installed says in one sentence which
 * one to install: `the coordinator etcd:// needs the package @taskgraph/coord-etcd,
 * which is not installed: run \`npm install @taskgraph/coord-etcd\``.
 */
export async function importPackage(pkg: string, what: string, importer: ModuleImporter = defaultImporter): Promise<Record<string, unknown>> {
  return guardMissing(pkg, what, () => importer(pkg));
}

async function guardMissing<T>(pkg: string | undefined, what: string, load: () => T | Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if (pkg !== undefined && isMissing(err, pkg)) {
      throw new BackendNotInstalledError(`the ${what} needs the package ${pkg}, which is not installed: run \`npm install ${pkg}\``, {
        cause: err,
        details: { package: pkg },
      });
    }
    throw err;
  }
}

/** The factory a registration leads to: the loader's function, or its module's export. */
async function factoryOf<T>(kind: BackendKind, scheme: string, reg: Registration, importer: ModuleImporter): Promise<T> {
  const name = kind === 'coordinator' ? 'createCoordinator' : 'createTransport';
  const what = `${kind} ${scheme}://`;
  const loader = reg.loader;
  const loaded: unknown = await guardMissing(reg.package, what, () => (typeof loader === 'string' ? importer(loader) : loader()));
  if (typeof loaded === 'function') return loaded as T;
  const f = typeof loaded === 'object' && loaded !== null ? (loaded as Record<string, unknown>)[name] : undefined;
  if (typeof f !== 'function') {
    const source = reg.package ?? (typeof loader === 'string' ? loader : `the loader registered for ${scheme}://`);
    throw new BackendNotInstalledError(`${source} does not export ${name}(): is it a TaskGraph backend of a compatible version?`, {
      details: { scheme, ...(reg.package ? { package: reg.package } : {}) },
    });
  }
  return f as T;
}

async function open<F, B>(kind: BackendKind, url: string, importer: ModuleImporter | undefined, create: (f: F) => Promise<B>): Promise<B> {
  const scheme = schemeOf(url, kind);
  const factory = await factoryOf<F>(kind, scheme, lookupScheme(kind, scheme)!, importer ?? defaultImporter);
  try {
    return await create(factory);
  } catch (err) {
    if (TaskGraphError.is(err)) throw err;
    // The cause stays for a debugger; the message, which is shown, never carries the URL's secrets.
    throw new InvalidArgumentError(`cannot open ${kind} ${maskUrl(url)}: ${scrubSecrets((err as Error).message, url)}`, { cause: err });
  }
}

export interface ResolveOptions extends CoordinatorRuntimeOptions {
  /** Imports registrations given as module specifiers (tests replace it). */
  readonly importer?: ModuleImporter;
}

/** `memory://`, `etcd://h:2379?namespace=tg`, `consul://h:8500`, `k8s://?namespace=default`, or a registered scheme. */
export async function resolveCoordinator(url: string, options: ResolveOptions = {}): Promise<Coordinator> {
  const runtime: { -readonly [K in keyof CoordinatorRuntimeOptions]: CoordinatorRuntimeOptions[K] } = {};
  if (options.clock) runtime.clock = options.clock;
  if (options.logger) runtime.logger = options.logger;
  return open<CoordinatorFactory, Coordinator>('coordinator', url, options.importer, (create) => create(url, runtime));
}

/** `local://`, `grpc://0.0.0.0:0`, or a registered scheme. */
export async function resolveTransport(url: string, options: { importer?: ModuleImporter } = {}): Promise<Transport> {
  return open<TransportFactory, Transport>('transport', url, options.importer, (create) => create(url));
}
