/** A pod wired to a node the way hypha-cni wires it, for datapath tests and benchmarks without an agent. */
import type { NetNs } from '../../src/lab/net/index.js';

export interface PodWiring {
  ip: string;
  /** MACs of the pod's eth0 and of the node-side veth. */
  mac: string;
  hostMac: string;
  /** Name of the node-side veth. */
  host: string;
}

export const POD_GATEWAY = '169.254.1.1';

/** Wires `pod` to `node` (a /32, a default route via the link-local gateway, fixed neighbours); returns the veth's ifindex. */
export async function wirePod(node: NetNs, pod: NetNs, w: PodWiring): Promise<number> {
  await node.addVeth(w.host, { peer: 'eth0', peerNs: pod, mac: w.hostMac, peerMac: w.mac });
  await pod.sysctl('net.ipv6.conf.all.disable_ipv6', 1);
  await pod.addAddress('eth0', `${w.ip}/32`);
  await pod.setUp('eth0');
  await node.setUp(w.host);
  await pod.addRoute({ to: 'default', via: POD_GATEWAY, dev: 'eth0', onlink: true });
  await pod.ip('neigh', 'replace', POD_GATEWAY, 'lladdr', w.hostMac, 'dev', 'eth0', 'nud', 'permanent');
  await node.addRoute({ to: `${w.ip}/32`, dev: w.host });
  await node.ip('neigh', 'replace', w.ip, 'lladdr', w.mac, 'dev', w.host, 'nud', 'permanent');
  return node.ifindex(w.host);
}
