/**
 * Imports a module named on the command line: a path, relative to the working
 * directory, or a package name, resolved from this package as Node resolves the
 * command's own imports.
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidArgumentError } from '@taskgraph/api';

function isPathSpec(spec: string): boolean {
  return spec.startsWith('.') || isAbsolute(spec);
}

/** Imports `spec`; a module that cannot be found is an InvalidArgumentError naming it. */
export async function importNamedModule(spec: string, what: string, cwd: string, suffix = ''): Promise<Record<string, unknown>> {
  const specifier = isPathSpec(spec) ? pathToFileURL(resolve(cwd, spec)).href : spec;
  try {
    return (await import(specifier)) as Record<string, unknown>;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new InvalidArgumentError(`cannot load ${what} ${JSON.stringify(spec)}: ${(err as Error).message.split('\n')[0]}${suffix}`, { cause: err });
    }
    throw err;
  }
}

/** What the CLI gives core's `importPackage`: imports resolved from this package. */
export const importFromCli = (specifier: string): Promise<Record<string, unknown>> => import(specifier) as Promise<Record<string, unknown>>;
