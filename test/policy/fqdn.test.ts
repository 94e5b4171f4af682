/**
 * FQDN identities beyond the toFQDNs rule that asked for them: an IP a DNS answer taught
 * gets an identity of its own in the ipcache, so every rule that covers the IP -- the
 * `world` entity, a CIDR containing it -- must count that identity too, whenever it appears.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'yaml';
import type { OfflineWorld } from '../../src/policy/index.js';
import { parsePolicy } from '../../src/policy/index.js';
import { ns, pod, world } from './helpers.js';

const cnp = (name: string, selector: string, egress: string) => `---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ${name}, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: ${selector}}}
  egress:
${egress}
`;

const base =
  ns('prod') +
  pod('prod', 'exporter', { app: 'exporter' }) +
  pod('prod', 'browser', { app: 'browser' }) +
  pod('prod', 'scanner', { app: 'scanner' }) +
  pod('kube-system', 'dns', { 'k8s-app': 'kube-dns' });

const FQDN = cnp(
  'fqdn',
  'exporter',
  '    - toFQDNs: [{matchName: api.partner.example}]\n' +
    '      toPorts: [{ports: [{port: "443", protocol: TCP}]}]\n' +
    '    - toEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]\n' +
    '      toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]',
);
const WORLD = cnp('world', 'browser', '    - toEntities: [world]');
const CIDR = cnp('cidr', 'scanner', '    - toCIDR: [203.0.113.0/24]');

const id = (w: OfflineWorld, name: string) => [...w.workloads.values()].find((x) => x.name === name)!;
/** Whether an endpoint's egress entries name the identity of ip/32. */
const covers = (w: OfflineWorld, name: string, ip: string) =>
  [...w.repo.evaluate(id(w, name)).egress.entries.values()].some(
    (e) => w.repo.local.prefixOf(e.identity) === `${ip}/32`,
  );

test('a learned IP joins the world entity and the CIDRs that contain it', () => {
  const w = world(base + FQDN + WORLD + CIDR);
  const diffs = w.repo.dnsAnswer('api.partner.example', ['203.0.113.10'], Date.now() + 60_000);
  assert.deepEqual(
    new Set(diffs.map((d) => d.endpoint)),
    new Set([id(w, 'prod/exporter').id, id(w, 'prod/browser').id, id(w, 'prod/scanner').id]),
  );
  for (const who of ['prod/exporter', 'prod/browser', 'prod/scanner'])
    assert.ok(covers(w, who, '203.0.113.10'), who);
  // Outside the CIDR: the world entity only.
  w.repo.dnsAnswer('api.partner.example', ['198.51.100.7'], Date.now() + 60_000);
  assert.ok(covers(w, 'prod/browser', '198.51.100.7'));
  assert.ok(!covers(w, 'prod/scanner', '198.51.100.7'));
});

test('names no toFQDNs selects get no identity (they stay world)', () => {
  const w = world(base + FQDN + WORLD);
  assert.deepEqual(w.repo.dnsAnswer('other.example', ['203.0.113.20'], Date.now() + 60_000), []);
  assert.equal(
    w.repo.local.entries().some(([p]) => p === '203.0.113.20/32'),
    false,
  );
  assert.equal(w.repo.fqdnSelects('other.example'), false);
  assert.equal(w.repo.fqdnSelects('API.partner.example.'), true);
});

test('a toFQDNs policy added after the answer: its identities reach the world rules too', () => {
  const w = world(base + WORLD);
  w.repo.dnsAnswer('api.partner.example', ['203.0.113.10'], Date.now() + 60_000);
  assert.ok(!covers(w, 'prod/browser', '203.0.113.10'), 'no identity yet: the IP is plain world');
  const doc = parse(FQDN.replace(/^---\n/, '')) as Record<string, unknown>;
  const diffs = w.repo.upsertPolicy(parsePolicy(doc).policies[0]!);
  assert.ok(diffs.some((d) => d.endpoint === id(w, 'prod/exporter').id));
  assert.ok(diffs.some((d) => d.endpoint === id(w, 'prod/browser').id));
  assert.ok(covers(w, 'prod/exporter', '203.0.113.10'));
  assert.ok(covers(w, 'prod/browser', '203.0.113.10'));
});
