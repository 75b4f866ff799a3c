/**
 * Which module implements a URL scheme: one table per kind of backend, pre-loaded
 * with the built-ins and extended by plug-ins. The tables live on `globalThis` under
 * a `Symbol.for` key, so every installed copy of core (a plug-in may bring its own)
 * reads and writes the same ones.
 */
import { ConflictError, InvalidArgumentError } from '@taskgraph/api';

/**
 * Where a backend comes from. A string is a module specifier imported the first time
 * the scheme is used; it resolves from core's own location, so it suits packages
 * installed beside core. A function returns the factory, or a module that exports it
 * (`() => import('my-backend')` resolves from wherever that function was written).
 */
export type BackendLoader = string | (() => unknown);

export interface RegisterOptions {
  /** Take the scheme over from whatever holds it (a built-in included). */
  readonly replace?: boolean;
  /**
   * The npm package the loader imports, named in the one-line install hint when it
   * is missing. Defaults to a string loader that is a bare package name.
   */
  readonly package?: string;
}

export interface Registration {
  readonly loader: BackendLoader;
  readonly package: string | undefined;
}

export type BackendKind = 'coordinator' | 'transport';

const BUILTINS: Readonly<Record<BackendKind, Readonly<Record<string, string>>>> = {
  coordinator: {
    memory: '@taskgraph/coord-memory',
    etcd: '@taskgraph/coord-etcd',
    consul: '@taskgraph/coord-consul',
    k8s: '@taskgraph/coord-k8s',
  },
  transport: {
    local: '@taskgraph/transport-local',
    grpc: '@taskgraph/transport-grpc',
    grpcs: '@taskgraph/transport-grpc',
  },
};

type Tables = Record<BackendKind, Map<string, Registration>>;

// Versioned: a future core that changes the entries' shape takes a new key instead
// of misreading an older copy's tables.
const KEY = Symbol.for('@taskgraph/core/backend-registry@1');

function isBarePackage(specifier: string): boolean {
  return !/^[./]/.test(specifier) && !specifier.includes(':');
}

function tables(): Tables {
  const holder = globalThis as { [KEY]?: Tables };
  let t = holder[KEY];
  if (!t) {
    t = { coordinator: new Map(), transport: new Map() };
    holder[KEY] = t;
  }
  // A newer copy of core may know built-ins an older one did not; it never
  // overrides a scheme that is taken.
  for (const kind of ['coordinator', 'transport'] as const) {
    for (const [scheme, pkg] of Object.entries(BUILTINS[kind])) {
      if (!t[kind].has(scheme)) t[kind].set(scheme, { loader: pkg, package: pkg });
    }
  }
  return t;
}

const registry = tables();

function normaliseScheme(scheme: string, kind: BackendKind): string {
  const s = typeof scheme === 'string' ? scheme.replace(/:(\/\/)?$/, '').toLowerCase() : '';
  if (!/^[a-z][a-z0-9+.-]*$/.test(s)) {
    throw new InvalidArgumentError(`${kind} scheme ${JSON.stringify(scheme)} is not a URL scheme: a letter, then letters, digits, +, . or -`);
  }
  return s;
}

function register(kind: BackendKind, scheme: string, loader: BackendLoader, options: RegisterOptions): () => void {
  const s = normaliseScheme(scheme, kind);
  if (!((typeof loader === 'string' && loader !== '') || typeof loader === 'function')) {
    throw new InvalidArgumentError(`the loader of ${kind} ${s}:// must be a module specifier or a function`);
  }
  const table = registry[kind];
  const previous = table.get(s);
  // The same loader twice is what a plug-in evaluated twice does (two copies of it,
  // or one file reached by two paths); that must not fail.
  if (previous && previous.loader === loader && !options.replace) return () => undefined;
  if (previous && !options.replace) {
    throw new ConflictError(
      `the ${kind} scheme ${s}:// is already registered${previous.package ? ` (${previous.package})` : ''}: pass { replace: true } to take it over`,
      { details: { scheme: s } },
    );
  }
  const entry: Registration = {
    loader,
    package: options.package ?? (typeof loader === 'string' && isBarePackage(loader) ? loader : undefined),
  };
  table.set(s, entry);
  return () => {
    if (table.get(s) !== entry) return;
    if (previous) table.set(s, previous);
    else table.delete(s);
  };
}

/**
 * Makes `scheme://` URLs open coordinators from `loader`, whose factory is the module's
 * `createCoordinator` export (or the function the loader returns). Returns a function
 * that undoes the registration (restoring what it replaced). A scheme that is taken
 * is a ConflictError unless the loader is the same or `replace` is set.
 */
export function registerCoordinator(scheme: string, loader: BackendLoader, options: RegisterOptions = {}): () => void {
  return register('coordinator', scheme, loader, options);
}

/** Like `registerCoordinator`, for transports (`createTransport`). */
export function registerTransport(scheme: string, loader: BackendLoader, options: RegisterOptions = {}): () => void {
  return register('transport', scheme, loader, options);
}

/** The registered schemes of one kind, in registration order (built-ins first). */
export function registeredSchemes(kind: BackendKind): string[] {
  return [...registry[kind].keys()];
}

export function lookupScheme(kind: BackendKind, scheme: string): Registration | undefined {
  return registry[kind].get(scheme);
}
