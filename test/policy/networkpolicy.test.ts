/** Kubernetes NetworkPolicy conformance, from the networking.k8s.io/v1 API reference. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ns, pod, verdict, world } from './helpers.js';

const base =
  ns('prod', { env: 'prod' }) +
  ns('dev', { env: 'dev' }) +
  pod('prod', 'web', { app: 'web' }, [{ name: 'http', port: 8080 }]) +
  pod('prod', 'client', { app: 'client' }) +
  pod('prod', 'other', { app: 'other' }) +
  pod('dev', 'client', { app: 'client' }) +
  pod('dev', 'tool', { app: 'tool' });

const np = (name: string, spec: string) => `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: ${name}
  namespace: prod
spec:
${spec}
`;

describe('NetworkPolicy', () => {
  test('without policies everything is allowed', () => {
    const w = world(base);
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'allowed');
  });

  test('podSelector {} with Ingress denies ingress, leaves egress open', () => {
    const w = world(base + np('deny', '  podSelector: {}\n  policyTypes: [Ingress]'));
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'denied');
    assert.equal(verdict(w, 'prod/web', 'dev/tool', 80), 'allowed', 'egress is not selected');
  });

  test('podSelector peers stay in the policy namespace', () => {
    const w = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from:\n        - podSelector: {matchLabels: {app: client}}',
        ),
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8080), 'denied');
    assert.equal(verdict(w, 'prod/other', 'prod/web', 8080), 'denied');
  });

  test('namespaceSelector alone admits every pod of matching namespaces', () => {
    const w = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {env: dev}}',
        ),
    );
    assert.equal(verdict(w, 'dev/tool', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'denied');
  });

  test('namespaceSelector and podSelector in one peer are AND; in two peers OR', () => {
    const and = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {env: dev}}\n          podSelector: {matchLabels: {app: client}}',
        ),
    );
    assert.equal(verdict(and, 'dev/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(and, 'dev/tool', 'prod/web', 8080), 'denied');
    assert.equal(verdict(and, 'prod/client', 'prod/web', 8080), 'denied');
    const or = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {env: dev}}\n        - podSelector: {matchLabels: {app: client}}',
        ),
    );
    assert.equal(verdict(or, 'dev/tool', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(or, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(or, 'prod/other', 'prod/web', 8080), 'denied');
  });

  test('kubernetes.io/metadata.name selects a namespace by name', () => {
    const w = world(
      base +
        np(
          'p',
          '  podSelector: {}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}',
        ),
    );
    assert.equal(verdict(w, 'dev/client', 'prod/web', 8080), 'allowed');
  });

  test('ports: by number, by name (resolved on the destination pod), with endPort ranges', () => {
    const byName = world(
      base +
        np('p', '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - ports:\n        - port: http'),
    );
    assert.equal(verdict(byName, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(byName, 'prod/client', 'prod/web', 8081), 'denied');
    const range = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - ports:\n        - port: 32000\n          endPort: 32768',
        ),
    );
    assert.equal(verdict(range, 'prod/client', 'prod/web', 32000), 'allowed');
    assert.equal(verdict(range, 'prod/client', 'prod/web', 32768), 'allowed');
    assert.equal(verdict(range, 'prod/client', 'prod/web', 32500), 'allowed');
    assert.equal(verdict(range, 'prod/client', 'prod/web', 32769), 'denied');
    assert.equal(verdict(range, 'prod/client', 'prod/web', 31999), 'denied');
  });

  test('protocols: UDP and SCTP rules do not admit TCP', () => {
    const w = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - ports:\n        - {protocol: UDP, port: 53}\n        - {protocol: SCTP, port: 9}',
        ),
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 53, 'udp'), 'allowed');
    assert.equal(verdict(w, 'prod/client', 'prod/web', 53, 'tcp'), 'denied');
    assert.equal(verdict(w, 'prod/client', 'prod/web', 9, 'sctp'), 'allowed');
  });

  test('policyTypes omitted: Ingress, plus Egress when egress rules exist', () => {
    const w = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  egress:\n    - to:\n        - podSelector: {matchLabels: {app: client}}',
        ),
    );
    assert.equal(verdict(w, 'prod/web', 'prod/client', 80), 'allowed');
    assert.equal(verdict(w, 'prod/web', 'prod/other', 80), 'denied');
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'denied', 'ingress became default-deny too');
  });

  test('empty from: [] allows all; an ingress rule {} allows all', () => {
    const w = world(base + np('p', '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from: []'));
    assert.equal(verdict(w, 'dev/tool', 'prod/web', 8080), 'allowed');
    const w2 = world(base + np('p', '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - {}'));
    assert.equal(verdict(w2, 'dev/tool', 'prod/web', 1234), 'allowed');
  });

  test('several policies add up', () => {
    const w = world(
      base +
        np(
          'a',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from: [{podSelector: {matchLabels: {app: client}}}]',
        ) +
        np(
          'b',
          '  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from: [{podSelector: {matchLabels: {app: other}}}]',
        ),
    );
    assert.equal(verdict(w, 'prod/client', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(w, 'prod/other', 'prod/web', 8080), 'allowed');
    assert.equal(verdict(w, 'dev/tool', 'prod/web', 8080), 'denied');
  });

  test('ipBlock with except makes CIDR identities, the except one not allowed', () => {
    const w = world(
      base +
        np(
          'p',
          '  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}',
        ),
    );
    const ids = new Map(w.repo.local.entries());
    const allowedId = ids.get('203.0.113.0/24');
    const exceptId = ids.get('203.0.113.128/25');
    assert.ok(allowedId && exceptId && allowedId !== exceptId);
    assert.ok((allowedId & (1 << 24)) !== 0, 'CIDR identities are node-local');
    const web = [...w.workloads.values()].find((x) => x.name === 'prod/web')!;
    const egress = w.repo.evaluate(web).egress;
    const peers = new Set([...egress.entries.values()].map((e) => e.identity));
    assert.ok(peers.has(allowedId));
    assert.ok(!peers.has(exceptId));
  });
});
