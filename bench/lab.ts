/**
 * The lab's speed. (1) `lab up` to every pod Ready for 3 nodes and 30 pods (the tutorial's
 * workloads, cluster DNS, the agents and a filler Deployment), against the bare kernel
 * work of the same topology (namespaces, bridge, veths, routes) measured in the same run.
 * (2) Pod create-to-Ready over 300 pods (one at a time by default, each `sleep` in its own
 * namespace through hypha-cni), against the floor any runtime pays: a namespace, a veth
 * pair with an address, and a process started in it, measured in the same run.
 * HYPHA_BENCH_IN_FLIGHT sets how many pods are created at once. (3) A service's backend
 * changed in the API (an EndpointSlice patched) until a node's maps hold it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyFiles } from '../src/cli/commands/lab.js';
import { LbMaps } from '../src/datapath/lb.js';
import { KubeClient, loadKubeconfig } from '../src/k8s/client.js';
import { createTopology, destroyTopology, planTopology } from '../src/lab/cluster/topology.js';
import { Lab } from '../src/lab/lab.js';
import { NetBatch, NetNs } from '../src/lab/net/index.js';
import { figure, percentile, repoRoot, writeResults } from './report.js';

const PODS = Number(process.env.HYPHA_BENCH_PODS ?? 300);
const IN_FLIGHT = Number(process.env.HYPHA_BENCH_IN_FLIGHT ?? 1);
const NAME = `hyb${process.pid.toString(36)}`;

interface Pod {
  metadata: { name: string };
  status?: { conditions?: { type: string; status: string }[] };
}
const ready = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Baseline (1): the topology alone.
const bareT0 = performance.now();
const plan = planTopology({ cluster: `${NAME}b`, nodes: 3, underlayOctet: 246 });
await createTopology(plan);
const bareUp = performance.now() - bareT0;
await destroyTopology(plan);

// (1) lab up with 30 pods.
const dataDir = mkdtempSync(join(tmpdir(), 'hy-bench-lab-'));
const t0 = performance.now();
const lab = new Lab({ name: NAME, nodes: 3, dataDir, values: {}, port: 0, underlayOctet: 247 }, () => {});
const figures = [];
try {
  const state = await lab.up();
  const client = new KubeClient(loadKubeconfig(state.kubeconfig));
  const quiet = { write: () => true } as unknown as NodeJS.WritableStream;
  await applyFiles(client, [join(repoRoot, 'examples/tutorial/00-workloads.yaml')], quiet);
  const existing = (await client.json<{ items: Pod[] }>('GET', '/api/v1/pods')).items.length;
  await client.apply({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'filler', namespace: 'default' },
    spec: {
      replicas: Math.max(0, 30 - existing - 0),
      selector: { matchLabels: { app: 'filler' } },
      template: {
        metadata: { labels: { app: 'filler' } },
        spec: { containers: [{ name: 'c', image: 'hypha/toolbox', command: ['sleep', 'infinity'] }] },
      },
    },
  });
  for (;;) {
    const pods = (await client.json<{ items: Pod[] }>('GET', '/api/v1/pods')).items;
    if (pods.length >= 30 && pods.every(ready)) break;
    await sleep(50);
  }
  const upMs = performance.now() - t0;
  figures.push(
    figure('lab up to 30 pods Ready (3 nodes), vs the bare topology', upMs / 1000, 's', bareUp / 1000),
  );
  await client.request('DELETE', '/apis/apps/v1/namespaces/default/deployments/filler');

  // (2) create-to-Ready over PODS pods, IN_FLIGHT at a time.
  const lat: number[] = [];
  let next = 0;
  const one = async (i: number) => {
    const name = `bench-${i}`;
    const start = performance.now();
    await client.json('POST', '/api/v1/namespaces/default/pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: { app: 'bench' } },
      spec: { containers: [{ name: 'c', image: 'hypha/toolbox', command: ['sleep', 'infinity'] }] },
    });
    for (;;) {
      const p = await client.json<Pod>('GET', `/api/v1/namespaces/default/pods/${name}`);
      if (ready(p)) break;
      await sleep(5);
    }
    lat.push(performance.now() - start);
  };
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < PODS) await one(next++);
    }),
  );

  // The floor: namespace + veth with an address + a process in it, as many in flight.
  const floor: number[] = [];
  const node = await NetNs.create(`hybf${process.pid.toString(36)}`);
  let n = 0;
  try {
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (n < 100) {
          const i = n++;
          const start = performance.now();
          const ns = `hybp${process.pid.toString(36)}${i}`;
          const b = new NetBatch();
          b.addNetns(ns, { loopback: true });
          b.addVeth({ name: 'eth0', ns, peer: `hybv${i}`, peerNs: node.name! });
          b.addAddress(ns, 'eth0', `10.99.${i >> 8}.${(i & 255) + 1}/32`);
          b.setLink(ns, 'eth0', { up: true });
          await b.run();
          await new NetNs(ns).exec('true', []);
          floor.push(performance.now() - start);
        }
      }),
    );
  } finally {
    for (const ns of await NetNs.list(`hybp${process.pid.toString(36)}`)) await NetNs.delete(ns);
    await NetNs.delete(node.name!);
  }
  figures.push(
    figure(
      `pod create-to-Ready p50 over ${PODS} pods (${IN_FLIGHT} in flight), vs namespace+veth+process`,
      percentile(lat, 50),
      'ms',
      percentile(floor, 50),
    ),
    figure(
      `pod create-to-Ready p99 over ${PODS} pods (${IN_FLIGHT} in flight), vs namespace+veth+process`,
      percentile(lat, 99),
      'ms',
      percentile(floor, 99),
    ),
  );

  // (3) A backend change (an EndpointSlice patched) until the node's maps hold it: the agent's path.
  await client.apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'manual', namespace: 'default' },
    spec: { ports: [{ name: 'http', port: 80 }] },
  });
  const slicePath = '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/manual-1';
  await client.json('POST', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'manual-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'manual' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['10.244.1.250'], conditions: { ready: true } }],
  });
  const change: number[] = [];
  for (let i = 0; i < 50; i++) {
    const ip = `10.244.1.${10 + i}`;
    const t = performance.now();
    await client.json(
      'PATCH',
      slicePath,
      { endpoints: [{ addresses: [ip], conditions: { ready: true } }] },
      'application/merge-patch+json',
    );
    for (;;) {
      using m = LbMaps.openPinned(`/sys/fs/bpf/hypha/${NAME}-worker`);
      if (m.listFrontends().some((f) => f.backends.some((b) => b.ip === ip))) break;
      await sleep(1);
    }
    change.push(performance.now() - t);
  }
  figures.push(
    figure(
      'backend change (EndpointSlice patched) to the node maps, p50 over 50',
      percentile(change, 50),
      'ms',
    ),
    figure(
      'backend change (EndpointSlice patched) to the node maps, p99 over 50',
      percentile(change, 99),
      'ms',
    ),
  );
} finally {
  await lab.down(false);
  rmSync(dataDir, { recursive: true, force: true });
}
writeResults('lab', figures);
