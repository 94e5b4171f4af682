import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../helpers/kernel.js';

const hypha = (...args: string[]) => spawnSync(join(repoRoot, 'bin/hypha'), args, { encoding: 'utf8' });
const tutorial = join(repoRoot, 'examples/tutorial');

test('policy validate accepts the tutorial and reports each bad document precisely', () => {
  const ok = hypha('policy', 'validate', '-f', tutorial);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /5 valid policies, 0 error\(s\)/);
  const dir = mkdtempSync(join(tmpdir(), 'hy-pol-'));
  try {
    writeFileSync(
      join(dir, 'bad.yaml'),
      `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: a}
spec: {podSelector: {}}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: a}
spec:
  endpointSelector: {}
  egress: [{toCIDR: [10.0.0.0/33]}]
`,
    );
    const bad = hypha('policy', 'validate', '-f', dir);
    assert.equal(bad.status, 1);
    assert.match(
      bad.stderr,
      /bad\.yaml\[1\]: CiliumNetworkPolicy a\/broken: spec\.egress\[0\]\.toCIDR\[0\]: "10\.0\.0\.0\/33" is not a CIDR/,
    );
    assert.match(bad.stdout, /1 valid policy, 1 error/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("policy trace answers the tutorial's question with the rule that decided", () => {
  const r = hypha(
    'policy',
    'trace',
    '-f',
    join(tutorial, '00-workloads.yaml'),
    '-f',
    join(tutorial, '05.3-l7-http-policy.yaml'),
    '--src-k8s-pod',
    'production/frontend-6d8f9b-xxxx',
    '--dst-k8s-pod',
    'production/catalog-pod-yyy',
    '--dport',
    '8080',
    '--protocol',
    'tcp',
    '--http-method',
    'POST',
    '--http-path',
    '/api/v1/products',
  );
  assert.equal(r.status, 1);
  assert.match(r.stdout, /Ingress to production\/catalog: REDIRECTED/);
  assert.match(r.stdout, /CiliumNetworkPolicy production\/catalog-l7-policy spec\.ingress\[0\]/);
  assert.match(r.stdout, /403 Forbidden/);
  assert.match(r.stdout, /Final verdict: DENIED/);
  const get = hypha(
    'policy',
    'trace',
    '-f',
    join(tutorial, '00-workloads.yaml'),
    '-f',
    join(tutorial, '05.3-l7-http-policy.yaml'),
    '--src-labels',
    'app=frontend,io.kubernetes.pod.namespace=production',
    '--dst-k8s-pod',
    'production/catalog',
    '--dport',
    '8080',
    '--http-method',
    'GET',
    '--http-path',
    '/api/v1/products',
    '-o',
    'json',
  );
  assert.equal(get.status, 0, get.stderr);
  assert.equal(JSON.parse(get.stdout).verdict, 'allowed');
});

test('policy trace refuses unclear endpoints', () => {
  const r = hypha(
    'policy',
    'trace',
    '-f',
    tutorial,
    '--src-k8s-pod',
    'production/nope',
    '--dst-k8s-pod',
    'production/catalog',
    '--dport',
    '80',
  );
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no pod or workload "production\/nope"/);
});

test('policy matrix lists who may reach whom', () => {
  const r = hypha(
    'policy',
    'matrix',
    '-f',
    join(tutorial, '00-workloads.yaml'),
    '-f',
    join(tutorial, '05.2-frontend-ingress.yaml'),
    '-o',
    'json',
  );
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as { from: string; to: string; allowed: string[] }[];
  const row = (f: string, t: string) => rows.find((x) => x.from === f && x.to === t)?.allowed;
  assert.deepEqual(row('production/api-gateway', 'production/frontend'), ['TCP/8080']);
  assert.deepEqual(row('production/catalog', 'production/frontend'), []);
  assert.deepEqual(row('production/frontend', 'production/catalog'), ['any']);
});
