/**
 * Keeps passwords in URLs out of what the command prints and logs: URLs are shown
 * with the password masked, and every line is scrubbed of the secrets the
 * configured URLs carry (an error message from a backend may quote its URL whole).
 */
import type { Logger } from '@taskgraph/api';
import { createLogger } from '@taskgraph/core';
import type { CliConfig } from './config.js';

const MASK = '***';
const QUERY_SECRET = /([?&](?:password|token|secret)=)([^&#]*)/gi;
const USERINFO_PASSWORD = /^([a-z][a-z0-9+.-]*:\/\/[^/@?#:]*):([^/@?#]*)@/i;

/** The URL with the password of its user info and any password/token/secret parameter masked. */
export function maskUrl(url: string): string {
  return url.replace(USERINFO_PASSWORD, `$1:${MASK}@`).replace(QUERY_SECRET, `$1${MASK}`);
}

/** The secrets a URL carries, raw and decoded, as they could appear in a message. */
export function secretsOf(url: string): string[] {
  const found: string[] = [];
  const userinfo = USERINFO_PASSWORD.exec(url);
  if (userinfo?.[2]) found.push(userinfo[2]);
  for (const m of url.matchAll(QUERY_SECRET)) if (m[2]) found.push(m[2]);
  const out = new Set<string>();
  for (const s of found) {
    out.add(s);
    try {
      out.add(decodeURIComponent(s));
    } catch {
      // a malformed escape: the raw form is all there is to hide
    }
  }
  return [...out].filter((s) => s.length > 0);
}

/** A function that masks every secret of the configured URLs in a line. */
export function redactor(config: { readonly coordinator?: string | undefined; readonly transport?: string | undefined }): (line: string) => string {
  const secrets = [config.coordinator, config.transport].flatMap((u) => (u ? secretsOf(u) : [])).sort((a, b) => b.length - a.length);
  if (secrets.length === 0) return (line) => line;
  return (line) => {
    let out = line;
    for (const s of secrets) out = out.split(s).join(MASK);
    return out;
  };
}

/** A logger writing to stderr with every line scrubbed by `redact`. */
export function scrubbedLogger(level: NonNullable<CliConfig['logLevel']>, redact: (line: string) => string): Logger {
  return createLogger({ level, write: (line) => process.stderr.write(`${redact(line)}\n`) });
}
