/**
 * The service map: flows aggregated into nodes (workloads, services, the world, cluster
 * DNS, reserved identities such as the host) and directed edges between them, with
 * forwarded and dropped counts, the ports used, L7 counts, the latest verdict and the
 * policies that allowed or dropped. Pure: flows in, data out; no clock, no I/O.
 *
 * Memory is bounded: counters per edge (not flows), at most `maxEdges` edges (the least
 * recently seen goes first) and bounded lists within an edge; a node lives while an edge
 * refers to it.
 */
import {
  dropReasonText,
  type Endpoint,
  type Flow,
  flowPorts,
  flowType,
  hostNames,
  type Policy,
  parseTimestamp,
  RESERVED_IDENTITY_NAMES,
  type Service,
  type Verdict,
} from '../hubble/index.js';

export type MapNodeKind = 'workload' | 'service' | 'dns' | 'world' | 'reserved' | 'unknown';

/** One side of a flow as the map names it. */
export interface MapEndpoint {
  /** Stable id: `workload:ns/name`, `service:ns/name`, `dns:ns/kube-dns`, `world`, `world:fqdn`, `reserved:host`, `ip:addr`. */
  id: string;
  kind: MapNodeKind;
  name: string;
  namespace?: string;
  pod?: string;
  service?: string;
  identity?: number;
}

export interface PolicyCount {
  kind: string;
  namespace?: string;
  name: string;
  direction: 'ingress' | 'egress';
  flows: number;
}

export interface PortCount {
  protocol: string;
  port?: number;
  flows: number;
  dropped: number;
}

export interface L7Counts {
  requests: number;
  responses: number;
  /** HTTP responses by class: `2xx`, `4xx`, ... */
  http: Record<string, number>;
  dnsQueries: number;
  /** Responses with a latency, and the sum and maximum of those latencies. */
  latencySamples: number;
  latencyAvgMs?: number;
  latencyMaxMs?: number;
}

export interface MapNode {
  id: string;
  kind: MapNodeKind;
  name: string;
  namespace?: string;
  /** Pods seen (at most MAX_LIST), newest last. */
  pods: string[];
  services: string[];
  identities: number[];
  flowsIn: number;
  flowsOut: number;
  droppedIn: number;
  droppedOut: number;
}

export interface MapEdge {
  /** `<source id>-><target id>` */
  id: string;
  source: string;
  target: string;
  flows: number;
  forwarded: number;
  dropped: number;
  audit: number;
  error: number;
  ports: PortCount[];
  dropReasons: { reason: string; text: string; flows: number }[];
  allowedBy: PolicyCount[];
  deniedBy: PolicyCount[];
  l7?: L7Counts;
  lastVerdict: Verdict;
  firstTime?: string;
  lastTime?: string;
}

export interface ServiceMap {
  /** The namespace shown; '' for all. */
  namespace: string;
  nodes: MapNode[];
  edges: MapEdge[];
  totals: { flows: number; forwarded: number; dropped: number };
  /** Every namespace seen in flows, sorted. */
  namespaces: string[];
}

export interface ServiceMapLimits {
  maxEdges?: number;
}

const MAX_LIST = 16;
const DEFAULT_MAX_EDGES = 5000;

// ---------------------------------------------------------------- naming endpoints

const LABEL_NAMESPACE = 'k8s:io.kubernetes.pod.namespace=';
const APP_LABELS = ['k8s:app=', 'k8s:app.kubernetes.io/name=', 'k8s:k8s-app=', 'k8s:name='];
const DNS_LABEL = 'k8s:k8s-app=kube-dns';
const WORLD_IDENTITIES = new Set([2, 9, 10]);

function labelValue(labels: readonly string[] | undefined, prefix: string): string | undefined {
  return labels?.find((l) => l.startsWith(prefix))?.slice(prefix.length);
}

/** A pod's workload without Kubernetes' generated suffixes: `catalog-7d9f8b6c5-x2x9q` -> `catalog`. */
export function workloadFromPodName(pod: string): string {
  const deployment = /^(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$/.exec(pod);
  if (deployment) return deployment[1]!;
  const other = /^(.+)-(?:[a-z0-9]{5}|\d+)$/.exec(pod);
  return other ? other[1]! : pod;
}

function isDns(labels: readonly string[] | undefined, service: Service | undefined): boolean {
  return (labels?.includes(DNS_LABEL) ?? false) || service?.name === 'kube-dns';
}

/**
 * Names one side of a flow: a pod by its workload (cluster DNS pods as `kube-dns`), an
 * address that is only a Service by the Service, reserved identities by their names, the
 * world by the DNS name the flow carries if any, anything else by its address.
 */
export function mapEndpoint(f: Flow, side: 'source' | 'destination'): MapEndpoint {
  const ep: Endpoint = f[side] ?? {};
  const svc = side === 'source' ? f.source_service : f.destination_service;
  const names = side === 'source' ? f.source_names : f.destination_names;
  const ip = side === 'source' ? f.IP?.source : f.IP?.destination;
  const identity = ep.identity ?? 0;
  const service = svc?.name ? `${svc.namespace ? `${svc.namespace}/` : ''}${svc.name}` : undefined;
  const extra = {
    ...(ep.pod_name ? { pod: ep.pod_name } : {}),
    ...(service ? { service } : {}),
    ...(identity ? { identity } : {}),
  };
  const namespace = ep.namespace ?? labelValue(ep.labels, LABEL_NAMESPACE);

  if (ep.pod_name || (identity >= 256 && namespace)) {
    const ns = namespace ?? '';
    if (isDns(ep.labels, undefined))
      return { id: `dns:${ns}/kube-dns`, kind: 'dns', name: 'kube-dns', namespace: ns, ...extra };
    const name =
      ep.workloads?.[0]?.name ??
      APP_LABELS.map((p) => labelValue(ep.labels, p)).find((v) => v) ??
      (ep.pod_name ? workloadFromPodName(ep.pod_name) : `identity ${identity}`);
    return { id: `workload:${ns}/${name}`, kind: 'workload', name, namespace: ns, ...extra };
  }
  if (svc?.name) {
    const ns = svc.namespace ?? '';
    if (isDns(undefined, svc))
      return { id: `dns:${ns}/kube-dns`, kind: 'dns', name: 'kube-dns', namespace: ns, ...extra };
    return { id: `service:${ns}/${svc.name}`, kind: 'service', name: svc.name, namespace: ns, ...extra };
  }
  const labels = ep.labels ?? [];
  if (WORLD_IDENTITIES.has(identity) || labels.some((l) => l.startsWith('reserved:world'))) {
    const fqdn = names?.[0];
    return fqdn
      ? { id: `world:${fqdn}`, kind: 'world', name: fqdn, ...extra }
      : { id: 'world', kind: 'world', name: 'world', ...extra };
  }
  const reserved =
    identity > 0 && identity < 256
      ? RESERVED_IDENTITY_NAMES[identity]
      : labels.find((l) => l.startsWith('reserved:'))?.slice('reserved:'.length);
  if (reserved) return { id: `reserved:${reserved}`, kind: 'reserved', name: reserved, ...extra };
  if (names?.[0]) return { id: `world:${names[0]}`, kind: 'world', name: names[0], ...extra };
  const addr = ip ?? 'unknown';
  return { id: `ip:${addr}`, kind: 'unknown', name: addr, ...extra };
}

/** Whether a flow travels against its connection (a reply): edges point from client to server. */
export function isReplyFlow(f: Flow): boolean {
  return f.is_reply === true || f.l7?.type === 'RESPONSE';
}

/** The edge a flow counts on: from the connection's client to its server. */
export function flowEdge(f: Flow): { id: string; from: MapEndpoint; to: MapEndpoint } {
  const src = mapEndpoint(f, 'source');
  const dst = mapEndpoint(f, 'destination');
  const [from, to] = isReplyFlow(f) ? [dst, src] : [src, dst];
  return { id: edgeId(from.id, to.id), from, to };
}

export function edgeId(from: string, to: string): string {
  return `${from}->${to}`;
}

/** Whether a flow touches a namespace ('' matches every flow). */
export function inNamespace(f: Flow, namespace: string): boolean {
  if (namespace === '') return true;
  return (
    f.source?.namespace === namespace ||
    f.destination?.namespace === namespace ||
    f.source_service?.namespace === namespace ||
    f.destination_service?.namespace === namespace
  );
}

function protocolOf(f: Flow): string {
  const l4 = f.l4;
  if (!l4) return f.IP ? 'IP' : 'unknown';
  return Object.keys(l4)[0] ?? 'unknown';
}

// ---------------------------------------------------------------- aggregation

interface NodeAcc {
  node: MapNode;
  refs: number;
}

interface EdgeAcc {
  edge: MapEdge;
  /** Sum of L7 latencies in ns, for the average. */
  latencySumNs: number;
  latencyMaxNs: number;
  /** lastTime in ns, to compare without parsing it again. */
  lastNs: bigint;
}

function pushBounded<T>(list: T[], v: T, eq: (a: T) => boolean): void {
  const i = list.findIndex(eq);
  if (i >= 0) list.splice(i, 1);
  list.push(v);
  if (list.length > MAX_LIST) list.shift();
}

function countPolicies(
  into: PolicyCount[],
  policies: readonly Policy[] | undefined,
  direction: 'ingress' | 'egress',
): void {
  for (const p of policies ?? []) {
    if (!p.name) continue;
    const kind = p.kind ?? '';
    const have = into.find(
      (x) => x.name === p.name && x.kind === kind && x.namespace === p.namespace && x.direction === direction,
    );
    if (have) have.flows++;
    else if (into.length < MAX_LIST)
      into.push({
        kind,
        ...(p.namespace ? { namespace: p.namespace } : {}),
        name: p.name,
        direction,
        flows: 1,
      });
  }
}

/** Service-map counters, fed one flow at a time; `snapshot` returns plain data. */
export class ServiceMapBuilder {
  readonly #nodes = new Map<string, NodeAcc>();
  /** In least-recently-seen order: a seen edge moves to the end. */
  readonly #edges = new Map<string, EdgeAcc>();
  readonly #namespaces = new Set<string>();
  readonly #maxEdges: number;
  #generation = 0;

  constructor(limits: ServiceMapLimits = {}) {
    this.#maxEdges = Math.max(1, limits.maxEdges ?? DEFAULT_MAX_EDGES);
  }

  /** Changes with every flow added: a cheap "has anything changed" check. */
  get generation(): number {
    return this.#generation;
  }

  get size(): { nodes: number; edges: number } {
    return { nodes: this.#nodes.size, edges: this.#edges.size };
  }

  add(f: Flow): void {
    this.#generation++;
    for (const ns of [f.source?.namespace, f.destination?.namespace]) if (ns) this.#namespaces.add(ns);
    const { id, from, to } = flowEdge(f);
    let acc = this.#edges.get(id);
    if (acc) {
      this.#edges.delete(id);
    } else {
      acc = {
        edge: {
          id,
          source: from.id,
          target: to.id,
          flows: 0,
          forwarded: 0,
          dropped: 0,
          audit: 0,
          error: 0,
          ports: [],
          dropReasons: [],
          allowedBy: [],
          deniedBy: [],
          lastVerdict: 'VERDICT_UNKNOWN',
        },
        latencySumNs: 0,
        latencyMaxNs: 0,
        lastNs: -1n,
      };
      this.#ref(from);
      this.#ref(to);
    }
    this.#edges.set(id, acc);
    this.#count(acc, f, from, to);
    while (this.#edges.size > this.#maxEdges) this.#evictOldest();
  }

  #ref(e: MapEndpoint): void {
    const have = this.#nodes.get(e.id);
    if (have) {
      have.refs++;
      return;
    }
    this.#nodes.set(e.id, {
      refs: 1,
      node: {
        id: e.id,
        kind: e.kind,
        name: e.name,
        ...(e.namespace !== undefined ? { namespace: e.namespace } : {}),
        pods: [],
        services: [],
        identities: [],
        flowsIn: 0,
        flowsOut: 0,
        droppedIn: 0,
        droppedOut: 0,
      },
    });
  }

  #evictOldest(): void {
    const oldest = this.#edges.keys().next();
    if (oldest.done) return;
    const acc = this.#edges.get(oldest.value)!;
    this.#edges.delete(oldest.value);
    for (const id of new Set([acc.edge.source, acc.edge.target])) {
      const n = this.#nodes.get(id);
      if (!n) continue;
      n.refs -= acc.edge.source === acc.edge.target ? 2 : 1;
      if (n.refs <= 0) this.#nodes.delete(id);
    }
  }

  #count(acc: EdgeAcc, f: Flow, from: MapEndpoint, to: MapEndpoint): void {
    const e = acc.edge;
    const verdict = f.verdict ?? 'VERDICT_UNKNOWN';
    const dropped = verdict === 'DROPPED';
    e.flows++;
    switch (verdict) {
      case 'DROPPED':
        e.dropped++;
        break;
      case 'AUDIT':
        e.audit++;
        break;
      case 'ERROR':
        e.error++;
        break;
      default:
        e.forwarded++;
    }
    e.lastVerdict = verdict;
    if (f.time) {
      e.firstTime ??= f.time;
      const ns = parseTimestamp(f.time) ?? 0n;
      if (ns >= acc.lastNs) {
        acc.lastNs = ns;
        e.lastTime = f.time;
      }
    }

    const ports = flowPorts(f);
    const port = isReplyFlow(f) ? ports.source : ports.destination;
    const protocol = protocolOf(f);
    const pc = e.ports.find((p) => p.protocol === protocol && p.port === port);
    if (pc) {
      pc.flows++;
      if (dropped) pc.dropped++;
    } else if (e.ports.length < MAX_LIST) {
      e.ports.push({ protocol, ...(port ? { port } : {}), flows: 1, dropped: dropped ? 1 : 0 });
    }

    if (dropped) {
      const reason = f.drop_reason_desc ?? 'DROP_REASON_UNKNOWN';
      const dr = e.dropReasons.find((d) => d.reason === reason);
      if (dr) dr.flows++;
      else if (e.dropReasons.length < MAX_LIST)
        e.dropReasons.push({ reason, text: dropReasonText(f.drop_reason ?? 0), flows: 1 });
    }
    countPolicies(e.allowedBy, f.egress_allowed_by, 'egress');
    countPolicies(e.allowedBy, f.ingress_allowed_by, 'ingress');
    countPolicies(e.deniedBy, f.egress_denied_by, 'egress');
    countPolicies(e.deniedBy, f.ingress_denied_by, 'ingress');

    if (f.l7) this.#countL7(acc, f);

    const a = this.#nodes.get(from.id)?.node;
    const b = this.#nodes.get(to.id)?.node;
    if (a) {
      a.flowsOut++;
      if (dropped) a.droppedOut++;
      noteEndpoint(a, from);
    }
    if (b) {
      b.flowsIn++;
      if (dropped) b.droppedIn++;
      noteEndpoint(b, to);
    }
  }

  #countL7(acc: EdgeAcc, f: Flow): void {
    const l7 = f.l7!;
    acc.edge.l7 ??= { requests: 0, responses: 0, http: {}, dnsQueries: 0, latencySamples: 0 };
    const c = acc.edge.l7;
    if (l7.type === 'RESPONSE') {
      c.responses++;
      const code = l7.http?.code;
      if (code) {
        const cls = `${Math.floor(code / 100)}xx`;
        c.http[cls] = (c.http[cls] ?? 0) + 1;
      }
      const ns = Number(l7.latency_ns ?? 0);
      if (ns > 0) {
        c.latencySamples++;
        acc.latencySumNs += ns;
        acc.latencyMaxNs = Math.max(acc.latencyMaxNs, ns);
        c.latencyAvgMs = round(acc.latencySumNs / c.latencySamples / 1e6);
        c.latencyMaxMs = round(acc.latencyMaxNs / 1e6);
      }
    } else {
      c.requests++;
      if (l7.dns) c.dnsQueries++;
    }
  }

  /** The map of one namespace ('' for all): edges touching it and the nodes they join. */
  snapshot(namespace = ''): ServiceMap {
    const nodes = new Map<string, MapNode>();
    const edges: MapEdge[] = [];
    const totals = { flows: 0, forwarded: 0, dropped: 0 };
    for (const { edge } of this.#edges.values()) {
      const a = this.#nodes.get(edge.source)?.node;
      const b = this.#nodes.get(edge.target)?.node;
      if (!a || !b) continue;
      if (namespace !== '' && a.namespace !== namespace && b.namespace !== namespace) continue;
      edges.push(structuredClone(edge));
      nodes.set(a.id, a);
      nodes.set(b.id, b);
      totals.flows += edge.flows;
      totals.forwarded += edge.forwarded;
      totals.dropped += edge.dropped;
    }
    return {
      namespace,
      nodes: [...nodes.values()].map((n) => structuredClone(n)).sort((x, y) => cmp(x.id, y.id)),
      edges: edges.sort((x, y) => cmp(x.id, y.id)),
      totals,
      namespaces: [...this.#namespaces].sort(),
    };
  }
}

function noteEndpoint(n: MapNode, e: MapEndpoint): void {
  if (e.pod) pushBounded(n.pods, e.pod, (p) => p === e.pod);
  if (e.service) pushBounded(n.services, e.service, (s) => s === e.service);
  if (e.identity) pushBounded(n.identities, e.identity, (i) => i === e.identity);
}

const round = (x: number) => Math.round(x * 1000) / 1000;
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The service map of a set of flows: the pure form of ServiceMapBuilder. */
export function serviceMap(flows: Iterable<Flow>, namespace = '', limits?: ServiceMapLimits): ServiceMap {
  const b = new ServiceMapBuilder(limits);
  for (const f of flows) b.add(f);
  return b.snapshot(namespace);
}

// ---------------------------------------------------------------- flow table rows

/** A flow as the UI's table shows it, with the map ids it belongs to. */
export interface FlowRow {
  uuid: string;
  time: string;
  node: string;
  source: string;
  destination: string;
  sourceNode: string;
  destinationNode: string;
  edge: string;
  protocol: string;
  port?: number;
  verdict: Verdict;
  /** Hubble's TYPE column: `to-endpoint`, `policy-verdict:none EGRESS`, `Policy denied`, `http-request`... */
  type: string;
  reply: boolean;
  direction: string;
  dropReason?: string;
  /** "denied by NetworkPolicy production/default-deny-all (ingress)" and the like. */
  policy?: string;
  l7?: string;
  summary: string;
}

function policyNames(verb: string, list: readonly Policy[] | undefined, direction: string): string[] {
  return (list ?? [])
    .filter((p) => p.name)
    .map(
      (p) =>
        `${verb} by ${p.kind ?? 'policy'} ${p.namespace ? `${p.namespace}/` : ''}${p.name} (${direction})`,
    );
}

/** The policies that decided a flow, in words. */
export function policySummary(f: Flow): string | undefined {
  const parts = [
    ...policyNames('denied', f.ingress_denied_by, 'ingress'),
    ...policyNames('denied', f.egress_denied_by, 'egress'),
    ...policyNames('allowed', f.ingress_allowed_by, 'ingress'),
    ...policyNames('allowed', f.egress_allowed_by, 'egress'),
  ];
  return parts.length ? parts.join('; ') : undefined;
}

/** An L7 record in one line: `HTTP GET /path -> 200 (3.2 ms)`, `DNS A example.com.`. */
export function l7Summary(f: Flow): string | undefined {
  const l7 = f.l7;
  if (!l7) return undefined;
  const latency = Number(l7.latency_ns ?? 0);
  const ms = latency > 0 ? ` (${round(latency / 1e6)} ms)` : '';
  const type = l7.type === 'RESPONSE' ? 'response' : l7.type === 'REQUEST' ? 'request' : 'record';
  if (l7.http) {
    const h = l7.http;
    const code = h.code ? ` -> ${h.code}` : '';
    return `HTTP ${type} ${h.method ?? ''} ${h.url ?? ''}${code}${ms}`.replace(/\s+/g, ' ').trim();
  }
  if (l7.dns) {
    const d = l7.dns;
    const ips = d.ips?.length ? ` -> ${d.ips.join(',')}` : '';
    const rcode = l7.type === 'RESPONSE' && d.rcode ? ` rcode ${d.rcode}` : '';
    return `DNS ${type} ${(d.qtypes ?? []).join(',')} ${d.query ?? ''}${ips}${rcode}${ms}`
      .replace(/\s+/g, ' ')
      .trim();
  }
  if (l7.kafka) return `Kafka ${type} ${l7.kafka.api_key ?? ''} ${l7.kafka.topic ?? ''}${ms}`.trim();
  return `L7 ${type}${ms}`;
}

export function flowRow(f: Flow): FlowRow {
  const { id, from, to } = flowEdge(f);
  const [source, destination] = hostNames(f);
  const ports = flowPorts(f);
  const reply = isReplyFlow(f);
  const verdict = f.verdict ?? 'VERDICT_UNKNOWN';
  const policy = policySummary(f);
  const l7 = l7Summary(f);
  const port = reply ? ports.source : ports.destination;
  return {
    uuid: f.uuid ?? '',
    time: f.time ?? '',
    node: f.node_name ?? '',
    source,
    destination,
    sourceNode: reply ? to.id : from.id,
    destinationNode: reply ? from.id : to.id,
    edge: id,
    protocol: protocolOf(f),
    ...(port ? { port } : {}),
    verdict,
    type: flowType(f),
    reply,
    direction: f.traffic_direction ?? 'TRAFFIC_DIRECTION_UNKNOWN',
    ...(verdict === 'DROPPED'
      ? {
          dropReason: `${f.drop_reason_desc ?? 'DROP_REASON_UNKNOWN'}: ${dropReasonText(f.drop_reason ?? 0)}`,
        }
      : {}),
    ...(policy ? { policy } : {}),
    ...(l7 ? { l7 } : {}),
    summary: f.Summary ?? '',
  };
}
