/**
 * Policy engine at scale: 1,000 policies over 10,000 pods in 500 namespaces (a generated,
 * realistic mix of selectors, ports, CIDRs, FQDNs and L7 rules). Full compile time and
 * memory; incremental time for one pod's labels changing, one policy added and one FQDN
 * answer, each against recomputing everything (the baseline, measured in the same run).
 */
import { endpointLabels, MemoryAllocator } from '../src/identity/index.js';
import { type Policy, PolicyRepository, parsePolicy } from '../src/policy/index.js';
import { figure, percentile, writeResults } from './report.js';

const NAMESPACES = 500;
const PODS_PER_NS = 20;
const APPS = 10;
const POLICIES = 1000;

let seed = 7;
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};

function policyDoc(i: number): Record<string, unknown> {
  const ns = `ns-${i % NAMESPACES}`;
  const app = `app-${rand(APPS)}`;
  const peer = `app-${rand(APPS)}`;
  const meta = { name: `p-${i}`, namespace: ns };
  switch (i % 8) {
    case 0:
      return {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: meta,
        spec: { podSelector: {}, policyTypes: ['Ingress'] },
      };
    case 1:
      return {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: meta,
        spec: {
          podSelector: { matchLabels: { app } },
          ingress: [
            {
              from: [{ podSelector: { matchLabels: { app: peer } } }],
              ports: [{ protocol: 'TCP', port: 8080 }],
            },
          ],
        },
      };
    case 2:
      return {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: meta,
        spec: {
          podSelector: { matchLabels: { tier: 'backend' } },
          ingress: [
            {
              from: [{ namespaceSelector: { matchLabels: { team: `t${rand(20)}` } } }],
              ports: [{ port: 9000, endPort: 9100 }],
            },
          ],
        },
      };
    case 3:
      return {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumNetworkPolicy',
        metadata: meta,
        spec: {
          endpointSelector: { matchLabels: { app } },
          ingress: [
            {
              fromEndpoints: [{ matchLabels: { app: peer } }],
              toPorts: [
                {
                  ports: [{ port: '8080', protocol: 'TCP' }],
                  rules: { http: [{ method: 'GET', path: '/api/v1/.*' }] },
                },
              ],
            },
          ],
        },
      };
    case 4: {
      const net = rand(250);
      return {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumNetworkPolicy',
        metadata: meta,
        spec: {
          endpointSelector: { matchLabels: { app } },
          egress: [
            { toCIDRSet: [{ cidr: `10.${net}.0.0/16`, except: [`10.${net}.${rand(250)}.0/24`] }] },
            {
              toEndpoints: [
                { matchLabels: { 'io.kubernetes.pod.namespace': 'kube-system', 'k8s-app': 'kube-dns' } },
              ],
              toPorts: [{ ports: [{ port: '53', protocol: 'UDP' }] }],
            },
          ],
        },
      };
    }
    case 5:
      return {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumNetworkPolicy',
        metadata: meta,
        spec: {
          endpointSelector: { matchLabels: { app } },
          egress: [
            {
              toFQDNs: [{ matchPattern: `*.svc${rand(50)}.example.com` }],
              toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }],
            },
            {
              toEndpoints: [
                { matchLabels: { 'io.kubernetes.pod.namespace': 'kube-system', 'k8s-app': 'kube-dns' } },
              ],
              toPorts: [
                { ports: [{ port: '53', protocol: 'UDP' }], rules: { dns: [{ matchPattern: '*' }] } },
              ],
            },
          ],
        },
      };
    case 6:
      return {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumNetworkPolicy',
        metadata: meta,
        spec: {
          endpointSelector: { matchLabels: { tier: 'db' } },
          ingress: [
            {
              fromEndpoints: [{ matchLabels: { tier: 'backend' } }],
              toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }],
            },
          ],
          ingressDeny: [{ fromEntities: ['world'] }],
        },
      };
    default:
      return {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumNetworkPolicy',
        metadata: meta,
        spec: {
          endpointSelector: {},
          ingress: [{ fromEntities: ['host', 'remote-node', 'health'] }],
          egress: [{ toEntities: ['world'], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }],
        },
      };
  }
}

/** Replicas share their labels: 10 apps of 2 pods per namespace, tier and version by app. */
function podLabels(i: number) {
  const app = i % APPS;
  return { app: `app-${app}`, tier: ['frontend', 'backend', 'db'][app % 3]!, version: `v${app % 2}` };
}

const alloc = new MemoryAllocator();
const nsLabels = (n: number) => ({ 'kubernetes.io/metadata.name': `ns-${n}`, team: `t${n % 20}` });
const pods = Array.from({ length: NAMESPACES * PODS_PER_NS }, (_, i) => {
  const n = Math.floor(i / PODS_PER_NS);
  const labels = endpointLabels({
    namespace: `ns-${n}`,
    podLabels: podLabels(i % PODS_PER_NS),
    namespaceLabels: nsLabels(n),
  });
  return { id: i + 1, namespace: `ns-${n}`, labels, identity: alloc.allocate(labels).id };
});
const policies: Policy[] = Array.from({ length: POLICIES }, (_, i) => parsePolicy(policyDoc(i)).policies[0]!);

// Full compile: the median of three runs, each into a fresh repository.
const compileRuns: number[] = [];
let repo = new PolicyRepository();
let entries = 0;
global.gc?.();
const heapBefore = process.memoryUsage().heapUsed;
for (let run = 0; run < 3; run++) {
  const t = performance.now();
  repo = new PolicyRepository();
  const diffs = repo.bulk(() => {
    for (const p of pods) repo.upsertEndpoint(p);
    for (const p of policies) repo.upsertPolicy(p);
  });
  compileRuns.push(performance.now() - t);
  entries = diffs.reduce((n, d) => n + d.added.length, 0);
}
// What the last repository holds (the others are garbage by now).
global.gc?.();
const heapMb = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
const fullMs = percentile(compileRuns, 50);
let t0 = 0;

// Baseline: recomputing every endpoint from scratch.
t0 = performance.now();
repo.bulk(() => {
  for (const p of pods) repo.upsertEndpoint({ ...p, labels: { ...p.labels } });
});
const recomputeAllMs = performance.now() - t0;

// One pod's labels change (to a new identity and back).
const podTimes: number[] = [];
for (let k = 0; k < 300; k++) {
  const p = pods[rand(pods.length)]!;
  const labels = { ...p.labels, app: `app-${rand(APPS)}`, canary: String(k % 2) };
  const id = alloc.allocate(labels).id;
  t0 = performance.now();
  const d = repo.upsertEndpoint({ ...p, labels, identity: id });
  podTimes.push(performance.now() - t0);
  if (process.env.HYPHA_BENCH_DEBUG && podTimes.at(-1)! > 50)
    console.log(
      'slow',
      podTimes.at(-1)!.toFixed(0),
      'ms',
      d.length,
      'endpoints',
      d.reduce((n, x) => n + x.added.length + x.removed.length, 0),
      'entries',
      labels.app,
      p.namespace,
    );
}

// One policy added (and removed again).
const policyTimes: number[] = [];
for (let k = 0; k < 200; k++) {
  const p = parsePolicy({
    ...policyDoc(POLICIES + k),
    metadata: { name: `extra-${k}`, namespace: `ns-${rand(NAMESPACES)}` },
  }).policies[0]!;
  t0 = performance.now();
  repo.upsertPolicy(p);
  policyTimes.push(performance.now() - t0);
  repo.deletePolicy(p.origin);
}

// One FQDN answer.
const fqdnTimes: number[] = [];
for (let k = 0; k < 300; k++) {
  t0 = performance.now();
  repo.dnsAnswer(`api.svc${rand(50)}.example.com`, [`198.51.100.${k % 250}`], Date.now() + 60_000);
  fqdnTimes.push(performance.now() - t0);
}

writeResults('policy', [
  figure('full compile (median of 3): 1,000 policies x 10,000 pods in 500 namespaces', fullMs, 'ms'),
  figure('full compile: policy map entries produced', entries, 'entries'),
  figure('full compile: heap held by the repository', heapMb, 'MiB'),
  figure('recompute every endpoint (baseline for the incremental figures)', recomputeAllMs, 'ms'),
  figure("incremental p99: one pod's labels change", percentile(podTimes, 99), 'ms', recomputeAllMs),
  figure("incremental p50: one pod's labels change", percentile(podTimes, 50), 'ms', recomputeAllMs),
  figure('incremental p99: one policy added', percentile(policyTimes, 99), 'ms', recomputeAllMs),
  figure('incremental p50: one policy added', percentile(policyTimes, 50), 'ms', recomputeAllMs),
  figure('incremental p99: one FQDN answer', percentile(fqdnTimes, 99), 'ms', recomputeAllMs),
  figure('incremental p50: one FQDN answer', percentile(fqdnTimes, 50), 'ms', recomputeAllMs),
]);
if (process.env.HYPHA_BENCH_DEBUG)
  console.log(
    'slowest pod changes (ms):',
    [...podTimes]
      .sort((a, b) => b - a)
      .slice(0, 8)
      .map((x) => x.toFixed(1))
      .join(' '),
  );
