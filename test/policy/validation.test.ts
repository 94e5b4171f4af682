/** Malformed policies: rejected with object, field path and reason; good ones still load. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseManifests } from '../../src/k8s/manifests.js';
import { buildOfflineWorld } from '../../src/policy/index.js';

function errorsOf(yaml: string) {
  const m = parseManifests(yaml, 'bad.yaml');
  const w = buildOfflineWorld(m.docs);
  return { errors: [...m.errors.map((e) => ({ ...e, object: '', field: '' })), ...w.errors], w };
}

const np = (spec: string) => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: prod}
spec:
${spec}
`;
const cnp = (spec: string) => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: prod}
spec:
  endpointSelector: {}
${spec}
`;

const cases: [string, string, string, RegExp][] = [
  [
    'bad CIDR',
    np('  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.300/8}}]}]'),
    'spec.ingress[0].from[0].ipBlock.cidr',
    /not a CIDR/,
  ],
  [
    'port 0',
    np('  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]'),
    'spec.ingress[0].ports[0].port',
    /not a port number/,
  ],
  [
    'port 70000',
    cnp('  ingress: [{toPorts: [{ports: [{port: "70000"}]}]}]'),
    'spec.ingress[0].toPorts[0].ports[0].port',
    /not a port number/,
  ],
  [
    'unknown protocol',
    np('  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: QUIC}]}]'),
    'spec.ingress[0].ports[0].protocol',
    /not TCP, UDP or SCTP/,
  ],
  [
    'regex that does not compile',
    cnp('  ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{path: "/a("}]}}]}]'),
    'spec.ingress[0].toPorts[0].rules.http[0]',
    /regular expression/,
  ],
  [
    'unknown selector operator',
    np('  podSelector: {matchExpressions: [{key: app, operator: Near, values: [x]}]}'),
    'spec.podSelector.matchExpressions[0].operator',
    /not one of In, NotIn/,
  ],
  [
    'L7 HTTP on UDP',
    cnp('  ingress: [{toPorts: [{ports: [{port: "80", protocol: UDP}], rules: {http: [{method: GET}]}}]}]'),
    'spec.ingress[0].toPorts[0].rules.http',
    /need TCP/,
  ],
  [
    'unknown entity',
    cnp('  ingress: [{fromEntities: [internet]}]'),
    'spec.ingress[0].fromEntities[0]',
    /not an entity/,
  ],
  [
    'unknown field',
    cnp('  ingress: [{fromEndpoint: [{}]}]'),
    'spec.ingress[0].fromEndpoint',
    /unknown field/,
  ],
  [
    'except outside the CIDR',
    cnp('  egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]}]'),
    'spec.egress[0].toCIDRSet[0].except[0]',
    /not inside/,
  ],
  [
    'In without values',
    np('  podSelector: {matchExpressions: [{key: app, operator: In}]}'),
    'spec.podSelector.matchExpressions[0].values',
    /non-empty/,
  ],
];

for (const [what, yaml, field, reason] of cases) {
  test(`rejects ${what}`, () => {
    const { errors } = errorsOf(yaml);
    assert.equal(errors.length, 1, JSON.stringify(errors));
    const e = errors[0]!;
    assert.equal(e.file, 'bad.yaml');
    assert.equal(e.index, 0);
    assert.match(e.object, /(NetworkPolicy|CiliumNetworkPolicy) prod\/bad/);
    assert.equal(e.field, field);
    assert.match(e.message, reason);
  });
}

test('one bad policy never blocks the good ones', () => {
  const yaml = `${np('  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]')}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress]}
`;
  const { errors, w } = errorsOf(yaml);
  assert.equal(errors.length, 1);
  assert.equal(w.policyCount, 1);
  assert.equal(w.repo.policies()[0]?.origin.name, 'good');
});

test('toFQDNs without a DNS rule is a warning, as in Cilium', () => {
  const m = parseManifests(cnp('  egress: [{toFQDNs: [{matchName: api.example.com}]}]'), 'w.yaml');
  const w = buildOfflineWorld(m.docs);
  assert.equal(w.errors.length, 0);
  assert.match(w.warnings[0]?.message ?? '', /toFQDNs without a dns rule/);
});

test('YAML that does not parse names the file and document', () => {
  const m = parseManifests('a: [1, 2\n---\nkind: x', 'broken.yaml');
  assert.equal(m.errors[0]?.file, 'broken.yaml');
  assert.equal(m.errors[0]?.index, 0);
});
