/**
 * The store's keys grouped by directory (every prefix of a key that ends in "/"), so
 * that listing or deleting a directory costs what is in it, not a scan of every key
 * in the store: a node's meta clean-up deletes `meta/<task>/<epoch>/` once per epoch,
 * and with a thousand tasks a scan each time made an epoch cost O(tasks²).
 */
export class KeyIndex {
  readonly #byDir = new Map<string, Set<string>>();

  add(key: string): void {
    for (let i = key.indexOf('/'); i >= 0; i = key.indexOf('/', i + 1)) {
      const dir = key.slice(0, i + 1);
      let keys = this.#byDir.get(dir);
      if (!keys) this.#byDir.set(dir, (keys = new Set()));
      keys.add(key);
    }
  }

  delete(key: string): void {
    for (let i = key.indexOf('/'); i >= 0; i = key.indexOf('/', i + 1)) {
      const dir = key.slice(0, i + 1);
      const keys = this.#byDir.get(dir);
      if (!keys) continue;
      keys.delete(key);
      if (keys.size === 0) this.#byDir.delete(dir);
    }
  }

  /** The keys under `prefix` when it is a directory (ends in "/"), unsorted; undefined for any other prefix (scan instead). */
  under(prefix: string): Iterable<string> | undefined {
    if (!prefix.endsWith('/')) return undefined;
    return this.#byDir.get(prefix) ?? [];
  }
}
