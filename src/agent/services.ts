/**
 * Kubernetes Services and EndpointSlices as the load balancer sees them: one frontend per
 * (address, port, protocol) — the ClusterIP, each externalIP, and the node's address for
 * a NodePort — each with its backends (ready endpoints active, serving-but-terminating
 * ones kept for their connections but given no new ones). Pure: objects in, frontends
 * out; the agent writes the difference to the maps.
 */

export type LbProtocol = 'TCP' | 'UDP' | 'SCTP';
export type FrontendType = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';

export interface Frontend {
  ip: string;
  port: number;
  protocol: LbProtocol;
}

export interface Backend {
  ip: string;
  port: number;
  state: 'active' | 'terminating';
  nodeName?: string;
}

export interface ServiceFrontend {
  /** `namespace/name`, and the service port's name. */
  service: string;
  portName: string;
  frontend: Frontend;
  type: FrontendType;
  backends: Backend[];
  algorithm: 'random' | 'maglev';
  affinityTimeoutSec?: number;
  /** externalTrafficPolicy/internalTrafficPolicy Local: only this node's backends. */
  localOnly: boolean;
}

interface ServicePort {
  name?: string;
  port: number;
  protocol?: string;
  nodePort?: number;
  targetPort?: number | string;
}

export interface ServiceObject {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec: {
    type?: string;
    clusterIP?: string;
    externalIPs?: string[];
    ports?: ServicePort[];
    selector?: Record<string, string>;
    sessionAffinity?: string;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    externalTrafficPolicy?: string;
    internalTrafficPolicy?: string;
  };
  status?: { loadBalancer?: { ingress?: { ip?: string }[] } };
}

export interface EndpointSliceObject {
  metadata: { namespace: string; labels?: Record<string, string> };
  addressType?: string;
  ports?: { name?: string; port?: number; protocol?: string }[];
  endpoints?: {
    addresses?: string[];
    conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
    nodeName?: string;
  }[];
}

/** Cilium's per-service annotation choosing the backend selection. */
export const LB_ALGORITHM_ANNOTATION = 'service.cilium.io/lb-algorithm';

export const frontendKey = (f: Frontend) => `${f.ip}:${f.port}/${f.protocol}`;

export interface DesiredOptions {
  nodeName: string;
  nodeIp?: string;
  /** The cluster's default when a service has no annotation. */
  defaultAlgorithm: 'random' | 'maglev';
}

/** Every frontend the services call for, keyed by `ip:port/protocol`. */
export function desiredFrontends(
  services: readonly ServiceObject[],
  slices: readonly EndpointSliceObject[],
  o: DesiredOptions,
): Map<string, ServiceFrontend> {
  const bySvc = new Map<string, EndpointSliceObject[]>();
  for (const s of slices) {
    if (s.addressType && s.addressType !== 'IPv4') continue;
    const name = s.metadata.labels?.['kubernetes.io/service-name'];
    if (!name) continue;
    const key = `${s.metadata.namespace}/${name}`;
    bySvc.set(key, [...(bySvc.get(key) ?? []), s]);
  }
  const out = new Map<string, ServiceFrontend>();
  for (const svc of services) {
    const spec = svc.spec;
    const type = spec.type ?? 'ClusterIP';
    if (type === 'ExternalName') continue;
    const key = `${svc.metadata.namespace}/${svc.metadata.name}`;
    const ann = svc.metadata.annotations?.[LB_ALGORITHM_ANNOTATION];
    const algorithm = ann === 'maglev' || ann === 'random' ? ann : o.defaultAlgorithm;
    const affinity =
      spec.sessionAffinity === 'ClientIP'
        ? (spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800)
        : undefined;
    for (const p of spec.ports ?? []) {
      const protocol = (p.protocol ?? 'TCP') as LbProtocol;
      const portName = p.name ?? '';
      const backends: Backend[] = [];
      const seen = new Set<string>();
      for (const slice of bySvc.get(key) ?? []) {
        const sp = (slice.ports ?? []).find(
          (x) => (x.name ?? '') === portName && (x.protocol ?? 'TCP') === protocol,
        );
        if (!sp?.port) continue;
        for (const e of slice.endpoints ?? []) {
          const c = e.conditions ?? {};
          const ready = c.ready !== false;
          const terminatingServing = c.terminating === true && c.serving === true;
          if (!ready && !terminatingServing) continue;
          for (const ip of e.addresses ?? []) {
            const id = `${ip}:${sp.port}`;
            if (seen.has(id)) continue;
            seen.add(id);
            backends.push({
              ip,
              port: sp.port,
              state: ready && c.terminating !== true ? 'active' : 'terminating',
              ...(e.nodeName ? { nodeName: e.nodeName } : {}),
            });
          }
        }
      }
      backends.sort((a, b) => `${a.ip}:${a.port}`.localeCompare(`${b.ip}:${b.port}`));
      const base = {
        service: key,
        portName,
        algorithm,
        ...(affinity !== undefined ? { affinityTimeoutSec: affinity } : {}),
      };
      const add = (ip: string, port: number, ftype: FrontendType, localPolicy: string | undefined) => {
        const localOnly = localPolicy === 'Local';
        const f: ServiceFrontend = {
          ...base,
          frontend: { ip, port, protocol },
          type: ftype,
          localOnly,
          backends: localOnly ? backends.filter((b) => b.nodeName === o.nodeName) : backends,
        };
        out.set(frontendKey(f.frontend), f);
      };
      if (spec.clusterIP && spec.clusterIP !== 'None')
        add(spec.clusterIP, p.port, 'ClusterIP', spec.internalTrafficPolicy);
      for (const ip of spec.externalIPs ?? []) add(ip, p.port, 'ExternalIP', spec.externalTrafficPolicy);
      for (const ing of spec.type === 'LoadBalancer' ? (svc.status?.loadBalancer?.ingress ?? []) : [])
        if (ing.ip) add(ing.ip, p.port, 'LoadBalancer', spec.externalTrafficPolicy);
      if ((type === 'NodePort' || type === 'LoadBalancer') && p.nodePort && o.nodeIp)
        add(o.nodeIp, p.nodePort, 'NodePort', spec.externalTrafficPolicy);
    }
  }
  return out;
}

/** What changed between two desired sets: frontends to write and frontends to delete. */
export function diffFrontends(
  before: ReadonlyMap<string, ServiceFrontend>,
  after: ReadonlyMap<string, ServiceFrontend>,
): { upsert: ServiceFrontend[]; remove: Frontend[] } {
  const upsert: ServiceFrontend[] = [];
  const remove: Frontend[] = [];
  for (const [k, f] of after) {
    const old = before.get(k);
    if (!old || JSON.stringify(old) !== JSON.stringify(f)) upsert.push(f);
  }
  for (const [k, f] of before) if (!after.has(k)) remove.push(f.frontend);
  return { upsert, remove };
}
