/**
 * CNI ADD to a policy-enforced endpoint, as a runtime calls it, over many pods on one
 * node: p50/p99 latency, and the agent's memory afterwards. The baseline is the bare
 * start of the pinned Node.js (every CNI call is a new process).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unpin } from '../src/bpf/index.js';
import { NetScope, uniqueName } from '../src/lab/net/index.js';
import { startAgentProcess } from '../test/helpers/agent.js';
import { figure, percentile, repoRoot, writeResults } from './report.js';

const PODS = Number(process.env.HYPHA_BENCH_PODS ?? 200);
const _HYPHA = join(repoRoot, 'bin/hypha');
const CNI = join(repoRoot, 'bin/hypha-cni');
const NODE = join(repoRoot, 'node_modules/.bin/node');

await using net = new NetScope();
const node = await net.netns({ prefix: 'cn' });
const work = mkdtempSync(join(tmpdir(), 'hy-cni-bench-'));
const manifests = join(work, 'manifests');
mkdirSync(manifests);
writeFileSync(
  join(manifests, 'policy.yaml'),
  `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: bench}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: bench}
spec:
  endpointSelector: {}
  ingress: [{fromEndpoints: [{}], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
`,
);
const socket = join(work, 'agent.sock');
const pinDir = `/sys/fs/bpf/hypha/${node.name}`;
const agent = await startAgentProcess({
  netns: node.name!,
  podCidr: '10.247.0.0/22',
  stateDir: join(work, 'state'),
  socket,
  pinDir,
  manifests,
  stderr: 'ignore',
});
try {
  // Pod namespaces up front, in one batch: the runtime has them before it calls ADD.
  const names = Array.from({ length: PODS }, () => uniqueName('cp'));
  const b = net.batch();
  for (const n of names) b.addNetns(n);
  await b.run();
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'hypha', type: 'hypha-cni', agentSocket: socket });
  const times: number[] = [];
  for (const [i, n] of names.entries()) {
    const t0 = performance.now();
    execFileSync('ip', ['netns', 'exec', node.name!, CNI], {
      input: conf,
      env: {
        ...process.env,
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: `bench-${i}`,
        CNI_NETNS: `/var/run/netns/${n}`,
        CNI_IFNAME: 'eth0',
        CNI_ARGS: `K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-${i}`,
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    times.push(performance.now() - t0);
  }
  const rssKb = Number(
    /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, 'utf8'))?.[1] ?? Number.NaN,
  );
  const starts: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    execFileSync('nsenter', [`--net=/var/run/netns/${node.name}`, '--', NODE, '-e', '']);
    starts.push(performance.now() - t0);
  }
  const base = percentile(starts, 50);
  writeResults('cni', [
    figure(`CNI ADD to policy-enforced endpoint, p50 over ${PODS} pods`, percentile(times, 50), 'ms', base),
    figure(`CNI ADD to policy-enforced endpoint, p99 over ${PODS} pods`, percentile(times, 99), 'ms', base),
    figure('bare start of the pinned Node.js (baseline)', base, 'ms'),
    figure(`agent RSS with ${PODS} endpoints`, rssKb / 1024, 'MiB'),
  ]);
  for (const [i] of names.entries()) {
    execFileSync('ip', ['netns', 'exec', node.name!, CNI], {
      input: conf,
      env: {
        ...process.env,
        CNI_COMMAND: 'DEL',
        CNI_CONTAINERID: `bench-${i}`,
        CNI_NETNS: `/var/run/netns/${names[i]}`,
        CNI_IFNAME: 'eth0',
      },
    });
  }
} finally {
  agent.kill('SIGKILL');
  unpin(pinDir);
  rmSync(work, { recursive: true, force: true });
}
