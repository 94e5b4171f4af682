/** CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy semantics, from Cilium's policy documentation. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PolicyRepository } from '../../src/policy/index.js';
import { ns, pod, verdict, world } from './helpers.js';

const base =
  ns('prod', { env: 'prod' }) +
  ns('dev', { env: 'dev' }) +
  pod('prod', 'web', { app: 'web' }, [{ name: 'http', port: 8080 }]) +
  pod('prod', 'client', { app: 'client', team: 'a' }) +
  pod('prod', 'client2', { app: 'client' }) +
  pod('dev', 'client', { app: 'client' }) +
  pod('kube-system', 'dns', { 'k8s-app': 'kube-dns' });

const cnp = (name: string, spec: string, namespace = 'prod') => `---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: ${name}
  namespace: ${namespace}
spec:
${spec}
`;

const ccnp = (name: string, spec: string) => `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: ${name}
spec:
${spec}
`;

const webIngress = (rule: string) => `  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n${rule}`;

describe('CiliumNetworkPolicy', () => {
  test('fromEndpoints is scoped to the policy namespace unless it names one', () => {
    const scoped = world(base + cnp('p', webIngress('    - fromEndpoints: [{matchLabels: {app: client}}]')));
    assert.equal(verdict(scoped, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(scoped, 'dev/client', 'prod/web', 8080), 'denied');
    const other = world(
      base +
        cnp(
          'p',
          webIngress('    - fromEndpoints: [{matchLabels: {app: client, io.kubernetes.pod.namespace: dev}}]'),
        ),
    );
    assert.equal(verdict(other, 'dev/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(other, 'prod/client', 'prod/web', 8080), 'denied');
    const k8sPrefix = world(
      base + cnp('p', webIngress('    - fromEndpoints: [{matchLabels: {"k8s:app": client}}]')),
    );
    assert.equal(verdict(k8sPrefix, 'prod/client', 'prod/web', 8080), 'allowed');
  });

  test('an empty ingress rule turns on default deny and allows nothing', () => {
    const w = world(base + cnp('p', webIngress('    - {}')));
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'denied');
  });

  test('toPorts without L3 allows every peer on those ports; ANY means TCP, UDP and SCTP', () => {
    const w = world(base + cnp('p', webIngress('    - toPorts: [{ports: [{port: "8080"}]}]')));
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8080, 'tcp'), 'allowed');
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8080, 'udp'), 'allowed');
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8081, 'tcp'), 'denied');
  });

  test('fromEntities: cluster covers pods, not the world; all covers everything', () => {
    const w = world(base + cnp('p', webIngress('    - fromEntities: [cluster]')));
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8080), 'allowed');
    const web = [...w.workloads.values()].find((x) => x.name === 'prod/web')!;
    const ids = new Set([...w.repo.evaluate(web).ingress.entries.values()].map((e) => e.identity));
    assert.ok(ids.has(1) && ids.has(6), 'host and remote-node are in the cluster');
    assert.ok(!ids.has(2), 'world is not');
    const all = world(base + cnp('p', webIngress('    - fromEntities: [all]')));
    const allIds = [...all.repo.evaluate(web).ingress.entries.values()].map((e) => e.identity);
    assert.deepEqual(allIds.sort(), [0, 1], 'any identity, and the allow-localhost entry');
  });

  test('deny beats allow, whatever kind of policy allows', () => {
    const w = world(
      base +
        cnp('allow', webIngress('    - fromEntities: [all]')) +
        cnp(
          'deny',
          `  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny:\n    - fromEndpoints: [{matchLabels: {team: a}}]`,
        ) +
        `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np-allow, namespace: prod}
spec:
  podSelector: {}
  ingress: [{}]
`,
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'denied');
    assert.equal(verdict(w, 'prod/client2', 'prod/web', 8080), 'allowed');
  });

  test('a more specific port beats a wildcard of the same identity', () => {
    const w = world(
      base +
        cnp(
          'p',
          webIngress(
            '    - fromEndpoints: [{matchLabels: {app: client}}]\n    - fromEndpoints: [{matchLabels: {app: client}}]\n      toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]',
          ),
        ),
    );
    const web = [...w.workloads.values()].find((x) => x.name === 'prod/web')!;
    const entries = [...w.repo.evaluate(web).ingress.entries.values()];
    const l4 = entries.find((e) => e.port === 8080);
    assert.equal(l4?.verdict, 'redirect');
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080, 'tcp', { method: 'POST', path: '/' }), 'denied');
    assert.equal(
      verdict(w, 'prod/client', 'prod/web', 9999),
      'allowed',
      'the L3 wildcard still allows other ports',
    );
  });

  test('fromRequires narrows every other peer', () => {
    const w = world(
      base +
        cnp(
          'p',
          webIngress(
            '    - fromEndpoints: [{matchLabels: {app: client}}]\n      fromRequires: [{matchLabels: {team: a}}]',
          ),
        ),
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(w, 'prod/client2', 'prod/web', 8080), 'denied');
  });

  test('icmps allow ICMP types by number or name', () => {
    const w = world(
      base + cnp('p', webIngress('    - icmps: [{fields: [{type: EchoRequest, family: IPv4}]}]')),
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8, 'icmp'), 'allowed');
    assert.equal(verdict(w, 'prod/client', 'prod/web', 13, 'icmp'), 'denied');
  });

  test('authentication required gives an auth entry', () => {
    const w = world(
      base +
        cnp(
          'p',
          webIngress(
            '    - fromEndpoints: [{matchLabels: {app: client}}]\n      authentication: {mode: required}',
          ),
        ),
    );
    const web = [...w.workloads.values()].find((x) => x.name === 'prod/web')!;
    const e = [...w.repo.evaluate(web).ingress.entries.values()][0];
    assert.equal(e?.verdict, 'auth');
    assert.equal(e?.authType, 1);
  });

  test('enableDefaultDeny: false keeps other traffic allowed', () => {
    const w = world(
      base +
        cnp(
          'p',
          `${webIngress('    - fromEndpoints: [{matchLabels: {team: a}}]')}\n  enableDefaultDeny: {ingress: false}`,
        ),
    );
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8080), 'allowed');
  });

  test('toFQDNs allows the IPs DNS answers taught, until they expire', () => {
    const w = world(
      base +
        cnp(
          'p',
          '  endpointSelector: {matchLabels: {app: client, team: a}}\n  egress:\n    - toFQDNs: [{matchPattern: "*.partner.example"}]\n      toPorts: [{ports: [{port: "443", protocol: TCP}]}]\n    - toEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]\n      toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]',
        ),
    );
    const client = [...w.workloads.values()].find((x) => x.name === 'prod/client')!;
    const count = () =>
      [...w.repo.evaluate(client).egress.entries.values()].filter((e) => e.port === 443).length;
    assert.equal(count(), 0);
    const diffs = w.repo.dnsAnswer('api.partner.example', ['203.0.113.10'], Date.now() + 60_000);
    assert.equal(diffs.length, 1, 'only the selected endpoint changes');
    assert.equal(diffs[0]?.endpoint, client.id);
    assert.equal(count(), 1);
    assert.equal(w.repo.dnsAnswer('x.other.example', ['198.51.100.1'], Date.now() + 60_000).length, 0);
    w.repo.expireDns(Date.now() + 120_000, (ip) => ip === '203.0.113.10');
    assert.equal(count(), 1, 'kept while a connection uses it');
    w.repo.expireDns(Date.now() + 120_000);
    assert.equal(count(), 0);
  });

  test('toCIDRSet except and toServices', () => {
    const w = world(
      base +
        `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
` +
        cnp(
          'p',
          '  endpointSelector: {matchLabels: {app: client, team: a}}\n  egress:\n    - toCIDRSet: [{cidr: 198.51.100.0/24, except: [198.51.100.0/28]}]\n    - toServices: [{k8sService: {serviceName: web, namespace: prod}}]',
        ),
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(w, 'prod/client', 'dev/client', 8080), 'denied');
  });
});

describe('CiliumClusterwideNetworkPolicy', () => {
  test('selects endpoints in every namespace, and its peers are not namespace-scoped', () => {
    const w = world(
      base +
        ccnp(
          'p',
          '  endpointSelector: {matchLabels: {app: client}}\n  ingress:\n    - fromEndpoints: [{matchLabels: {app: web}}]',
        ),
    );
    assert.equal(verdict(w, 'prod/web', 'dev/client', 80), 'allowed');
    assert.equal(verdict(w, 'kube-system/dns', 'dev/client', 80), 'denied');
  });
});

describe('enforcement modes', () => {
  test('always denies without any policy; never allows despite policies', () => {
    const w = world(base + cnp('p', webIngress('    - {}')));
    w.repo.mode = 'never';
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'allowed');
    w.repo.mode = 'always';
    assert.equal(verdict(w, 'prod/client', 'dev/client', 8080), 'denied');
    assert.ok(new PolicyRepository({ mode: 'always' }).mode === 'always');
  });
});

describe('entries for the datapath', () => {
  test("an allow covered by a deny of the same identity becomes a deny (the datapath's longest match cannot miss it)", () => {
    const w = world(
      base +
        cnp(
          'allow',
          webIngress(
            '    - fromEndpoints: [{matchLabels: {team: a}}]\n      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]',
          ),
        ) +
        cnp(
          'deny',
          '  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny:\n    - fromEndpoints: [{matchLabels: {team: a}}]',
        ),
    );
    const web = [...w.workloads.values()].find((x) => x.name === 'prod/web')!;
    // (The allow-localhost entry for reserved:host aside.)
    const entries = [...w.repo.evaluate(web).ingress.entries.values()].filter((e) => e.identity !== 1);
    assert.ok(entries.length >= 2);
    assert.ok(
      entries.every((e) => e.verdict === 'deny'),
      JSON.stringify(entries),
    );
    const denyRule = w.repo.ruleOf(entries.find((e) => e.port === 8080)!.cookie);
    assert.equal(denyRule?.name, 'deny');
  });
});
