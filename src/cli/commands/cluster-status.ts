/**
 * `hypha status` for a whole cluster, as `cilium status` (the cilium CLI) shows it: the
 * agent DaemonSet's readiness, nodes, and how many pods have an endpoint; `--wait` polls
 * until everything is up.
 */
import type { KubeClient } from '../../k8s/client.js';

interface Summary {
  ok: boolean;
  lines: [string, string][];
  problems: string[];
}

interface Item {
  metadata: { name: string; namespace?: string; deletionTimestamp?: string };
  spec?: { hostNetwork?: boolean; nodeName?: string };
  status?: Record<string, unknown> & { conditions?: { type: string; status: string }[] };
}

const ready = (i: Item) =>
  i.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

export async function clusterStatus(client: KubeClient): Promise<Summary> {
  const ds = await client.request('GET', '/apis/apps/v1/namespaces/kube-system/daemonsets/cilium');
  const nodes = (await client.json<{ items: Item[] }>('GET', '/api/v1/nodes')).items;
  const pods = (await client.json<{ items: Item[] }>('GET', '/api/v1/pods')).items.filter(
    (p) => !p.metadata.deletionTimestamp,
  );
  const ceps = (await client.json<{ items: Item[] }>('GET', '/apis/cilium.io/v2/ciliumendpoints')).items;
  const problems: string[] = [];
  const lines: [string, string][] = [];
  if (ds.status !== 200) {
    problems.push('the cilium DaemonSet is missing');
    lines.push(['DaemonSet', 'cilium    missing']);
  } else {
    const st = ((ds.body as Item).status ?? {}) as Record<string, number>;
    const desired = st.desiredNumberScheduled ?? 0;
    const r = st.numberReady ?? 0;
    lines.push([
      'DaemonSet',
      `cilium    Desired: ${desired}, Ready: ${r}/${desired}, Available: ${st.numberAvailable ?? 0}/${desired}`,
    ]);
    if (desired === 0 || r < desired) problems.push(`cilium agents ready: ${r}/${desired}`);
  }
  const agents = pods.filter(
    (p) => p.metadata.namespace === 'kube-system' && p.metadata.name.startsWith('cilium-'),
  );
  lines.push(['Containers', `cilium    Running: ${agents.filter(ready).length}`]);
  const nodesReady = nodes.filter(ready).length;
  lines.push(['Nodes', `${nodesReady}/${nodes.length} Ready`]);
  if (nodesReady < nodes.length) problems.push(`nodes ready: ${nodesReady}/${nodes.length}`);
  const managed = pods.filter((p) => !p.spec?.hostNetwork);
  const withEndpoint = managed.filter((p) =>
    ceps.some((c) => c.metadata.namespace === p.metadata.namespace && c.metadata.name === p.metadata.name),
  );
  lines.push(['Cluster Pods', `${withEndpoint.length}/${managed.length} managed by Hypha`]);
  lines.push(['Hubble Relay', 'disabled (not implemented yet)']);
  lines.push(['ClusterMesh', 'disabled']);
  return {
    ok: problems.length === 0,
    lines: [['Hypha', problems.length ? 'not ready' : 'OK'], ...lines],
    problems,
  };
}

export function formatClusterStatus(s: Summary): string {
  const out = s.lines.map(([k, v]) => `${`${k}:`.padEnd(16)}${v}`);
  for (const p of s.problems) out.push(`  - ${p}`);
  return `${out.join('\n')}\n`;
}
