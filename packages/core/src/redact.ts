/**
 * URLs as they may be shown: a backend URL can carry a password (user info, or a
 * `password`/`token`/`secret` parameter), and messages, logs and progress lines quote
 * URLs. Everything core says about a URL goes through `maskUrl`.
 */

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

/** `text` with every secret `url` carries masked (a backend's message may quote its URL whole). */
export function scrubSecrets(text: string, url: string): string {
  let out = text;
  for (const secret of secretsOf(url).sort((a, b) => b.length - a.length)) out = out.split(secret).join(MASK);
  return out;
}
