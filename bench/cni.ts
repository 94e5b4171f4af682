/**
 * CNI ADD to a policy-enforced endpoint, as a runtime calls it, over many pods on one
 * node: p50/p99 latency over the first HYPHA_BENCH_PODS (200), and the agent's memory
 * after those and after HYPHA_BENCH_RSS_PODS (1000) endpoints. The baseline is the bare
 * start of the pinned Node.js (every CNI call is a new process).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unpin } from '../src/bpf/index.js';
import { NetScope, uniqueName } from '../src/lab/net/index.js';
import { startAgentProcess } from '../test/helpers/agent.js';
import { figure, percentile, repoRoot, writeResults } from './report.js';

const PODS = Number(process.env.HYPHA_BENCH_PODS ?? 200);
const RSS_PODS = Math.max(PODS, Number(process.env.HYPHA_BENCH_RSS_PODS ?? 1000));
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
  // Room for every pod, the gateway, and the network and broadcast addresses.
  podCidr: `10.240.0.0/${32 - Math.ceil(Math.log2(RSS_PODS + 3))}`,
  stateDir: join(work, 'state'),
  socket,
  pinDir,
  manifests,
  stderr: 'ignore',
});
try {
  // Pod namespaces up front, in one batch: the runtime has them before it calls ADD.
  const names = Array.from({ length: RSS_PODS }, () => uniqueName('cp'));
  const b = net.batch();
  for (const n of names) b.addNetns(n);
  await b.run();
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'hypha', type: 'hypha-cni', agentSocket: socket });
  // The plugin runs in the node's namespace as a runtime would start it there, entered as
  // the baseline enters it (nsenter): `ip netns exec` would add its own start and a remount.
  const cni = (command: 'ADD' | 'DEL', i: number) =>
    execFileSync('nsenter', [`--net=/var/run/netns/${node.name}`, '--', CNI], {
      input: conf,
      env: {
        ...process.env,
        CNI_COMMAND: command,
        CNI_CONTAINERID: `bench-${i}`,
        CNI_NETNS: `/var/run/netns/${names[i]}`,
        CNI_IFNAME: 'eth0',
        CNI_ARGS: `K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-${i}`,
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    }).toString();
  const agentRssMiB = () =>
    Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, 'utf8'))?.[1] ?? Number.NaN) /
    1024;
  const times: number[] = [];
  let rss = Number.NaN;
  for (let i = 0; i < RSS_PODS; i++) {
    const t0 = performance.now();
    const result = JSON.parse(cni('ADD', i)) as { interfaces?: { name: string }[] };
    times.push(performance.now() - t0);
    // The plugin hashes without node:crypto: its names must stay what node:crypto gives.
    const host = `hy${createHash('sha256').update(`bench-${i}/eth0`).digest('hex').slice(0, 11)}`;
    if (result.interfaces?.[0]?.name !== host)
      throw new Error(`pod ${i}: host interface ${result.interfaces?.[0]?.name}, expected ${host}`);
    if (i === PODS - 1) rss = agentRssMiB();
  }
  const rssAll = agentRssMiB();
  const starts: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    execFileSync('nsenter', [`--net=/var/run/netns/${node.name}`, '--', NODE, '-e', '']);
    starts.push(performance.now() - t0);
  }
  const base = percentile(starts, 50);
  const sample = times.slice(0, PODS);
  writeResults('cni', [
    figure(`CNI ADD to policy-enforced endpoint, p50 over ${PODS} pods`, percentile(sample, 50), 'ms', base),
    figure(`CNI ADD to policy-enforced endpoint, p99 over ${PODS} pods`, percentile(sample, 99), 'ms', base),
    figure('bare start of the pinned Node.js (baseline)', base, 'ms'),
    figure(`agent RSS with ${PODS} endpoints`, rss, 'MiB'),
    figure(`CNI ADD, p50 over all ${RSS_PODS} pods`, percentile(times, 50), 'ms', base),
    figure(`CNI ADD, p99 over all ${RSS_PODS} pods`, percentile(times, 99), 'ms', base),
    figure(`agent RSS with ${RSS_PODS} endpoints`, rssAll, 'MiB'),
  ]);
  for (let i = 0; i < RSS_PODS; i++) cni('DEL', i);
} finally {
  agent.kill('SIGKILL');
  unpin(pinDir);
  rmSync(work, { recursive: true, force: true });
}
