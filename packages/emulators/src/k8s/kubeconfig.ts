/**
 * A kubeconfig pointing at the emulator: its cluster (over HTTPS with the emulator's
 * CA, as a real cluster's kubeconfig; over plain HTTP with insecure-skip-tls-verify,
 * the only way clients such as @kubernetes/client-node accept an http:// server) and a
 * bearer-token user. Strings are written JSON-quoted, which YAML reads as is.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

export interface KubeconfigOptions {
  readonly server: string;
  readonly token: string;
  readonly namespace: string;
  /** The name used for the cluster, the user and the context. */
  readonly name: string;
  /** The CA certificate (PEM) of an https:// server, written inline as `certificate-authority-data`. */
  readonly ca?: string | undefined;
  /** A CA file to name as `certificate-authority` instead (an absolute path is written). */
  readonly caFile?: string | undefined;
}

/** Where `writeKubeconfig` put its files. */
export interface WrittenKubeconfig {
  readonly kubeconfig: string;
  /** The CA certificate next to it; undefined for a plain-HTTP server. */
  readonly ca: string | undefined;
}

function clusterTls(o: KubeconfigOptions): string[] {
  if (o.server.startsWith('http:')) return ['    insecure-skip-tls-verify: true'];
  if (o.caFile !== undefined) return [`    certificate-authority: ${JSON.stringify(resolve(o.caFile))}`];
  if (o.ca !== undefined) return [`    certificate-authority-data: ${JSON.stringify(Buffer.from(o.ca).toString('base64'))}`];
  // An https:// server without a CA of its own: clients verify it against their usual roots.
  return [];
}

export function kubeconfigText(o: KubeconfigOptions): string {
  const q = (s: string) => JSON.stringify(s);
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: ${q(o.name)}`,
    '  cluster:',
    `    server: ${q(o.server)}`,
    ...clusterTls(o),
    'users:',
    `- name: ${q(o.name)}`,
    '  user:',
    `    token: ${q(o.token)}`,
    'contexts:',
    `- name: ${q(o.name)}`,
    '  context:',
    `    cluster: ${q(o.name)}`,
    `    user: ${q(o.name)}`,
    `    namespace: ${q(o.namespace)}`,
    `current-context: ${q(o.name)}`,
    '',
  ].join('\n');
}

/** Writes the kubeconfig and, for an HTTPS server, its CA at `<path>.ca.crt`, which it names. */
export async function writeKubeconfigFile(path: string, o: KubeconfigOptions): Promise<WrittenKubeconfig> {
  await mkdir(dirname(path), { recursive: true });
  const useFile = !o.server.startsWith('http:') && o.ca !== undefined;
  const ca = useFile ? resolve(`${path}.ca.crt`) : undefined;
  if (ca !== undefined) await writeFile(ca, o.ca ?? '', { mode: 0o644 });
  await writeFile(path, kubeconfigText({ ...o, caFile: ca }), { mode: 0o600 });
  return { kubeconfig: resolve(path), ca };
}
