/**
 * The lab's machines: one network namespace per node on an underlay bridge, a "world"
 * namespace standing for the internet (documentation-range hosts only), and one hy link
 * from the root namespace so processes there (the API server) reach the nodes. Native
 * routing: every node routes the other nodes' pod CIDRs to them. Nothing is routed off
 * the machine: the root namespace gets only the underlay's connected /24.
 */
import { ValidationError } from '../../errors.js';
import { NetBatch, NetNs } from '../net/index.js';

export interface LabNode {
  /** Kubernetes node name, e.g. `cilium-demo-worker`. */
  name: string;
  role: 'control-plane' | 'worker';
  /** Network namespace holding the node. */
  netns: string;
  /** Address on the underlay (the node's InternalIP). */
  ip: string;
  podCidr: string;
  /** The first address of the pod CIDR: the gateway pods route through. */
  podGateway: string;
}

export interface WorldHost {
  name: string;
  ip: string;
}

export interface Topology {
  cluster: string;
  underlayCidr: string;
  /** The root namespace's address on the underlay: the API server listens there for agents. */
  hostIp: string;
  nodes: LabNode[];
  world: { netns: string; ip: string; hosts: WorldHost[] };
  /** Namespaces in creation order (underlay first). */
  namespaces: string[];
  /** The root-namespace link into the underlay. */
  rootLink: string;
}

export interface TopologySpec {
  /** Cluster name, as kind names it: nodes are `<cluster>-control-plane`, `<cluster>-worker`, `<cluster>-worker2`... */
  cluster: string;
  nodes: number;
  /** Third octet of 10.x.0.0/24 for the underlay; lets two labs coexist. */
  underlayOctet?: number;
  /** World hosts besides the defaults. */
  worldHosts?: WorldHost[];
}

const CLUSTER_NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

/** kind's node names: one control plane, then worker, worker2, worker3... */
export function nodeNames(cluster: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) =>
    i === 0 ? `${cluster}-control-plane` : i === 1 ? `${cluster}-worker` : `${cluster}-worker${i}`,
  );
}

/** The world's default hosts: the tutorial's partner API and an echo of the caller's address. */
export const DEFAULT_WORLD_HOSTS: WorldHost[] = [
  { name: 'api.external-partner.com', ip: '203.0.113.10' },
  { name: 'other-partner.example', ip: '203.0.113.20' },
  { name: 'ifconfig.me', ip: '198.51.100.10' },
];

/** Computes the plan without touching the kernel. */
export function planTopology(spec: TopologySpec): Topology {
  if (!CLUSTER_NAME.test(spec.cluster)) {
    throw new ValidationError(
      'lab',
      'cluster',
      `"${spec.cluster}" must be lower-case letters, digits and '-', up to 32`,
    );
  }
  if (!Number.isInteger(spec.nodes) || spec.nodes < 1 || spec.nodes > 200) {
    throw new ValidationError('lab', 'nodes', `${spec.nodes}: must be a whole number from 1 to 200`);
  }
  const octet = spec.underlayOctet ?? 240;
  if (!Number.isInteger(octet) || octet < 1 || octet > 254) {
    throw new ValidationError('lab', 'underlayOctet', `${octet}: must be 1 to 254`);
  }
  if (octet === 244 || octet === 96) {
    throw new ValidationError(
      'lab',
      'underlayOctet',
      `${octet}: 10.${octet}.0.0/16 is the lab's ${octet === 244 ? 'pod' : 'service'} range`,
    );
  }
  const prefix = `hylab-${spec.cluster}`;
  const nodes = nodeNames(spec.cluster, spec.nodes).map(
    (name, i): LabNode => ({
      name,
      role: i === 0 ? 'control-plane' : 'worker',
      netns: `hylab-${name}`,
      ip: `10.${octet}.0.${i + 1}`,
      podCidr: `10.244.${i}.0/24`,
      podGateway: `10.244.${i}.1`,
    }),
  );
  return {
    cluster: spec.cluster,
    underlayCidr: `10.${octet}.0.0/24`,
    hostIp: `10.${octet}.0.254`,
    nodes,
    world: {
      netns: `${prefix}-world`,
      ip: `10.${octet}.0.250`,
      hosts: [...DEFAULT_WORLD_HOSTS, ...(spec.worldHosts ?? [])],
    },
    namespaces: [`${prefix}-ul`, ...nodes.map((n) => n.netns), `${prefix}-world`],
    rootLink: `hylab${octet}`,
  };
}

/**
 * Creates the namespaces and links of a plan in a few batches. On failure, whatever was
 * made is removed again before the error is thrown.
 */
export async function createTopology(t: Topology): Promise<void> {
  const [ul] = t.namespaces;
  if (!ul) throw new Error('topology has no underlay');
  const len = t.underlayCidr.split('/')[1];
  try {
    const b = new NetBatch();
    for (const ns of t.namespaces) b.addNetns(ns, { loopback: true });
    b.addBridge(ul, 'hybr0');
    b.setLink(ul, 'hybr0', { up: true });
    // Root access: one hy link, connected route only.
    b.addVeth({ name: t.rootLink, peer: 'hyroot', peerNs: ul });
    b.setLink(ul, 'hyroot', { master: 'hybr0', up: true });
    b.addAddress(undefined, t.rootLink, `${t.hostIp}/${len}`);
    b.setLink(undefined, t.rootLink, { up: true });
    const uplinks = [
      ...t.nodes.map((n) => ({ ns: n.netns, ip: n.ip })),
      { ns: t.world.netns, ip: t.world.ip },
    ];
    uplinks.forEach((u, i) => {
      const port = `hyp${i}`;
      b.addVeth({ name: 'eth0', ns: u.ns, peer: port, peerNs: ul });
      b.setLink(ul, port, { master: 'hybr0', up: true });
      b.addAddress(u.ns, 'eth0', `${u.ip}/${len}`);
      b.setLink(u.ns, 'eth0', { up: true });
      b.sysctl(u.ns, 'net.ipv4.ip_forward', 1);
    });
    for (const n of t.nodes) {
      // Pods answer through the node; reverse-path checks would drop asymmetric lab paths.
      b.sysctl(n.netns, 'net.ipv4.conf.all.rp_filter', 0);
      b.sysctl(n.netns, 'net.ipv4.conf.default.rp_filter', 0);
      // IPv4-only cluster: pods' host-side veths get no IPv6 (no router solicitations at pods).
      b.sysctl(n.netns, 'net.ipv6.conf.default.disable_ipv6', 1);
      b.sysctl(n.netns, 'net.ipv6.conf.all.disable_ipv6', 1);
      for (const other of t.nodes) {
        if (other !== n) b.addRoute(n.netns, { to: other.podCidr, via: other.ip });
      }
      b.addRoute(n.netns, { to: 'default', via: t.world.ip });
    }
    // The world's hosts are addresses on its loopback (this kernel has no dummy device):
    // local to the world namespace, reachable through its eth0.
    b.sysctl(t.world.netns, 'net.ipv4.conf.all.rp_filter', 0);
    for (const h of t.world.hosts) b.addAddress(t.world.netns, 'lo', `${h.ip}/32`);
    await b.run();
  } catch (err) {
    await destroyTopology(t).catch(() => {});
    throw err;
  }
}

/** Removes every namespace and the root link of a topology; missing pieces are fine. */
export async function destroyTopology(t: Pick<Topology, 'namespaces' | 'rootLink'>): Promise<void> {
  const existing = new Set(await NetNs.list('hylab-'));
  const root = NetNs.root;
  if (await root.link(t.rootLink)) await root.deleteLink(t.rootLink);
  const b = new NetBatch();
  let any = false;
  for (const ns of [...t.namespaces].reverse()) {
    if (!existing.has(ns)) continue;
    b.deleteNetns(ns);
    any = true;
  }
  if (any) await b.run();
}
