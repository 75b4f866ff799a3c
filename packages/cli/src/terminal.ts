/**
 * Where the command's lines go: a terminal gets in-place redraws and colour, anything
 * else (a pipe, a file, a test) plain lines. Colour follows the usual conventions:
 * off when NO_COLOR is set (to anything), when TERM is "dumb", or off a terminal;
 * FORCE_COLOR turns it on.
 */
export interface Terminal {
  /** Whether the output is an interactive terminal (redraw in place). */
  readonly tty: boolean;
  /** Whether to colour. */
  readonly color: boolean;
  /** Writes raw text (escape sequences included) to the terminal. */
  write(text: string): void;
}

export const PLAIN: Terminal = { tty: false, color: false, write: () => undefined };

export function terminalOf(stream: NodeJS.WriteStream | undefined, env: NodeJS.ProcessEnv = process.env): Terminal {
  if (stream === undefined) return PLAIN;
  const tty = stream.isTTY === true && env['TERM'] !== 'dumb';
  const forced = env['FORCE_COLOR'] !== undefined && env['FORCE_COLOR'] !== '0';
  const color = env['NO_COLOR'] === undefined && (tty || forced);
  return { tty, color, write: (text) => void stream.write(text) };
}

const CODES = { red: 31, green: 32, yellow: 33, cyan: 36, bold: 1, dim: 2 } as const;
export type Style = keyof typeof CODES;

/** `text` in `style` when the terminal colours, else as it is. */
export function paint(t: Terminal, style: Style, text: string): string {
  return t.color ? `\u001b[${CODES[style]}m${text}\u001b[0m` : text;
}

/** Moves to the start of the line and clears it (a live status line redrawn in place). */
export const CLEAR_LINE = '\r\u001b[2K';
/** Clears the screen and moves home (a table redrawn in place). */
export const CLEAR_SCREEN = '\u001b[H\u001b[2J';
