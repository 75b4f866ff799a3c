/**
 * The key checks Consul's HTTP layer applies to `/v1/kv/<key>`. Consul 1.21.5
 * started rejecting keys outside a small alphabet on that endpoint (the
 * transaction endpoint does not check); older servers accept any printable key.
 * The emulator enforces the strict rules by default so that a client that works
 * against it also works against a current server.
 */

export type KeyRules = 'strict' | 'permissive';

/** Endings a current Consul refuses because a cache in front of it might serve them as files. */
const CACHEABLE_ENDINGS = [
  '.js', '.css', '.html', '.htm', '.xml', '.json', '.txt', '.log', '.php', '.asp', '.jsp', '.cgi', '.pl', '.py',
  '.rb', '.sh', '.exe', '.dll', '.bat', '.cmd', '.com', '.scr', '.vbs', '.pdf', '.doc', '.docx', '.xls', '.xlsx',
  '.ppt', '.pptx', '.zip', '.rar', '.tar', '.gz', '.7z', '.bz2', '.jpg', '.jpeg', '.png', '.gif', '.svg', '.ico',
  '.bmp', '.mp3', '.mp4', '.avi', '.mov', '.wmv', '.flv', '.swf', '.woff', '.woff2', '.ttf', '.eot', '.otf',
];

function allowedInStrictKey(c: string): boolean {
  return /^[A-Za-z0-9,\-_./]$/.test(c);
}

/** True when the text has a character Consul's HTTP server filters out of request paths. */
export function hasUnprintable(text: string): boolean {
  for (const c of text) {
    const code = c.codePointAt(0) ?? 0;
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0xa0 || code === 0xfeff) return true;
  }
  return false;
}

/** The reason a key is refused on `/v1/kv`, or undefined when it is accepted. */
export function kvKeyProblem(key: string, rules: KeyRules): string | undefined {
  if (key.startsWith('/')) return "key must not begin with a '/'";
  if (rules === 'permissive') return undefined;
  let position = 0;
  for (const c of key) {
    if (!allowedInStrictKey(c)) {
      return `key contains invalid character '${c}' at position ${position}. Only alphanumeric characters and ,-_./ are allowed`;
    }
    position += 1;
  }
  if (key.includes('../')) return 'key contains path traversal sequence';
  const lower = key.toLowerCase();
  for (const ending of CACHEABLE_ENDINGS) {
    if (lower.endsWith(ending)) return `key contains suspicious file extension '${ending}' that may be cached by proxies`;
  }
  return undefined;
}
