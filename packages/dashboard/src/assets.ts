/**
 * The files the page is made of, served from this package and from node_modules
 * (cytoscape, elkjs and cytoscape-elk): no CDN, so the page works offline. The
 * table is fixed: a request path is looked up in it and never used to name a file.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { BackendNotInstalledError } from '@taskgraph/api';

export interface Asset {
  readonly file: string;
  readonly type: string;
}

const JS = 'text/javascript; charset=utf-8';

/** The page's own files: `page/` beside `src/` and `dist/`. */
function pageFile(name: string): string {
  return fileURLToPath(new URL(`../page/${name}`, import.meta.url));
}

/** Resolves the served files; a missing package is a BackendNotInstalledError that says what to install. */
export function resolveAssets(): ReadonlyMap<string, Asset> {
  const require = createRequire(import.meta.url);
  const dependency = (specifier: string, pkg: string): string => {
    try {
      return require.resolve(specifier);
    } catch (err) {
      throw new BackendNotInstalledError(`the dashboard needs the package ${pkg} (${specifier} was not found): run npm install @taskgraph/dashboard`, {
        cause: err,
        details: { package: pkg },
      });
    }
  };
  return new Map<string, Asset>([
    ['/', { file: pageFile('index.html'), type: 'text/html; charset=utf-8' }],
    ['/app.js', { file: pageFile('app.js'), type: JS }],
    ['/app.css', { file: pageFile('app.css'), type: 'text/css; charset=utf-8' }],
    ['/vendor/cytoscape.min.js', { file: dependency('cytoscape/dist/cytoscape.min.js', 'cytoscape'), type: JS }],
    ['/vendor/elk.bundled.js', { file: dependency('elkjs/lib/elk.bundled.js', 'elkjs'), type: JS }],
    ['/vendor/cytoscape-elk.js', { file: dependency('cytoscape-elk', 'cytoscape-elk'), type: JS }],
  ]);
}

/** Reads each file once, on first use. */
export class AssetCache {
  private readonly loaded = new Map<string, Promise<Buffer>>();

  constructor(readonly assets: ReadonlyMap<string, Asset>) {}

  get(path: string): { asset: Asset; body: Promise<Buffer> } | undefined {
    const asset = this.assets.get(path);
    if (!asset) return undefined;
    let body = this.loaded.get(path);
    if (!body) {
      body = readFile(asset.file);
      this.loaded.set(path, body);
      // A failed read is tried again next time.
      body.catch(() => this.loaded.delete(path));
    }
    return { asset, body };
  }
}
