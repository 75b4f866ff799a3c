/**
 * Scraping for the tests: GET over real HTTP, and a small parser of the Prometheus
 * text format (the samples: name, labels, value).
 */
import { request } from 'node:http';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
}

/** One HTTP request (no keep-alive), its status, headers and body. */
export function get(url: string, method = 'GET'): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\"/g, '"').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
    samples.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return samples;
}

/** The samples of a scrape, with sums over label filters. */
export class Scrape {
  constructor(readonly samples: readonly Sample[]) {}

  static of(text: string): Scrape {
    return new Scrape(parse(text));
  }

  select(name: string, where: Readonly<Record<string, string>> = {}): Sample[] {
    return this.samples.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v));
  }

  sum(name: string, where: Readonly<Record<string, string>> = {}): number {
    return this.select(name, where).reduce((n, s) => n + s.value, 0);
  }

  /** The one sample of `name` matching `where` (throws unless exactly one). */
  value(name: string, where: Readonly<Record<string, string>> = {}): number {
    const found = this.select(name, where);
    if (found.length !== 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(where)}`);
    return found[0]!.value;
  }

  /** Each series' labels (without `le`) of a metric. */
  series(name: string): Array<Readonly<Record<string, string>>> {
    const seen = new Map<string, Record<string, string>>();
    for (const s of this.select(name)) {
      const { le: _le, ...rest } = s.labels;
      seen.set(JSON.stringify(rest), rest);
    }
    return [...seen.values()];
  }
}
