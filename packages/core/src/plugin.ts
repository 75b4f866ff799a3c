/**
 * The contract of a plug-in module: its default export is a function that is given
 * the registry (and the resolvers, so a plug-in can wrap another backend by URL).
 * Being handed these, rather than importing them, a plug-in needs no copy of core
 * of its own: a file beside a globally installed `taskgraph` command works.
 *
 *   // redis-plugin.mjs
 *   export default ({ registerCoordinator }) => registerCoordinator('redis', () => import('taskgraph-redis'));
 */
import { InvalidArgumentError } from '@taskgraph/api';
import { registerCoordinator, registerTransport } from './registry.js';
import { resolveCoordinator, resolveTransport } from './resolve.js';

export interface PluginHost {
  readonly registerCoordinator: typeof registerCoordinator;
  readonly registerTransport: typeof registerTransport;
  readonly resolveCoordinator: typeof resolveCoordinator;
  readonly resolveTransport: typeof resolveTransport;
}

export type TaskGraphPlugin = (host: PluginHost) => void | Promise<void>;

const host: PluginHost = { registerCoordinator, registerTransport, resolveCoordinator, resolveTransport };

// A plug-in's function makes new loaders on every call, so a second call would
// collide with the first; a module is installed once however often it is named,
// and every caller learns how that one installation went.
const installed = new WeakMap<object, Promise<void>>();

/**
 * Runs an imported plug-in module once: calls its default export with the registry.
 * A module without one is accepted when importing it was the point (it registered
 * itself with its own import of core).
 */
export async function installPlugin(mod: Record<string, unknown>, name: string): Promise<void> {
  const plugin = mod['default'];
  if (plugin === undefined) return;
  if (typeof plugin !== 'function') {
    throw new InvalidArgumentError(`plug-in ${name}: its default export must be a function that takes { registerCoordinator, registerTransport }`);
  }
  let done = installed.get(mod);
  if (!done) {
    done = (async () => (plugin as TaskGraphPlugin)(host))();
    installed.set(mod, done);
  }
  await done;
}
