/**
 * Keeps passwords in URLs out of what the command prints and logs: URLs are shown
 * with the password masked, and every line is scrubbed of the secrets the
 * configured URLs carry (an error message from a backend may quote its URL whole).
 */
import type { Logger } from '@taskgraph/api';
import { createLogger, maskUrl, secretsOf } from '@taskgraph/core';
import type { CliConfig } from './config.js';

export { maskUrl };

const MASK = '***';

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
