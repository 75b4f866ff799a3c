// deploy/k8s: every manifest parses as the Kubernetes objects it claims to be, the
// Role grants exactly the verbs the backend calls (its RBAC_RULES, and the verbs a
// full workload really sends to the emulator), the ServiceAccount is bound, and the
// nodes and the controller agree on image, coordinator and ports.
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { loadAllYaml, V1Deployment, V1Job, V1Role, V1RoleBinding, V1ServiceAccount, type V1Container } from '@kubernetes/client-node';
import yaml from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseK8sUrl, RBAC_RULES } from '../src/index.js';
import { startHarness, type Harness } from './helpers.js';

const DIR = fileURLToPath(new URL('../../../deploy/k8s/', import.meta.url));

interface Manifest {
  readonly file: string;
  readonly raw: Record<string, unknown>;
  readonly typed: unknown;
}

const manifests: Manifest[] = [];

beforeAll(async () => {
  const files = (await readdir(DIR)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  for (const file of files) {
    const text = await readFile(`${DIR}${file}`, 'utf8');
    const raws = yaml.loadAll(text) as Record<string, unknown>[];
    const typed = loadAllYaml(text);
    raws.forEach((raw, i) => manifests.push({ file, raw, typed: typed[i] }));
  }
});

function only<T>(cls: new () => T, name?: string): T {
  const found = manifests.map((m) => m.typed).filter((t): t is T => t instanceof cls && (name === undefined || (t as { metadata?: { name?: string } }).metadata?.name === name));
  expect(found, `exactly one ${cls.name}${name ? ` ${name}` : ''}`).toHaveLength(1);
  return found[0] as T;
}

/** Field names in the YAML that the typed model does not know (typos, misplaced keys). */
function unknownFields(raw: unknown, typed: unknown, path: string, out: string[]): void {
  if (Array.isArray(raw)) {
    raw.forEach((r, i) => unknownFields(r, Array.isArray(typed) ? typed[i] : undefined, `${path}[${i}]`, out));
    return;
  }
  if (typeof raw !== 'object' || raw === null) return;
  const t = (typed ?? {}) as Record<string, unknown>;
  const free = path.endsWith('.labels') || path.endsWith('.annotations') || path.endsWith('.matchLabels') || path.endsWith('.limits') || path.endsWith('.requests');
  for (const [k, v] of Object.entries(raw)) {
    if (free) continue;
    if (!(k in t)) out.push(`${path}.${k}`);
    else unknownFields(v, t[k], `${path}.${k}`, out);
  }
}

describe('deploy/k8s manifests', () => {
  it('parse, and use no field their kind does not have', () => {
    expect(manifests.map((m) => `${m.file}: ${String(m.raw['kind'])}`)).toEqual([
      'controller-job.yaml: Job',
      'namespace.yaml: Namespace',
      'nodes.yaml: Deployment',
      'rbac.yaml: ServiceAccount',
      'rbac.yaml: Role',
      'rbac.yaml: RoleBinding',
    ]);
    for (const m of manifests) {
      const unknown: string[] = [];
      unknownFields(m.raw, m.typed, String(m.raw['kind']), unknown);
      expect(unknown, `${m.file}: unknown fields`).toEqual([]);
    }
  });

  it('kustomization.yaml lists every manifest', async () => {
    const k = yaml.load(await readFile(`${DIR}kustomization.yaml`, 'utf8')) as { resources: string[]; namespace: string };
    expect([...k.resources].sort()).toEqual([...new Set(manifests.map((m) => m.file))].sort());
    const ns = only(V1RoleBinding).subjects?.[0]?.namespace;
    expect(ns).toBe(k.namespace);
  });

  it('the Role grants exactly the verbs the backend declares, on ConfigMaps and Leases only', () => {
    const role = only(V1Role, 'taskgraph-coordinator');
    const norm = (rules: readonly { apiGroups?: readonly string[]; resources?: readonly string[]; verbs: readonly string[] }[]) =>
      rules.map((r) => ({ apiGroups: [...(r.apiGroups ?? [])].sort(), resources: [...(r.resources ?? [])].sort(), verbs: [...r.verbs].sort() }));
    expect(norm(role.rules ?? [])).toEqual(norm(RBAC_RULES));
    for (const r of role.rules ?? []) {
      expect(r.verbs).not.toContain('*');
      expect(r.resourceNames).toBeUndefined();
    }
  });

  it('binds the Role to the ServiceAccount both workloads run as', () => {
    const sa = only(V1ServiceAccount);
    const binding = only(V1RoleBinding);
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'taskgraph-coordinator' });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata?.name, namespace: 'taskgraph' }]);
    expect(only(V1Deployment).spec?.template.spec?.serviceAccountName).toBe(sa.metadata?.name);
    expect(only(V1Job).spec?.template.spec?.serviceAccountName).toBe(sa.metadata?.name);
  });

  it('nodes and controller agree: one image, one coordinator URL, the same job; nodes advertise their pod IP on the transport port', () => {
    const deployment = only(V1Deployment);
    const job = only(V1Job);
    const node = deployment.spec?.template.spec?.containers[0] as V1Container;
    const controller = job.spec?.template.spec?.containers[0] as V1Container;
    expect(node.image).toBe(controller.image);
    expect(deployment.spec?.selector.matchLabels).toEqual(
      Object.fromEntries(Object.entries(deployment.spec?.template.metadata?.labels ?? {}).filter(([k]) => k === 'app.kubernetes.io/name')),
    );

    const env = (c: V1Container, name: string) => c.env?.find((e) => e.name === name);
    // $(NAMESPACE) comes from the downward API in both.
    for (const c of [node, controller]) expect(env(c, 'NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.namespace');
    expect(env(node, 'TASKGRAPH_ADVERTISE_HOST')?.valueFrom?.fieldRef?.fieldPath).toBe('status.podIP');
    expect(env(node, 'TASKGRAPH_JOB')?.value).toBe(env(controller, 'TASKGRAPH_JOB')?.value);

    expect(node.command).toEqual(['taskgraph']);
    const args = node.args ?? [];
    expect(args.slice(0, 2)).toEqual(['node', 'regression']);
    const flag = (name: string) => args[args.indexOf(name) + 1];
    expect(flag('--job')).toBe('$(TASKGRAPH_JOB)');
    const nodeUrl = flag('--coordinator') ?? '';
    expect(nodeUrl).toBe(env(controller, 'TASKGRAPH_COORDINATOR')?.value);
    expect(parseK8sUrl(nodeUrl.replace('$(NAMESPACE)', 'taskgraph'))).toEqual({ namespace: 'taskgraph', prefix: 'tg' });
    const transport = new URL(flag('--transport') ?? '');
    expect(transport.protocol).toBe('grpc:');
    expect(transport.hostname).toBe('0.0.0.0');
    expect(node.ports?.map((p) => p.containerPort)).toEqual([Number(transport.port)]);

    // The controller creates the job it then follows, with the app the nodes run.
    const script = (controller.args ?? []).join(' ');
    expect(script).toMatch(/taskgraph job create "\$TASKGRAPH_JOB" --tasks "\$TASKGRAPH_TASKS" --app regression/);
    expect(script).toMatch(/exec taskgraph job watch "\$TASKGRAPH_JOB"/);
    expect(job.spec?.template.spec?.restartPolicy).toBe('Never');
    // More nodes than tasks: the rest are standbys.
    expect(deployment.spec?.replicas).toBeGreaterThan(Number(env(controller, 'TASKGRAPH_TASKS')?.value));
  });
});

describe('the verbs a workload really sends', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness();
  });

  afterAll(async () => {
    await h.close();
  });

  it('are all granted, and every granted verb is used', async () => {
    const a = await h.client('rbac');
    const b = await h.client('rbac');
    const bytes = (s: string) => new TextEncoder().encode(s);
    const s = await a.openSession({ ttlMs: 2000 });
    const v = await a.create('k/1', bytes('1'), { session: s });
    await a.update('k/1', bytes('2'), v);
    await a.list('k/');
    const controller = new AbortController();
    const it = a.watch('k/', { signal: controller.signal })[Symbol.asyncIterator]();
    const first = it.next();
    await a.create('k/2', bytes('x'));
    await first;
    controller.abort();
    await it.return?.();
    const lock = await a.acquire('l', s);
    const sb = await b.openSession({ ttlMs: 2000 });
    const waiting = b.acquire('l', sb);
    await lock.release();
    await (await waiting).release();
    await a.holder('l');
    await b.deletePrefix('k/');
    await a.close();
    await b.close();
    const used = [...h.emulator.verbsUsed().keys()].sort();
    const granted = RBAC_RULES.flatMap((r) => r.resources.flatMap((res) => r.verbs.map((verb) => `${res}:${verb}`))).sort();
    expect(used).toEqual(granted);
  });
});
