/**
 * A small structured logger: one line per event, `time level message key=value`,
 * or JSON lines with `format: 'json'`. Level from options or TASKGRAPH_LOG_LEVEL.
 */
import type { LogFields, LogLevel, Logger } from '@taskgraph/api';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  readonly level?: LogLevel | 'silent';
  readonly format?: 'text' | 'json';
  /** Where lines go; default: stderr. */
  readonly write?: (line: string) => void;
  readonly fields?: LogFields;
}

function levelFromEnv(): LogLevel | 'silent' {
  const v = process.env['TASKGRAPH_LOG_LEVEL'];
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' || v === 'silent' ? v : 'info';
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) return JSON.stringify(`${v.name}: ${v.message}`);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? levelFromEnv();
  const threshold = level === 'silent' ? Infinity : LEVELS[level];
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const format = options.format ?? (process.env['TASKGRAPH_LOG_FORMAT'] === 'json' ? 'json' : 'text');
  const make = (base: LogFields): Logger => {
    const log = (lvl: LogLevel, message: string, fields?: LogFields) => {
      if (LEVELS[lvl] < threshold) return;
      const all = fields ? { ...base, ...fields } : base;
      const time = new Date().toISOString();
      if (format === 'json') {
        write(JSON.stringify({ time, level: lvl, msg: message, ...all }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Error ? v.message : v)));
      } else {
        const kv = Object.entries(all)
          .map(([k, v]) => `${k}=${formatValue(v)}`)
          .join(' ');
        write(`${time} ${lvl.toUpperCase().padEnd(5)} ${message}${kv ? ` ${kv}` : ''}`);
      }
    };
    return {
      debug: (m, f) => log('debug', m, f),
      info: (m, f) => log('info', m, f),
      warn: (m, f) => log('warn', m, f),
      error: (m, f) => log('error', m, f),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(options.fields ?? {});
}

/** A logger that drops everything. */
export const silentLogger: Logger = createLogger({ level: 'silent' });
