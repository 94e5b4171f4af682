/** A small cluster as the flow builder's enrichment sees it, and datapath events from it. */
import type { DatapathEvent } from '../../src/datapath/datapath.js';
import {
  type EndpointInfo,
  FlowBuilder,
  type FlowEnrichment,
  type PolicyRuleInfo,
} from '../../src/hubble/index.js';
import { type PacketSpec, packet } from '../helpers/packet.js';

/** 2023-11-30T05:01:02.123Z */
export const WALL_MS = Date.UTC(2023, 10, 30, 5, 1, 2, 123);
export const TS_NS = 5_000_000_000n;

const podLabels = (ns: string, app: string) => [
  `k8s:app=${app}`,
  `k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=${ns}`,
  'k8s:io.cilium.k8s.policy.cluster=default',
  'k8s:io.cilium.k8s.policy.serviceaccount=default',
  `k8s:io.kubernetes.pod.namespace=${ns}`,
];

export const FRONTEND: EndpointInfo = {
  identity: 1234,
  namespace: 'production',
  podName: 'frontend-abc',
  labels: podLabels('production', 'frontend'),
  workloads: [{ name: 'frontend', kind: 'Deployment' }],
};

export const CATALOG: EndpointInfo = {
  id: 101,
  identity: 5678,
  namespace: 'production',
  podName: 'catalog-xyz',
  labels: podLabels('production', 'catalog'),
  workloads: [{ name: 'catalog', kind: 'Deployment' }],
};

export const RULES: Record<number, PolicyRuleInfo> = {
  1: {
    kind: 'CiliumNetworkPolicy',
    namespace: 'production',
    name: 'catalog-allow-frontend',
    verdict: 'allow',
  },
  2: {
    kind: 'CiliumNetworkPolicy',
    namespace: 'production',
    name: 'deny-8080',
    verdict: 'deny',
    revision: 7,
  },
};

export const enrichment: FlowEnrichment = {
  endpointById: (id) => (id === 101 ? CATALOG : undefined),
  endpointByIp: (ip) => (ip === '10.0.1.5' ? FRONTEND : ip === '10.0.2.7' ? CATALOG : undefined),
  policyRule: (cookie) => RULES[cookie],
  selectingPolicies: (ep, dir) =>
    ep === 101 && dir === 'ingress'
      ? [{ kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'catalog-allow-frontend', uid: 'u-9' }]
      : [],
  policyMatchType: (q) => (q.remoteIdentity === 1234 ? 2 : undefined),
  interfaceName: (i) => (i === 7 ? 'lxc1234' : undefined),
  serviceByAddr: (ip, port) =>
    ip === '10.96.0.10' && port === 53 ? { name: 'kube-dns', namespace: 'kube-system' } : undefined,
};

export function builder(e: FlowEnrichment = enrichment): FlowBuilder {
  let n = 0;
  return new FlowBuilder({
    nodeName: 'kind-worker',
    enrichment: e,
    bootTimeNs: BigInt(WALL_MS) * 1_000_000n - TS_NS,
    uuid: () => `uuid-${++n}`,
  });
}

/** frontend (10.0.1.5:52342) -> catalog (10.0.2.7:8080), TCP SYN. */
export const SYN: PacketSpec = {
  src: '10.0.1.5',
  dst: '10.0.2.7',
  proto: 'tcp',
  sport: 52342,
  dport: 8080,
  flags: 0x02,
};

export function event(p: Partial<DatapathEvent> & { spec?: PacketSpec }): DatapathEvent {
  const { spec, ...rest } = p;
  const bytes = rest.packet ?? packet(spec ?? SYN);
  return {
    ts_ns: TS_NS,
    type: 5,
    subtype: 0,
    source: 101,
    src_identity: 1234,
    dst_identity: 5678,
    ifindex: 7,
    cookie: 0,
    orig_len: bytes.length,
    cap_len: bytes.length,
    verdict: 1,
    direction: 0,
    ct_state: 0,
    proxy_port: 0,
    ...rest,
    packet: bytes,
  };
}
