/**
 * Kubernetes Services and EndpointSlices as the load balancer sees them: one frontend per
 * (address, port, protocol) — the ClusterIP, each externalIP, and the node's address for
 * a NodePort — each with its backends (ready endpoints active, serving-but-terminating
 * ones kept for their connections but given no new ones). Pure: objects in, frontends
 * out; applyServiceChanges hands the changed services' frontends to the load balancer
 * (ServiceMaps, which writes the difference to the maps).
 */
import type { Frontend as LbFrontend, ServiceIds, ServiceSpec } from '../datapath/lb.js';
import { errorMessage } from '../errors.js';
import { cidrContains } from '../policy/index.js';

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
  /** Why this frontend must not be written (it is reported, and the service's others apply). */
  problem?: string;
  /** Written, but probably not what the user meant (e.g. a port no EndpointSlice has). */
  warning?: string;
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
  /** Pod CIDRs of the cluster: an externalIP inside one would hijack pod traffic, so it is refused. */
  podCidrs?: readonly string[];
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
    const svcSlices = bySvc.get(key) ?? [];
    const slicePorts = [
      ...new Set(
        svcSlices.flatMap((sl) => (sl.ports ?? []).map((x) => `"${x.name ?? ''}"/${x.protocol ?? 'TCP'}`)),
      ),
    ];
    const firstIndex = new Map<string, number>();
    (spec.ports ?? []).forEach((p, index) => {
      const protocol = (p.protocol ?? 'TCP') as LbProtocol;
      const portName = p.name ?? '';
      const samePort = `${p.port}/${protocol}`;
      const earlier = firstIndex.get(samePort);
      if (earlier !== undefined) {
        // The API server refuses this; a stale or foreign object may still carry it.
        for (const f of out.values())
          if (f.service === key && f.frontend.port === p.port && f.frontend.protocol === protocol)
            f.warning = `spec.ports[${index}] repeats spec.ports[${earlier}] (${samePort}) and is ignored`;
        return;
      }
      firstIndex.set(samePort, index);
      const backends: Backend[] = [];
      const seen = new Set<string>();
      const matched = svcSlices.some((sl) =>
        (sl.ports ?? []).some((x) => (x.name ?? '') === portName && (x.protocol ?? 'TCP') === protocol),
      );
      const warning =
        slicePorts.length && !matched
          ? `spec.ports[${index}] "${portName}"/${protocol}: no EndpointSlice of the service has a port of that name (they have ${slicePorts.join(', ')}), so it has no backends`
          : undefined;
      for (const slice of svcSlices) {
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
          ...(warning ? { warning } : {}),
        };
        if (ftype === 'ExternalIP') {
          const cidr = o.podCidrs?.find((c) => cidrContains(c, `${ip}/32`));
          if (cidr) f.problem = `externalIP ${ip} is inside the pod CIDR ${cidr}`;
        }
        const k = frontendKey(f.frontend);
        const other = out.get(k);
        if (other && other.service !== key)
          f.problem ??= `${k} is already the frontend of service ${other.service}`;
        if (!other || other.problem) out.set(k, f);
        else if (f.problem) out.set(`${k} ${key}`, f);
      };
      if (spec.clusterIP && spec.clusterIP !== 'None')
        add(spec.clusterIP, p.port, 'ClusterIP', spec.internalTrafficPolicy);
      for (const ip of spec.externalIPs ?? []) add(ip, p.port, 'ExternalIP', spec.externalTrafficPolicy);
      for (const ing of spec.type === 'LoadBalancer' ? (svc.status?.loadBalancer?.ingress ?? []) : [])
        if (ing.ip) add(ing.ip, p.port, 'LoadBalancer', spec.externalTrafficPolicy);
      if ((type === 'NodePort' || type === 'LoadBalancer') && p.nodePort && o.nodeIp)
        add(o.nodeIp, p.nodePort, 'NodePort', spec.externalTrafficPolicy);
    });
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

// --- applying frontends to the load balancer

/** The load balancer as the agent writes to it (ServiceMaps). */
export interface FrontendWriter {
  /** Throws what upsertServices would throw for this spec alone (a ValidationError). */
  validate(spec: ServiceSpec): void;
  upsertServices(specs: readonly ServiceSpec[]): ServiceIds[];
  deleteServices(frontends: readonly LbFrontend[]): number;
}

/** A frontend as the agent applied it (for `hypha service list`). */
export interface ServiceRecord extends ServiceFrontend {
  revNatIndex?: number;
  error?: string;
}

/** What the agent keeps of applied services: frontends by `namespace/name`, and the service at each `ip:port`. */
export interface AppliedServices {
  records: Map<string, ServiceRecord[]>;
  at: Map<string, { namespace: string; name: string }>;
}

/** A frontend that was refused or that looks wrong, for events on the service and for status. */
export interface ServiceProblem {
  service: string;
  frontend: string;
  severity: 'error' | 'warning';
  message: string;
}

/**
 * Which service owns each frontend, and which services wait for one another holds; kept
 * beside the agent's records (keyed by them) so the agent's state stays two plain maps.
 */
interface Ownership {
  owner: Map<string, string>;
  waiting: Map<string, Set<string>>;
}
const ownerships = new WeakMap<Map<string, ServiceRecord[]>, Ownership>();

function ownershipOf(applied: AppliedServices): Ownership {
  let o = ownerships.get(applied.records);
  if (!o) {
    o = { owner: new Map(), waiting: new Map() };
    for (const [svc, recs] of applied.records)
      for (const r of recs) if (!r.error) o.owner.set(frontendKey(r.frontend), svc);
    ownerships.set(applied.records, o);
  }
  return o;
}

/**
 * Services changed (by `namespace/name`; an empty list: gone): their frontends go to the
 * load balancer in one change set, costing what changed and nothing else. Each service
 * stands alone: a frontend that cannot be written (an externalIP in the pod CIDR, a
 * frontend another service holds, more backends than the maps take) is reported on its
 * record and returned as a problem, and everything else applies. A frontend held by
 * another service goes to the waiting one when it is freed.
 */
export function applyServiceChanges(
  lb: FrontendWriter,
  applied: AppliedServices,
  changes: ReadonlyMap<string, readonly ServiceFrontend[]>,
): ServiceProblem[] {
  const own = ownershipOf(applied);
  const upserts: ServiceSpec[] = [];
  const owners: ServiceRecord[] = [];
  const removed: LbFrontend[] = [];
  const freed = new Set<string>();
  const release = (k: string, svc: string) => {
    if (own.owner.get(k) !== svc) return;
    own.owner.delete(k);
    freed.add(k);
  };
  // Frontends given up first, so a service taking over one in the same change finds it free.
  for (const [key, frontends] of changes) {
    const wanted = new Set(frontends.map((f) => frontendKey(f.frontend)));
    for (const old of applied.records.get(key) ?? []) {
      const k = frontendKey(old.frontend);
      const lbf = lbFrontend(old);
      if (!wanted.has(k) && lbf && own.owner.get(k) === key) removed.push(lbf);
      if (!wanted.has(k)) release(k, key);
      own.waiting.get(k)?.delete(key);
    }
  }
  for (const [key, frontends] of changes) {
    const before = applied.records.get(key) ?? [];
    const records: ServiceRecord[] = [];
    for (const f of frontends) {
      const rec: ServiceRecord = { ...f };
      const k = frontendKey(f.frontend);
      const holder = own.owner.get(k);
      try {
        if (f.problem) throw new Error(f.problem);
        if (holder && holder !== key) {
          const waiting = own.waiting.get(k) ?? new Set<string>();
          own.waiting.set(k, waiting.add(key));
          throw new Error(`${k} is already the frontend of service ${holder}`);
        }
        const spec = toServiceSpec(f);
        lb.validate(spec);
        upserts.push(spec);
        owners.push(rec);
        own.owner.set(k, key);
      } catch (err) {
        rec.error = errorMessage(err);
        const lbf = lbFrontend(f);
        if (lbf && holder === key) removed.push(lbf);
        release(k, key);
      }
      records.push(rec);
    }
    for (const old of before) applied.at.delete(`${old.frontend.ip}:${old.frontend.port}`);
    const [namespace, name] = key.split('/') as [string, string];
    for (const r of records)
      if (!r.error || !applied.at.has(`${r.frontend.ip}:${r.frontend.port}`))
        applied.at.set(`${r.frontend.ip}:${r.frontend.port}`, { namespace, name });
    if (records.length) applied.records.set(key, records);
    else applied.records.delete(key);
  }
  try {
    if (removed.length) lb.deleteServices(removed);
    const ids = lb.upsertServices(upserts);
    ids.forEach((id, i) => {
      owners[i]!.revNatIndex = id.revNatIndex;
    });
  } catch {
    // One service that does not fit (a map full) must not take the others down with it.
    upserts.forEach((spec, i) => {
      try {
        owners[i]!.revNatIndex = lb.upsertServices([spec])[0]!.revNatIndex;
      } catch (err) {
        owners[i]!.error = `not written: ${errorMessage(err)}`;
        release(frontendKey(owners[i]!.frontend), owners[i]!.service);
      }
    });
  }
  const problems: ServiceProblem[] = [];
  for (const key of changes.keys())
    for (const r of applied.records.get(key) ?? []) {
      const frontend = frontendKey(r.frontend);
      if (r.error) problems.push({ service: key, frontend, severity: 'error', message: r.error });
      else if (r.warning) problems.push({ service: key, frontend, severity: 'warning', message: r.warning });
    }
  // Services that waited for a frontend now free try again, as they last asked.
  const retry = new Map<string, ServiceFrontend[]>();
  for (const k of freed) {
    for (const svc of own.waiting.get(k) ?? [])
      if (!changes.has(svc) && applied.records.has(svc))
        retry.set(
          svc,
          applied.records.get(svc)!.map(({ revNatIndex: _r, error: _e, ...f }) => f),
        );
    own.waiting.delete(k);
  }
  if (retry.size) problems.push(...applyServiceChanges(lb, applied, retry));
  return problems;
}

/** The load balancer's frontend (TCP and UDP; SCTP services are not translated). */
function lbFrontend(f: ServiceFrontend): LbFrontend | undefined {
  const { ip, port, protocol } = f.frontend;
  return protocol === 'TCP' || protocol === 'UDP' ? { ip, port, protocol } : undefined;
}

/** A frontend as the socket load balancer takes it. */
export function toServiceSpec(f: ServiceFrontend): ServiceSpec {
  const local = f.localOnly ? 'Local' : 'Cluster';
  const frontend = lbFrontend(f);
  if (!frontend) throw new Error(`${f.frontend.protocol} services are not translated (TCP and UDP are)`);
  return {
    frontend,
    type: f.type,
    backends: f.backends.map((b) => ({
      ip: b.ip,
      port: b.port,
      state: b.state,
      ...(f.localOnly ? { local: true } : {}),
    })),
    algorithm: f.algorithm,
    ...(f.affinityTimeoutSec ? { affinityTimeoutSec: f.affinityTimeoutSec } : {}),
    ...(f.type === 'ClusterIP' ? { internalTrafficPolicy: local } : { externalTrafficPolicy: local }),
  };
}
