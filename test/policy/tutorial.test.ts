/** The tutorial's own manifests (sections 5.1-5.4 and 7.2), unchanged, and what it says they do. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadManifests } from '../../src/k8s/manifests.js';
import { buildOfflineWorld, findWorkload, trace } from '../../src/policy/index.js';
import { repoRoot } from '../helpers/kernel.js';
import { verdict } from './helpers.js';

const dir = join(repoRoot, 'examples/tutorial');
const load = (files: string[]) => buildOfflineWorld(loadManifests(files.map((f) => join(dir, f))).docs);
const WORKLOADS = ['00-workloads.yaml', '01-kube-dns.yaml'];

test('every tutorial document parses without errors or warnings', () => {
  const m = loadManifests([dir]);
  assert.deepEqual(m.errors, []);
  const w = buildOfflineWorld(m.docs);
  assert.deepEqual(w.errors, []);
  assert.deepEqual(w.warnings, []);
  assert.equal(w.policyCount, 5);
});

test('5.2: api-gateway reaches frontend on 8080; anything else to frontend is denied', () => {
  const w = load([...WORKLOADS, '05.2-frontend-ingress.yaml']);
  assert.equal(verdict(w, 'production/api-gateway', 'production/frontend', 8080), 'allowed');
  assert.equal(verdict(w, 'production/api-gateway', 'production/frontend', 9090), 'denied');
  assert.equal(verdict(w, 'production/catalog', 'production/frontend', 8080), 'denied');
});

test('5.1 with 5.2: frontend ingress still admits api-gateway, but default-deny-all also closes egress', () => {
  const w = load([...WORKLOADS, '05.1-default-deny.yaml', '05.2-frontend-ingress.yaml']);
  const r = trace(w.repo, {
    src: findWorkload(w, 'production/api-gateway')!,
    dst: findWorkload(w, 'production/frontend')!,
    dport: 8080,
    protocol: 6,
  });
  assert.equal(r.ingress.verdict, 'allowed');
  assert.match(r.ingress.reason, /allow-api-gateway-to-frontend spec\.ingress\[0\]/);
  assert.equal(r.egress.verdict, 'denied', 'the tutorial default-denies Egress too');
  assert.match(r.egress.reason, /default deny: NetworkPolicy production\/default-deny-all/);
});

test('5.3: frontend GET /api/v1/products is allowed, POST and other paths get 403, other pods are dropped', () => {
  const w = load([...WORKLOADS, '05.3-l7-http-policy.yaml']);
  const get = { method: 'GET', path: '/api/v1/products' };
  assert.equal(verdict(w, 'production/frontend', 'production/catalog', 8080, 'tcp', get), 'allowed');
  assert.equal(
    verdict(w, 'production/frontend', 'production/catalog', 8080, 'tcp', {
      method: 'POST',
      path: '/api/v1/products',
    }),
    'denied',
  );
  assert.equal(
    verdict(w, 'production/frontend', 'production/catalog', 8080, 'tcp', { method: 'GET', path: '/admin' }),
    'denied',
  );
  assert.equal(verdict(w, 'production/api-gateway', 'production/catalog', 8080, 'tcp', get), 'denied');
  const r = trace(w.repo, {
    src: findWorkload(w, 'production/api-gateway')!,
    dst: findWorkload(w, 'production/catalog')!,
    dport: 8080,
    protocol: 6,
  });
  assert.match(
    r.ingress.reason,
    /default deny: CiliumNetworkPolicy production\/catalog-l7-policy select production\/catalog/,
  );
});

test("5.4: data-exporter's DNS goes to the DNS proxy; HTTPS only to IPs learned for api.external-partner.com", () => {
  const w = load([...WORKLOADS, '05.4-fqdn-egress.yaml']);
  const exporter = findWorkload(w, 'data-pipeline/data-exporter')!;
  const dns = trace(w.repo, {
    src: exporter,
    dst: findWorkload(w, 'kube-system/coredns')!,
    dport: 53,
    protocol: 17,
  });
  assert.equal(dns.egress.verdict, 'redirected');
  assert.equal(dns.egress.entry?.proxy, 'dns');
  const egress443 = () =>
    [...w.repo.evaluate(exporter).egress.entries.values()].filter((e) => e.port === 443);
  assert.equal(egress443().length, 0, 'nothing before DNS answers');
  w.repo.dnsAnswer('other-partner.example', ['203.0.113.20'], Date.now() + 60_000);
  assert.equal(egress443().length, 0, 'other names teach nothing');
  w.repo.dnsAnswer('api.external-partner.com', ['203.0.113.10'], Date.now() + 60_000);
  const learned = egress443();
  assert.equal(learned.length, 1);
  assert.equal(w.repo.local.prefixOf(learned[0]!.identity), '203.0.113.10/32');
});

test('7.2: checkout to payments requires mutual authentication', () => {
  const w = load([...WORKLOADS, '07.2-mutual-auth-policy.yaml']);
  const r = trace(w.repo, {
    src: findWorkload(w, 'production/checkout')!,
    dst: findWorkload(w, 'production/payments')!,
    dport: 8080,
    protocol: 6,
  });
  assert.equal(r.ingress.verdict, 'auth-required');
  assert.equal(r.verdict, 'denied');
});
