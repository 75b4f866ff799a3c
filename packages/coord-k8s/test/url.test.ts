import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { TaskGraphError } from '@taskgraph/api';
import { kubeconfigText } from '@taskgraph/emulators';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCoordinator, createK8sCoordinator, parseK8sUrl } from '../src/index.js';

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(TaskGraphError.is(err, 'INVALID_ARGUMENT')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidArgumentError');
}

async function invalidAsync(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(TaskGraphError.is(err, 'INVALID_ARGUMENT')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidArgumentError');
}

describe('parseK8sUrl', () => {
  it('reads namespace, context, prefix and kubeconfig from the query', () => {
    expect(parseK8sUrl('k8s://')).toEqual({});
    expect(parseK8sUrl('k8s://?namespace=jobs&context=prod&prefix=tg-a&kubeconfig=/etc/kube/config')).toEqual({
      namespace: 'jobs',
      context: 'prod',
      prefix: 'tg-a',
      kubeconfigPath: '/etc/kube/config',
    });
    expect(parseK8sUrl(new URL('k8s:///?namespace=default'))).toEqual({ namespace: 'default' });
    expect(parseK8sUrl('k8s://?ca=%2Fetc%2Fkube%2Fca.crt')).toEqual({ caFile: '/etc/kube/ca.crt' });
  });

  it('refuses a host, a path, a fragment, unknown or repeated parameters with one clear sentence', () => {
    expect(invalid(() => parseK8sUrl('k8s://api.example.com:6443?namespace=x'))).toMatch(/names a host; the API server and credentials come from the kubeconfig/);
    expect(invalid(() => parseK8sUrl('k8s://?namespace=a&namespace=b'))).toMatch(/more than once/);
    expect(invalid(() => parseK8sUrl('k8s://?ns=x'))).toMatch(/unknown parameter "ns"; known: namespace, context, prefix, kubeconfig, ca/);
    expect(invalid(() => parseK8sUrl('k8s:///jobs'))).toMatch(/has a path/);
    expect(invalid(() => parseK8sUrl('k8s://?namespace=x#frag'))).toMatch(/fragment/);
    expect(invalid(() => parseK8sUrl('etcd://localhost:2379'))).toMatch(/is not a k8s:\/\/ URL/);
    expect(invalid(() => parseK8sUrl('not a url'))).toMatch(/is not a URL/);
    expect(invalid(() => parseK8sUrl('k8s://?namespace='))).toMatch(/empty "namespace"/);
  });

  it('checks the namespace and the prefix, which become names and label values', () => {
    expect(invalid(() => parseK8sUrl('k8s://?namespace=Bad_NS'))).toMatch(/Kubernetes namespace "Bad_NS" is invalid/);
    expect(invalid(() => parseK8sUrl('k8s://?prefix=Has.Dots'))).toMatch(/store prefix "Has.Dots" is invalid/);
    expect(invalid(() => parseK8sUrl(`k8s://?prefix=${'a'.repeat(41)}`))).toMatch(/1 to 40/);
  });
});

describe('createK8sCoordinator and its kubeconfig', () => {
  let dir: string;
  let path: string;
  const saved = process.env['KUBECONFIG'];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'coord-k8s-url-'));
    path = join(dir, 'config');
    // Two contexts; nothing listens there: creating a coordinator makes no request.
    const one = kubeconfigText({ server: 'http://127.0.0.1:9', token: 't', namespace: 'team-a', name: 'one' });
    const kc = new KubeConfig();
    kc.loadFromString(one);
    kc.addContext({ name: 'two', cluster: 'one', user: 'one', namespace: 'team-b' });
    await writeFile(path, kc.exportConfig());
  });

  afterAll(async () => {
    if (saved === undefined) delete process.env['KUBECONFIG'];
    else process.env['KUBECONFIG'] = saved;
    await rm(dir, { recursive: true, force: true });
  });

  it("takes the namespace from the kubeconfig context unless the URL names one", async () => {
    const a = await createK8sCoordinator(`k8s://?kubeconfig=${encodeURIComponent(path)}&prefix=p`);
    expect(a.namespace).toBe('team-a');
    expect(a.prefix).toBe('p');
    const b = await createK8sCoordinator(`k8s://?kubeconfig=${encodeURIComponent(path)}&context=two`);
    expect(b.namespace).toBe('team-b');
    expect(b.prefix).toBe('tg');
    const c = await createCoordinator(`k8s://?kubeconfig=${encodeURIComponent(path)}&context=two&namespace=explicit`);
    expect(c.namespace).toBe('explicit');
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  it('loads from KUBECONFIG when the URL names no file', async () => {
    process.env['KUBECONFIG'] = path;
    const c = await createK8sCoordinator('k8s://?context=two');
    expect(c.namespace).toBe('team-b');
    await c.close();
  });

  it('accepts a loaded KubeConfig in the options', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    const c = await createK8sCoordinator({ kubeConfig: kc, namespace: 'given', prefix: 'x1' });
    expect([c.namespace, c.prefix]).toEqual(['given', 'x1']);
    await c.close();
  });

  it('explains a missing context, a missing file and bad options', async () => {
    expect(await invalidAsync(createK8sCoordinator(`k8s://?kubeconfig=${encodeURIComponent(path)}&context=nope`))).toBe(
      'the kubeconfig has no context "nope"; it has "one", "two"',
    );
    expect(await invalidAsync(createK8sCoordinator(`k8s://?kubeconfig=${encodeURIComponent(join(dir, 'missing'))}`))).toMatch(
      /could not load the kubeconfig: no such file/,
    );
    expect(await invalidAsync(createK8sCoordinator({ kubeconfigPath: path, requestTimeoutMs: -1 }))).toMatch(/requestTimeoutMs must be a positive number/);
    expect(await invalidAsync(createK8sCoordinator({ kubeconfigPath: path, watchTimeoutSeconds: [10, 5] }))).toMatch(/watchTimeoutSeconds/);
    expect(await invalidAsync(createK8sCoordinator({ kubeconfigPath: path, prefix: 'UPPER' }))).toMatch(/store prefix "UPPER" is invalid/);
  });
});
