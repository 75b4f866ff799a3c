/**
 * Finds an application module by name: a built-in name ("regression"), a path
 * ("./my-app.js"), or a package name. The module's default export (or its `app`
 * export) must be a TaskGraphApp (see `defineApp` in @taskgraph/core). A built-in
 * is a package like any other, imported only when named, so the command does not
 * depend on it; when it is missing the error says which package to install.
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { assertApp, importPackage } from '@taskgraph/core';
import type { TaskGraphApp } from '@taskgraph/core';
import { importFromCli, importNamedModule } from './modules.js';

export const BUILTIN_APPS: Readonly<Record<string, { module: string; export: string }>> = {
  regression: { module: '@taskgraph/app-regression', export: 'regressionApp' },
  mapreduce: { module: '@taskgraph/app-mapreduce', export: 'mapReduceApp' },
};

export async function loadApp(spec: string, cwd = process.cwd()): Promise<TaskGraphApp> {
  if (!spec) throw new InvalidArgumentError(`name the application to run: a built-in (${Object.keys(BUILTIN_APPS).join(', ')}), a path (./app.js) or a package`);
  const builtin = Object.hasOwn(BUILTIN_APPS, spec) ? BUILTIN_APPS[spec] : undefined;
  const mod = builtin
    ? await importPackage(builtin.module, `application ${spec}`, importFromCli)
    : await importNamedModule(spec, 'application', cwd, ` (built-ins: ${Object.keys(BUILTIN_APPS).join(', ')})`);
  const app = builtin ? mod[builtin.export] : (mod['default'] ?? mod['app']);
  assertApp(app, `application module ${spec}`);
  return app;
}
