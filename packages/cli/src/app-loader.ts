/**
 * Finds an application module by name: a built-in name ("regression"), a path
 * ("./my-app.js"), or a package name. The module's default export (or its `app`
 * export) must be a TaskGraphApp (see `defineApp` in @taskgraph/core).
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidArgumentError } from '@taskgraph/api';
import { assertApp } from '@taskgraph/core';
import type { TaskGraphApp } from '@taskgraph/core';

export const BUILTIN_APPS: Readonly<Record<string, { module: string; export: string }>> = {
  regression: { module: '@taskgraph/app-regression', export: 'regressionApp' },
};

export async function loadApp(spec: string, cwd = process.cwd()): Promise<TaskGraphApp> {
  if (!spec) throw new InvalidArgumentError('name the application to run: a built-in (regression), a path (./app.js) or a package');
  const builtin = BUILTIN_APPS[spec];
  const isPath = spec.startsWith('.') || isAbsolute(spec);
  const specifier = builtin ? builtin.module : isPath ? pathToFileURL(resolve(cwd, spec)).href : spec;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(specifier)) as Record<string, unknown>;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new InvalidArgumentError(
        `cannot load application ${JSON.stringify(spec)}: ${(err as Error).message.split('\n')[0]} (built-ins: ${Object.keys(BUILTIN_APPS).join(', ')})`,
        { cause: err },
      );
    }
    throw err;
  }
  const app = builtin ? mod[builtin.export] : (mod['default'] ?? mod['app']);
  assertApp(app, `application module ${spec}`);
  return app;
}
