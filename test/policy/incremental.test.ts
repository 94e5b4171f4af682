/** Incremental recomputation: only affected endpoints change, and the diffs are exact. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { endpointLabels } from '../../src/identity/index.js';
import { PolicyRepository, parsePolicy } from '../../src/policy/index.js';

const labels = (app: string, ns = 'prod') => endpointLabels({ namespace: ns, podLabels: { app } });

/** Without the allow-localhost entry, so the diffs hold only what the policies make (tested on its own below). */
function setup(allowLocalhost = false) {
  const repo = new PolicyRepository({ allowLocalhost });
  repo.upsertEndpoint({ id: 1, namespace: 'prod', identity: 300, labels: labels('web') });
  repo.upsertEndpoint({ id: 2, namespace: 'prod', identity: 301, labels: labels('client') });
  repo.upsertEndpoint({ id: 3, namespace: 'prod', identity: 302, labels: labels('db') });
  return repo;
}

const allowClientToWeb = parsePolicy({
  apiVersion: 'cilium.io/v2',
  kind: 'CiliumNetworkPolicy',
  metadata: { name: 'p', namespace: 'prod' },
  spec: {
    endpointSelector: { matchLabels: { app: 'web' } },
    ingress: [
      {
        fromEndpoints: [{ matchLabels: { app: 'client' } }],
        toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }],
      },
    ],
  },
}).policies[0]!;

test('a new policy changes only the endpoints it selects', () => {
  const repo = setup();
  const diffs = repo.upsertPolicy(allowClientToWeb);
  assert.deepEqual(
    diffs.map((d) => d.endpoint),
    [1],
  );
  assert.deepEqual(
    diffs[0]!.added.map((e) => [e.direction, e.identity, e.protocol, e.port, e.portPrefixLen, e.verdict]),
    [['ingress', 301, 6, 8080, 16, 'allow']],
  );
  assert.deepEqual(diffs[0]!.enforced, { ingress: true, egress: false });
  const rule = repo.ruleOf(diffs[0]!.added[0]!.cookie);
  assert.deepEqual(rule, {
    kind: 'CiliumNetworkPolicy',
    namespace: 'prod',
    name: 'p',
    path: 'spec.ingress[0]',
  });
  assert.deepEqual(repo.upsertPolicy(allowClientToWeb), [], 'applying the same policy twice changes nothing');
});

test("a pod's labels change and the verdict follows", () => {
  const repo = setup();
  repo.upsertPolicy(allowClientToWeb);
  // The db pod becomes a client: its (new) identity appears in web's entries.
  const diffs = repo.upsertEndpoint({ id: 3, namespace: 'prod', identity: 303, labels: labels('client') });
  const web = diffs.find((d) => d.endpoint === 1);
  assert.ok(web, 'web is recomputed');
  assert.deepEqual(
    web.added.map((e) => e.identity),
    [303],
  );
  assert.deepEqual(web.removed, []);
});

test('deleting a policy removes exactly its entries', () => {
  const repo = setup();
  repo.upsertPolicy(allowClientToWeb);
  const diffs = repo.deletePolicy(allowClientToWeb.origin);
  assert.equal(diffs.length, 1);
  assert.equal(diffs[0]!.removed.length, 1);
  assert.deepEqual(diffs[0]!.enforced, { ingress: false, egress: false });
  assert.equal(repo.endpointPolicy(1)?.ingress.entries.size, 0);
});

test('an identity appearing on another node reaches the endpoints whose selectors match it', () => {
  const repo = setup();
  repo.upsertPolicy(allowClientToWeb);
  const diffs = repo.upsertIdentity(999, labels('client'));
  assert.deepEqual(
    diffs.map((d) => d.endpoint),
    [1],
  );
  assert.deepEqual(
    diffs[0]!.added.map((e) => e.identity),
    [999],
  );
  assert.deepEqual(repo.upsertIdentity(1000, labels('unrelated')), []);
});

test('applying the diffs in order always reproduces the computed entries', () => {
  const repo = setup();
  const state = new Map<number, Map<string, string>>();
  const apply = (diffs: ReturnType<typeof repo.computeAll>) => {
    for (const d of diffs) {
      const m = state.get(d.endpoint) ?? new Map<string, string>();
      for (const e of d.removed)
        m.delete(`${e.direction}|${e.identity}|${e.protocol}|${e.port}/${e.portPrefixLen}`);
      for (const e of d.added)
        m.set(`${e.direction}|${e.identity}|${e.protocol}|${e.port}/${e.portPrefixLen}`, e.verdict);
      state.set(d.endpoint, m);
    }
  };
  apply(repo.computeAll());
  apply(repo.upsertPolicy(allowClientToWeb));
  // Endpoint 2 (a client) turns into a web pod while its old identity stays selected.
  apply(repo.upsertEndpoint({ id: 2, namespace: 'prod', identity: 300, labels: labels('web') }));
  apply(repo.upsertEndpoint({ id: 4, namespace: 'prod', identity: 301, labels: labels('client') }));
  apply(repo.upsertIdentity(555, labels('client')));
  apply(repo.deleteIdentity(555));
  for (const id of [1, 2, 3, 4]) {
    const p = repo.endpointPolicy(id)!;
    const want = new Map(
      [...p.ingress.entries, ...p.egress.entries].map(([k, e]) => [k, e.verdict] as [string, string]),
    );
    assert.deepEqual(state.get(id) ?? new Map(), want, `endpoint ${id}`);
  }
});

test('allow-localhost: an enforced ingress admits reserved:host (an L3 allow, no rule), and keeps it through identity updates', () => {
  const repo = setup(true);
  const diffs = repo.upsertPolicy(allowClientToWeb);
  const keys = (
    es: readonly { identity: number; protocol: number; port: number; verdict: string; cookie: number }[],
  ) => es.map((e) => [e.identity, e.protocol, e.port, e.verdict, e.cookie]).sort();
  assert.deepEqual(keys(diffs[0]!.added), [
    [1, 0, 0, 'allow', 0],
    [301, 6, 8080, 'allow', diffs[0]!.added.find((e) => e.identity === 301)!.cookie],
  ]);
  // The host's identity "changes" (relabelled, as the agent's identity sync does): nothing moves.
  assert.deepEqual(repo.upsertIdentity(1, { 'reserved:host': '' }), []);
  assert.ok(repo.endpointPolicy(1)?.ingress.entries.has('ingress|1|0|0/0') ?? false);
  // Not enforced (no policy): no entry, everything passes anyway.
  repo.deletePolicy(allowClientToWeb.origin);
  assert.equal(repo.endpointPolicy(1)?.ingress.entries.size, 0);
  // A deny of the host beats it.
  const denyHost = parsePolicy({
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name: 'no-host', namespace: 'prod' },
    spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingressDeny: [{ fromEntities: ['host'] }] },
  }).policies[0]!;
  repo.upsertPolicy(denyHost);
  const host = [...(repo.endpointPolicy(1)?.ingress.entries.values() ?? [])].filter((e) => e.identity === 1);
  assert.deepEqual(
    host.map((e) => e.verdict),
    ['deny'],
  );
});
