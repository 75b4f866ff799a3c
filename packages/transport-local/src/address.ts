/**
 * Addresses and URLs of the local transport: `local://<name>` names a server on a
 * LocalNetwork; `local://` (no name) lets the network pick one.
 */
import { InvalidArgumentError } from '@taskgraph/api';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const NAME_RULE = 'letters, digits, ".", "_" and "-", starting with a letter or digit, at most 128';

export const SCHEME = 'local://';

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

export function assertValidName(name: unknown, what = 'server name'): asserts name is string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    const shown = typeof name === 'string' ? quote(name) : String(name);
    throw new InvalidArgumentError(`${what} ${shown} is invalid: use ${NAME_RULE}`);
  }
}

export function addressOf(name: string): string {
  return `${SCHEME}${name}`;
}

/** The server name in a `local://<name>` address. */
export function parseAddress(address: unknown): string {
  if (typeof address !== 'string') {
    throw new InvalidArgumentError(`a local transport address must be a string like "local://node-1", got ${typeof address}`);
  }
  const name = address.startsWith(SCHEME) ? address.slice(SCHEME.length) : undefined;
  if (name === undefined || !NAME.test(name)) {
    throw new InvalidArgumentError(
      `${quote(address)} is not a local transport address: expected "local://<name>" with a name of ${NAME_RULE}`,
    );
  }
  return name;
}

export interface ParsedUrl {
  readonly name?: string;
  readonly maxMessageBytes?: number;
}

const URL_SHAPE = /^local:\/\/([^/?#]*)\/?(?:\?([^#]*))?$/i;
const URL_PARAMS = ['maxMessageBytes'] as const;

/** Parses `local://[name][?maxMessageBytes=N]`. */
export function parseTransportUrl(url: string | URL): ParsedUrl {
  const text = typeof url === 'string' ? url : url.href;
  const match = URL_SHAPE.exec(text);
  if (!match) {
    throw new InvalidArgumentError(
      `local transport URL ${quote(text)} is invalid: expected "local://" or "local://<name>", optionally with "?maxMessageBytes=<n>"`,
    );
  }
  const host = match[1] ?? '';
  let name: string | undefined;
  if (host !== '') {
    assertValidName(host, `server name in local transport URL ${quote(text)}`);
    name = host;
  }
  let maxMessageBytes: number | undefined;
  const seen = new Set<string>();
  for (const [key, value] of new URLSearchParams(match[2] ?? '')) {
    if (!(URL_PARAMS as readonly string[]).includes(key)) {
      throw new InvalidArgumentError(
        `local transport URL ${quote(text)} has an unknown parameter ${quote(key)}; the only one is "maxMessageBytes"`,
      );
    }
    if (seen.has(key)) throw new InvalidArgumentError(`local transport URL ${quote(text)} repeats the parameter ${quote(key)}`);
    seen.add(key);
    if (!/^[0-9]+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
      throw new InvalidArgumentError(`local transport URL ${quote(text)}: maxMessageBytes must be a positive integer, got ${quote(value)}`);
    }
    maxMessageBytes = Number(value);
  }
  return { ...(name === undefined ? {} : { name }), ...(maxMessageBytes === undefined ? {} : { maxMessageBytes }) };
}
