/**
 * A kubeconfig pointing at the emulator: a plain-HTTP cluster (clients such as
 * @kubernetes/client-node only accept http:// servers with insecure-skip-tls-verify
 * set) and a bearer-token user. Strings are written JSON-quoted, which YAML reads as is.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface KubeconfigOptions {
  readonly server: string;
  readonly token: string;
  readonly namespace: string;
  /** The name used for the cluster, the user and the context. */
  readonly name: string;
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
    '    insecure-skip-tls-verify: true',
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

export async function writeKubeconfigFile(path: string, o: KubeconfigOptions): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, kubeconfigText(o), { mode: 0o600 });
}
