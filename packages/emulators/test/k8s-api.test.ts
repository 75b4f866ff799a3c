import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from '@taskgraph/testkit';
import { makeServingCertificates, startK8sEmulator, type K8sEmulator, type ServingCertificates } from '../src/index.js';
import { call, CM, LEASES, pick, settledTcpHandles, str, tcpHandles } from './k8s-helpers.js';

let em: K8sEmulator;
// One TLS identity for the file's emulators (given, not made per start): every request
// still goes over HTTPS and verifies it, without half a second of key generation per test.
let certificates: ServingCertificates;

beforeAll(async () => {
  certificates = await makeServingCertificates();
});

beforeEach(async () => {
  em = await startK8sEmulator({ tls: certificates });
  expect(em.ca).toBe(certificates.ca);
});

afterEach(async () => {
  await em.close();
});

const cm = (name: string, extra: Record<string, unknown> = {}) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, ...extra });
const lease = (name: string, spec: Record<string, unknown> = {}) => ({ metadata: { name }, spec });

describe('ConfigMaps: create and get', () => {
  it('creates with server-owned metadata and answers 201; get returns the same object', async () => {
    const created = await call(em, 'POST', CM(), cm('a', { metadata: { name: 'a', labels: { app: 'x' } }, data: { k: 'v' } }));
    expect(created.status).toBe(201);
    const meta = pick(created.body, 'metadata');
    expect(meta).toMatchObject({ name: 'a', namespace: 'default', labels: { app: 'x' } });
    expect(str(meta, 'uid')).toMatch(/^[0-9a-f-]{36}$/);
    expect(str(meta, 'resourceVersion')).toMatch(/^\d+$/);
    expect(str(meta, 'creationTimestamp')).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    // ConfigMap's registry strategy does not track generation, so the real server omits it.
    expect(pick(meta, 'generation')).toBeUndefined();
    const got = await call(em, 'GET', `${CM()}/a`);
    expect(got.status).toBe(200);
    expect(got.body).toEqual(created.body);
  });

  it('answers 409 AlreadyExists with a Status body', async () => {
    await call(em, 'POST', CM(), cm('a'));
    const again = await call(em, 'POST', CM(), cm('a'));
    expect(again.status).toBe(409);
    expect(again.body).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'configmaps "a" already exists',
      reason: 'AlreadyExists',
      details: { name: 'a', kind: 'configmaps' },
      code: 409,
    });
  });

  it('answers 404 NotFound, naming the group for Leases', async () => {
    const a = await call(em, 'GET', `${CM()}/nope`);
    expect(a.status).toBe(404);
    expect(a.body).toMatchObject({ reason: 'NotFound', message: 'configmaps "nope" not found', details: { name: 'nope', kind: 'configmaps' } });
    const b = await call(em, 'GET', `${LEASES()}/nope`);
    expect(b.body).toMatchObject({
      reason: 'NotFound',
      code: 404,
      message: 'leases.coordination.k8s.io "nope" not found',
      details: { name: 'nope', group: 'coordination.k8s.io', kind: 'leases' },
    });
  });

  it('refuses a resourceVersion on create, as the etcd3 storage does', async () => {
    const r = await call(em, 'POST', CM(), cm('a', { metadata: { name: 'a', resourceVersion: '5' } }));
    expect(r.status).toBe(500);
    expect(str(r.body, 'message')).toContain('resourceVersion should not be set on objects to be created');
  });

  it('creates only in namespaces that exist', async () => {
    const r = await call(em, 'POST', CM('ghost'), cm('a'));
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({ reason: 'NotFound', message: 'namespaces "ghost" not found', details: { name: 'ghost', kind: 'namespaces' } });
    em.createNamespace('ghost');
    expect((await call(em, 'POST', CM('ghost'), cm('a'))).status).toBe(201);
    // Reads in a namespace without objects are empty, not errors.
    const list = await call(em, 'GET', CM('other'));
    expect(list.status).toBe(200);
    expect(pick(list.body, 'items')).toEqual([]);
  });

  it('generates names from generateName', async () => {
    const r = await call(em, 'POST', CM(), { metadata: { generateName: 'job-' } });
    expect(r.status).toBe(201);
    expect(str(r.body, 'metadata', 'name')).toMatch(/^job-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
  });
});

describe('one resourceVersion counter across kinds', () => {
  it('hands out increasing versions to ConfigMaps and Leases alike, and lists report the newest', async () => {
    const a = await call(em, 'POST', CM(), cm('a'));
    const l = await call(em, 'POST', LEASES(), lease('l'));
    const b = await call(em, 'POST', CM(), cm('b'));
    const rvs = [a, l, b].map((r) => Number(str(r.body, 'metadata', 'resourceVersion')));
    expect(rvs[1]).toBeGreaterThan(rvs[0] ?? Infinity);
    expect(rvs[2]).toBeGreaterThan(rvs[1] ?? Infinity);
    await call(em, 'POST', LEASES(), lease('m'));
    const list = await call(em, 'GET', CM());
    // The list's version is the store's newest, even though that write was a Lease.
    expect(str(list.body, 'metadata', 'resourceVersion')).toBe(em.resourceVersion());
    expect(pick(list.body, 'kind')).toBe('ConfigMapList');
    // Items of a list carry no kind/apiVersion, as on a real server.
    expect(pick(list.body, 'items', 0, 'kind')).toBeUndefined();
  });
});

describe('update (PUT)', () => {
  it('updates with the current resourceVersion and answers 409 Conflict for a stale one', async () => {
    const created = await call(em, 'POST', CM(), cm('a', { data: { k: '1' } }));
    const rv = str(created.body, 'metadata', 'resourceVersion');
    const ok = await call(em, 'PUT', `${CM()}/a`, cm('a', { metadata: { name: 'a', resourceVersion: rv }, data: { k: '2' } }));
    expect(ok.status).toBe(200);
    expect(Number(str(ok.body, 'metadata', 'resourceVersion'))).toBeGreaterThan(Number(rv));
    expect(str(ok.body, 'metadata', 'uid')).toBe(str(created.body, 'metadata', 'uid'));
    expect(str(ok.body, 'metadata', 'creationTimestamp')).toBe(str(created.body, 'metadata', 'creationTimestamp'));
    const stale = await call(em, 'PUT', `${CM()}/a`, cm('a', { metadata: { name: 'a', resourceVersion: rv }, data: { k: '3' } }));
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({
      reason: 'Conflict',
      message: 'Operation cannot be fulfilled on configmaps "a": the object has been modified; please apply your changes to the latest version and try again',
      details: { name: 'a', kind: 'configmaps' },
    });
  });

  it('lets a ConfigMap be updated without a resourceVersion (unconditionally), but not a Lease', async () => {
    await call(em, 'POST', CM(), cm('a', { data: { k: '1' } }));
    const blind = await call(em, 'PUT', `${CM()}/a`, cm('a', { data: { k: '2' } }));
    expect(blind.status).toBe(200);
    expect(pick(blind.body, 'data')).toEqual({ k: '2' });
    await call(em, 'POST', LEASES(), lease('l', { holderIdentity: 'x' }));
    const r = await call(em, 'PUT', `${LEASES()}/l`, lease('l', { holderIdentity: 'y' }));
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({
      reason: 'Invalid',
      message: 'leases.coordination.k8s.io "l" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update',
    });
  });

  it('answers 404 for a missing ConfigMap but creates a missing Lease (AllowCreateOnUpdate)', async () => {
    expect((await call(em, 'PUT', `${CM()}/a`, cm('a'))).status).toBe(404);
    const created = await call(em, 'PUT', `${LEASES()}/l`, lease('l', { holderIdentity: 'x' }));
    expect(created.status).toBe(201);
    // Even with a stale resourceVersion: the object does not exist, so there is nothing to compare.
    await call(em, 'DELETE', `${LEASES()}/l`);
    const again = await call(em, 'PUT', `${LEASES()}/l`, { metadata: { name: 'l', resourceVersion: '1' }, spec: {} });
    expect(again.status).toBe(201);
  });

  it("treats the body's uid as a precondition, which fails against a deleted (or re-created) object", async () => {
    const first = await call(em, 'POST', LEASES(), lease('l'));
    const body = first.body as Record<string, unknown>;
    await call(em, 'DELETE', `${LEASES()}/l`);
    const gone = await call(em, 'PUT', `${LEASES()}/l`, body);
    expect(gone.status).toBe(409);
    expect(str(gone.body, 'message')).toBe(
      `Operation cannot be fulfilled on leases.coordination.k8s.io "l": Precondition failed: UID in precondition: ${str(body, 'metadata', 'uid')}, UID in object meta: `,
    );
    await call(em, 'POST', LEASES(), lease('l'));
    expect((await call(em, 'PUT', `${LEASES()}/l`, body)).status).toBe(409);
  });

  it('refuses a body whose name or namespace differs from the URL', async () => {
    await call(em, 'POST', CM(), cm('a'));
    const r = await call(em, 'PUT', `${CM()}/a`, cm('b'));
    expect(r.status).toBe(400);
    expect(str(r.body, 'message')).toBe('the name of the object (b) does not match the name on the URL (a)');
    const ns = await call(em, 'PUT', `${CM()}/a`, { metadata: { name: 'a', namespace: 'kube-system' } });
    expect(ns.status).toBe(400);
    expect(str(ns.body, 'message')).toBe('the namespace of the provided object does not match the namespace sent on the request');
  });

  it('does not bump the resourceVersion for an update that changes nothing', async () => {
    const created = await call(em, 'POST', CM(), cm('a', { data: { k: '1' } }));
    const rv = str(created.body, 'metadata', 'resourceVersion');
    const same = await call(em, 'PUT', `${CM()}/a`, cm('a', { metadata: { name: 'a', resourceVersion: rv }, data: { k: '1' } }));
    expect(same.status).toBe(200);
    expect(str(same.body, 'metadata', 'resourceVersion')).toBe(rv);
    expect(em.resourceVersion()).toBe(rv);
  });

  it('keeps an immutable ConfigMap immutable', async () => {
    await call(em, 'POST', CM(), cm('a', { immutable: true, data: { k: '1' } }));
    const r = await call(em, 'PUT', `${CM()}/a`, cm('a', { immutable: true, data: { k: '2' } }));
    expect(r.status).toBe(422);
    expect(str(r.body, 'message')).toContain('data: Forbidden: field is immutable when `immutable` is set');
  });
});

describe('merge patch', () => {
  it('merges maps and removes keys set to null', async () => {
    await call(em, 'POST', CM(), cm('a', { metadata: { name: 'a', labels: { x: '1', y: '2' } }, data: { k: '1', j: '2' } }));
    const r = await call(em, 'PATCH', `${CM()}/a`, { metadata: { labels: { y: null, z: '3' } }, data: { k: 'new' } }, { contentType: 'application/merge-patch+json' });
    expect(r.status).toBe(200);
    expect(pick(r.body, 'metadata', 'labels')).toEqual({ x: '1', z: '3' });
    expect(pick(r.body, 'data')).toEqual({ j: '2', k: 'new' });
  });

  it('uses a resourceVersion in the patch as a precondition, and patches Leases without one', async () => {
    const created = await call(em, 'POST', LEASES(), lease('l', { holderIdentity: 'a', leaseTransitions: 0 }));
    const rv = str(created.body, 'metadata', 'resourceVersion');
    const ok = await call(em, 'PATCH', `${LEASES()}/l`, { spec: { holderIdentity: 'b' } }, { contentType: 'application/merge-patch+json' });
    expect(ok.status).toBe(200);
    expect(pick(ok.body, 'spec', 'holderIdentity')).toBe('b');
    const stale = await call(em, 'PATCH', `${LEASES()}/l`, { metadata: { resourceVersion: rv }, spec: { holderIdentity: 'c' } }, { contentType: 'application/merge-patch+json' });
    expect(stale.status).toBe(409);
    expect(pick(stale.body, 'reason')).toBe('Conflict');
  });

  it('answers 404 for a missing object and 415 for patch types it does not implement', async () => {
    expect((await call(em, 'PATCH', `${CM()}/nope`, { data: {} }, { contentType: 'application/merge-patch+json' })).status).toBe(404);
    await call(em, 'POST', CM(), cm('a'));
    const r = await call(em, 'PATCH', `${CM()}/a`, [{ op: 'add', path: '/data', value: {} }], { contentType: 'application/json-patch+json' });
    expect(r.status).toBe(415);
    expect(pick(r.body, 'reason')).toBe('UnsupportedMediaType');
  });
});

describe('delete with preconditions', () => {
  it('checks resourceVersion and uid preconditions, then answers a Success Status', async () => {
    const created = await call(em, 'POST', CM(), cm('a'));
    const rv = str(created.body, 'metadata', 'resourceVersion');
    const uid = str(created.body, 'metadata', 'uid');
    const badRv = await call(em, 'DELETE', `${CM()}/a`, { kind: 'DeleteOptions', apiVersion: 'v1', preconditions: { resourceVersion: '1' } });
    expect(badRv.status).toBe(409);
    expect(str(badRv.body, 'message')).toBe(
      `Operation cannot be fulfilled on configmaps "a": Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: ${rv}`,
    );
    const badUid = await call(em, 'DELETE', `${CM()}/a`, { preconditions: { uid: 'x' } });
    expect(badUid.status).toBe(409);
    expect(str(badUid.body, 'message')).toContain('Precondition failed: UID in precondition: x, UID in object meta: ');
    const ok = await call(em, 'DELETE', `${CM()}/a`, { preconditions: { uid, resourceVersion: rv } });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name: 'a', kind: 'configmaps', uid } });
    expect((await call(em, 'DELETE', `${CM()}/a`)).status).toBe(404);
  });
});

describe('list', () => {
  beforeEach(async () => {
    await call(em, 'POST', CM(), cm('a', { metadata: { name: 'a', labels: { store: 'tg', tier: 'x' } } }));
    await call(em, 'POST', CM(), cm('b', { metadata: { name: 'b', labels: { store: 'tg', tier: 'y' } } }));
    await call(em, 'POST', CM(), cm('c', { metadata: { name: 'c', labels: { store: 'other' } } }));
    await call(em, 'POST', CM(), cm('d'));
  });

  const names = async (query: string) => {
    const r = await call(em, 'GET', `${CM()}?${query}`);
    expect(r.status).toBe(200);
    return (pick(r.body, 'items') as unknown[]).map((i) => str(i, 'metadata', 'name'));
  };

  it('filters by equality- and set-based label selectors', async () => {
    expect(await names('labelSelector=store%3Dtg')).toEqual(['a', 'b']);
    expect(await names('labelSelector=store%3D%3Dtg,tier!%3Dy')).toEqual(['a']);
    expect(await names('labelSelector=store!%3Dtg')).toEqual(['c', 'd']);
    expect(await names(`labelSelector=${encodeURIComponent('tier in (x, y)')}`)).toEqual(['a', 'b']);
    expect(await names(`labelSelector=${encodeURIComponent('tier notin (x)')}`)).toEqual(['b', 'c', 'd']);
    expect(await names('labelSelector=tier')).toEqual(['a', 'b']);
    expect(await names(`labelSelector=${encodeURIComponent('!tier')}`)).toEqual(['c', 'd']);
  });

  it('filters by metadata.name field selector and refuses other fields', async () => {
    expect(await names('fieldSelector=metadata.name%3Db')).toEqual(['b']);
    const r = await call(em, 'GET', `${CM()}?fieldSelector=data.k%3Dv`);
    expect(r.status).toBe(400);
    expect(str(r.body, 'message')).toBe('field label not supported: data.k');
    const bad = await call(em, 'GET', `${CM()}?labelSelector=${encodeURIComponent('a in b')}`);
    expect(bad.status).toBe(400);
  });

  it('pages with limit and continue over one consistent snapshot', async () => {
    const first = await call(em, 'GET', `${CM()}?limit=2`);
    expect((pick(first.body, 'items') as unknown[]).map((i) => str(i, 'metadata', 'name'))).toEqual(['a', 'b']);
    expect(pick(first.body, 'metadata', 'remainingItemCount')).toBe(2);
    const token = str(first.body, 'metadata', 'continue');
    // Changes after the first page do not show in later pages.
    await call(em, 'DELETE', `${CM()}/c`);
    await call(em, 'POST', CM(), cm('e'));
    const second = await call(em, 'GET', `${CM()}?limit=2&continue=${encodeURIComponent(token)}`);
    expect((pick(second.body, 'items') as unknown[]).map((i) => str(i, 'metadata', 'name'))).toEqual(['c', 'd']);
    expect(str(second.body, 'metadata', 'resourceVersion')).toBe(str(first.body, 'metadata', 'resourceVersion'));
    em.compact();
    const expired = await call(em, 'GET', `${CM()}?limit=2&continue=${encodeURIComponent(token)}`);
    expect(expired.status).toBe(410);
    expect(pick(expired.body, 'reason')).toBe('Expired');
  });

  it('serves resourceVersionMatch=Exact from retained history', async () => {
    const before = em.resourceVersion();
    await call(em, 'DELETE', `${CM()}/a`);
    const now = await names('');
    expect(now).toEqual(['b', 'c', 'd']);
    const then = await names(`resourceVersion=${before}&resourceVersionMatch=Exact`);
    expect(then).toEqual(['a', 'b', 'c', 'd']);
    const tooNew = await call(em, 'GET', `${CM()}?resourceVersion=${Number(em.resourceVersion()) + 100}`);
    expect(tooNew.status).toBe(504);
  });
});

describe('validation', () => {
  it('refuses names that are not DNS-1123 subdomains with 422 Invalid and causes', async () => {
    const r = await call(em, 'POST', CM(), cm('Bad_Name'));
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({
      reason: 'Invalid',
      code: 422,
      details: { name: 'Bad_Name', kind: 'ConfigMap', causes: [{ reason: 'FieldValueInvalid', field: 'metadata.name' }] },
    });
    expect(str(r.body, 'message')).toMatch(/^ConfigMap "Bad_Name" is invalid: metadata\.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain/);
    const long = await call(em, 'POST', LEASES(), lease('a'.repeat(254)));
    expect(long.status).toBe(422);
    expect(str(long.body, 'message')).toContain('Lease.coordination.k8s.io');
    expect(str(long.body, 'message')).toContain('must be no more than 253 characters');
  });

  it('validates label keys and values and the total annotation size', async () => {
    const r = await call(em, 'POST', CM(), cm('a', { metadata: { name: 'a', labels: { 'x/y/z': 'v', ok: 'not valid!' } } }));
    expect(r.status).toBe(422);
    expect((pick(r.body, 'details', 'causes') as unknown[]).length).toBe(2);
    const big = await call(em, 'POST', CM(), cm('b', { metadata: { name: 'b', annotations: { note: 'x'.repeat(256 * 1024) } } }));
    expect(big.status).toBe(422);
    expect(str(big.body, 'message')).toContain('metadata.annotations: Too long: may not be more than 262144 bytes');
  });

  it('limits a ConfigMap to 1 MiB of data and a request to 3 MiB', async () => {
    const exactly = Buffer.alloc(1024 * 1024, 1).toString('base64');
    expect((await call(em, 'POST', CM(), cm('fits', { binaryData: { v: exactly } }))).status).toBe(201);
    const over = Buffer.alloc(1024 * 1024 + 1, 1).toString('base64');
    const r = await call(em, 'POST', CM(), cm('over', { binaryData: { v: over } }));
    expect(r.status).toBe(422);
    expect(str(r.body, 'message')).toBe('ConfigMap "over" is invalid: []: Too long: may not be more than 1048576 bytes');
    const huge = await call(em, 'POST', CM(), cm('huge', { data: { v: 'x'.repeat(3 * 1024 * 1024) } }));
    expect(huge.status).toBe(413);
    expect(huge.body).toMatchObject({ reason: 'RequestEntityTooLarge', message: 'Request entity too large: limit is 3145728' });
  });

  it('decodes strictly: types, base64 and MicroTime with exactly six fractional digits', async () => {
    const base64 = await call(em, 'POST', CM(), cm('a', { binaryData: { v: 'not base64!' } }));
    expect(base64.status).toBe(400);
    expect(str(base64.body, 'message')).toContain('illegal base64 data');
    const type = await call(em, 'POST', LEASES(), lease('l', { leaseDurationSeconds: 1.5 }));
    expect(type.status).toBe(400);
    expect(str(type.body, 'message')).toContain('cannot unmarshal number 1.5 into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32');
    const millis = await call(em, 'POST', LEASES(), lease('l', { renewTime: '2024-01-02T03:04:05.123Z' }));
    expect(millis.status).toBe(400);
    expect(str(millis.body, 'message')).toBe(
      'Lease in version "v1" cannot be handled as a Lease: parsing time "2024-01-02T03:04:05.123Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse ".123Z" as ".000000"',
    );
    const micros = await call(em, 'POST', LEASES(), lease('l', { renewTime: '2024-01-02T05:04:05.123456+02:00', leaseDurationSeconds: 10 }));
    expect(micros.status).toBe(201);
    expect(pick(micros.body, 'spec')).toEqual({ leaseDurationSeconds: 10, renewTime: '2024-01-02T03:04:05.123456Z' });
  });

  it('validates Lease spec numbers and never expires a Lease by itself', async () => {
    const zero = await call(em, 'POST', LEASES(), lease('l', { leaseDurationSeconds: 0 }));
    expect(zero.status).toBe(422);
    expect(str(zero.body, 'message')).toContain('spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0');
    const negative = await call(em, 'POST', LEASES(), lease('l', { leaseTransitions: -1 }));
    expect(str(negative.body, 'message')).toContain('must be greater than or equal to 0');
    const old = await call(em, 'POST', LEASES(), lease('old', { holderIdentity: 'x', leaseDurationSeconds: 1, renewTime: '2000-01-01T00:00:00.000000Z' }));
    expect(old.status).toBe(201);
    expect((await call(em, 'GET', `${LEASES()}/old`)).body).toEqual(old.body);
  });

  it('drops unknown fields with a warning, as fieldValidation=Warn does', async () => {
    const r = await call(em, 'POST', CM(), cm('a', { data: { k: 'v' }, extra: 1 }));
    expect(r.status).toBe(201);
    expect(pick(r.body, 'extra')).toBeUndefined();
    expect(String(r.headers['warning'])).toContain('unknown field');
  });
});

describe('authentication and discovery', () => {
  it('answers 401 without the token, and serves /version without one', async () => {
    const r = await call(em, 'GET', CM(), undefined, { token: null });
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ kind: 'Status', reason: 'Unauthorized', code: 401 });
    expect((await call(em, 'GET', '/version', undefined, { token: null })).status).toBe(200);
    const groups = await call(em, 'GET', '/apis');
    expect(pick(groups.body, 'groups', 0, 'name')).toBe('coordination.k8s.io');
    const unknown = await call(em, 'GET', '/api/v1/namespaces/default/secrets');
    expect(unknown.status).toBe(404);
    expect(str(unknown.body, 'message')).toBe('the server could not find the requested resource');
  });
});

describe('fault switches', () => {
  it('answers 503 while unavailable and recovers', async () => {
    em.faults.setUnavailable(true);
    const r = await call(em, 'GET', CM());
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ kind: 'Status', reason: 'ServiceUnavailable', code: 503 });
    em.faults.setUnavailable(false);
    expect((await call(em, 'GET', CM())).status).toBe(200);
  });

  it('fails the next matching requests with the chosen status', async () => {
    em.faults.failNext(1, { status: 429, method: 'POST', resource: 'leases' });
    expect((await call(em, 'POST', CM(), cm('a'))).status).toBe(201);
    const limited = await call(em, 'POST', LEASES(), lease('l'));
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBe('1');
    expect((await call(em, 'POST', LEASES(), lease('l'))).status).toBe(201);
  });

  it('drops the answer of the next matching requests after handling them: the write is applied, the client gets no answer', async () => {
    em.faults.dropAnswerNext(1, { method: 'POST', resource: 'leases' });
    expect((await call(em, 'POST', CM(), cm('a'))).status).toBe(201);
    await expect(call(em, 'POST', LEASES(), lease('l'))).rejects.toThrow();
    expect((await call(em, 'GET', `${LEASES()}/l`)).status).toBe(200);
    expect((await call(em, 'POST', LEASES(), lease('m'))).status).toBe(201);
    // A failed request's answer is dropped as well.
    em.faults.dropAnswerNext(1, { method: 'POST' });
    await expect(call(em, 'POST', LEASES(), lease('m'))).rejects.toThrow();
    expect((await call(em, 'POST', LEASES(), lease('m'))).status).toBe(409);
  });

  it('delays answers while latency is set', async () => {
    em.faults.setLatency(50);
    expect((await call(em, 'GET', CM())).status).toBe(200);
    em.faults.reset();
    expect((await call(em, 'GET', CM())).status).toBe(200);
  });

  it('counts the verbs served', async () => {
    await call(em, 'POST', CM(), cm('a'));
    await call(em, 'GET', `${CM()}/a`);
    await call(em, 'GET', CM());
    await call(em, 'DELETE', `${CM()}/a`);
    expect(Object.fromEntries(em.verbsUsed())).toEqual({ 'configmaps:create': 1, 'configmaps:get': 1, 'configmaps:list': 1, 'configmaps:delete': 1 });
  });
});

describe('lifecycle', () => {
  it('releases its server and sockets on close', async () => {
    const before = await settledTcpHandles();
    const other = await startK8sEmulator();
    await call(other, 'GET', CM());
    expect(tcpHandles()).toBeGreaterThan(before);
    await other.close();
    await eventually('the emulator released its handles', () => tcpHandles() <= before);
    expect(await settledTcpHandles()).toBe(before);
  });
});
