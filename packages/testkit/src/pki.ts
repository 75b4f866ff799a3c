/**
 * Throwaway certificates for tests, made with the openssl command in a temporary
 * dir: a job CA and node certificates it signs (mutual TLS), and a second CA that
 * stands for whoever does not hold the job's. Nothing here is ever committed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

export interface Pki {
  readonly dir: string;
  /** The CA's certificate file. */
  readonly ca: string;
  /** A certificate and key signed by this CA, for `name`. */
  issue(name: string): CertFiles;
  pem(path: string): Buffer;
  remove(): void;
}

function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

/** A new CA (EC P-256) in its own temporary dir. */
export function makeTestPki(label: string): Pki {
  const dir = mkdtempSync(join(tmpdir(), `tg-pki-${label}-`));
  const ca = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca-key.pem');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', '1', '-subj', `/CN=${label} CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return {
    dir,
    ca,
    issue(name) {
      const key = join(dir, `${name}-key.pem`);
      const csr = join(dir, `${name}.csr`);
      const cert = join(dir, `${name}.pem`);
      const ext = join(dir, `${name}.ext`);
      openssl(['req', ...ec, '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
      execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n' > "$1"`, 'sh', ext]);
      openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '1', '-extfile', ext]);
      return { cert, key };
    },
    pem: (path) => readFileSync(path),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
