/**
 * Plug-ins: modules imported before any URL is resolved, whose default export
 * registers more coordinator or transport schemes (see `TaskGraphPlugin` in
 * @taskgraph/core). This is how a backend that is not built in reaches the command
 * without a change to it.
 */
import { installPlugin } from '@taskgraph/core';
import { importNamedModule } from './modules.js';

/** Imports and installs each plug-in, in order; one already installed is skipped. */
export async function loadPlugins(specs: readonly string[] | undefined, cwd = process.cwd()): Promise<void> {
  for (const spec of specs ?? []) {
    await installPlugin(await importNamedModule(spec, 'plug-in', cwd), spec);
  }
}
