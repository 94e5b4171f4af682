/**
 * Datapath events to Hubble flows. The event gives identities, the observation point,
 * the verdict, the drop reason, the rule's cookie and the packet's first bytes; an
 * enrichment (the agent's view of endpoints, identities, services, policies and links)
 * names what those numbers stand for. Field by field this follows Hubble's L3/L4 parser,
 * so the upstream CLI and UI read our flows as they read Cilium's.
 */
import { CtState, DIR_EGRESS, EventType, EventVerdict } from '../datapath/constants.js';
import type { DatapathEvent } from '../datapath/datapath.js';
import {
  DROP_REASONS,
  type DropReason,
  type Emitter,
  type Endpoint,
  enumName,
  type Flow,
  formatTimestamp,
  MessageType,
  type Policy,
  RESERVED_IDENTITY_NAMES,
  type Service,
  TRACE_OBSERVATION_POINTS,
  type TraceReason,
  type TrafficDirection,
  type Verdict,
  type Workload,
} from './flow.js';
import { dnsSummary, fqdn, httpSummary, type L7Event } from './l7.js';
import { decodePacket } from './packet.js';

/** What the agent knows about an endpoint (a local pod) or a remote address. */
export interface EndpointInfo {
  /** Local endpoint ID; absent for remote addresses. */
  id?: number;
  identity?: number;
  clusterName?: string;
  namespace?: string;
  podName?: string;
  /** `source:key=value` strings, e.g. `k8s:app=frontend` (see `labelStrings`). */
  labels?: readonly string[];
  workloads?: readonly Workload[];
}

/** A policy as flows name it (kind, namespace, name), with its UID and the repository revision. */
export interface PolicyRef {
  kind: string;
  name: string;
  namespace?: string;
  uid?: string;
  revision?: number | bigint;
}

/** The rule a datapath cookie stands for. */
export interface PolicyRuleInfo extends PolicyRef {
  /** Tells a deny from an authentication drop when the datapath reports only "dropped". */
  verdict?: 'allow' | 'deny' | 'redirect' | 'auth';
}

export type PolicyDirection = 'ingress' | 'egress';

export interface PolicyMatchQuery {
  endpoint: number;
  direction: PolicyDirection;
  remoteIdentity: number;
  protocol: number;
  port: number;
}

/**
 * Lookups the builder makes; each is optional and may return undefined. They are called
 * for every event, so they must be cheap (maps kept up to date by the agent).
 */
export interface FlowEnrichment {
  endpointById?(id: number): EndpointInfo | undefined;
  endpointByIp?(ip: string): EndpointInfo | undefined;
  identityLabels?(identity: number): readonly string[] | undefined;
  serviceByAddr?(ip: string, port: number): Service | undefined;
  /** DNS names endpoint `endpoint` learned for `ip` (source_names/destination_names). */
  namesOf?(endpoint: number, ip: string): readonly string[] | undefined;
  policyRule?(cookie: number): PolicyRuleInfo | undefined;
  /** Policies selecting the endpoint in a direction: named by a default deny. */
  selectingPolicies?(endpoint: number, direction: PolicyDirection): readonly PolicyRef[];
  /** Cilium's policy match type of the entry that decided (PolicyMatchType). */
  policyMatchType?(q: PolicyMatchQuery): number | undefined;
  interfaceName?(ifindex: number): string | undefined;
}

export interface FlowBuilderOptions {
  nodeName: string;
  nodeLabels?: readonly string[];
  enrichment?: FlowEnrichment;
  /**
   * Wall-clock nanoseconds at monotonic time zero: event timestamps are CLOCK_MONOTONIC
   * (bpf_ktime_get_ns), like process.hrtime. Measured at construction when absent.
   */
  bootTimeNs?: bigint;
  /** Flow UUIDs; crypto.randomUUID when absent. */
  uuid?: () => string;
  emitter?: Emitter;
}

/** Labels as Hubble prints them: `source:key=value`, or `source:key` for an empty value; sorted. */
export function labelStrings(labels: Readonly<Record<string, string>>, source = 'k8s'): string[] {
  return Object.entries(labels)
    .map(([k, v]) => {
      const key = /^[a-z0-9-]+:/.test(k) ? k : `${source}:${k}`;
      return v === '' ? key : `${key}=${v}`;
    })
    .sort();
}

const RESERVED_LABELS: Record<number, string[]> = {
  1: ['reserved:host'],
  2: ['reserved:world'],
  3: ['reserved:unmanaged'],
  4: ['reserved:health'],
  5: ['reserved:init'],
  6: ['reserved:remote-node'],
  7: ['reserved:kube-apiserver', 'reserved:remote-node'],
  8: ['reserved:ingress'],
  9: ['reserved:world-ipv4'],
  10: ['reserved:world-ipv6'],
};

const CLUSTER_LABEL = 'k8s:io.cilium.k8s.policy.cluster=';
const POLICY_LABEL = 'k8s:io.cilium.k8s.policy.';
const DROP_DENIED = DROP_REASONS.POLICY_DENIED;

const TRACE_REASONS: Record<number, TraceReason> = {
  [CtState.New]: 'NEW',
  [CtState.Established]: 'ESTABLISHED',
  [CtState.Reply]: 'REPLY',
  [CtState.Related]: 'RELATED',
};

/** A flow's Policy message: Cilium's policy labels carry the same names. */
export function policyOf(p: PolicyRef): Policy {
  const labels = [`${POLICY_LABEL}derived-from=${p.kind}`, `${POLICY_LABEL}name=${p.name}`];
  if (p.namespace) labels.push(`${POLICY_LABEL}namespace=${p.namespace}`);
  if (p.uid) labels.push(`${POLICY_LABEL}uid=${p.uid}`);
  return {
    name: p.name,
    ...(p.namespace ? { namespace: p.namespace } : {}),
    labels,
    ...(p.revision ? { revision: String(p.revision) } : {}),
    kind: p.kind,
  };
}

/** An L7 event's time (ms since the epoch, a double) in ns; a double holds it to about 0.25 µs: whole microseconds. */
export function l7TimeNs(ms: number): bigint {
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1000)) * 1000n;
}

export class FlowBuilder {
  readonly nodeName: string;
  readonly #nodeLabels: readonly string[];
  readonly #e: FlowEnrichment;
  readonly #bootTimeNs: bigint;
  readonly #uuid: () => string;
  /** allowed_by/denied_by lists of L7 flows by policy (shared: flows are not modified once built). */
  readonly #l7Policies = new Map<string, Policy[]>();
  readonly #emitter: Emitter | undefined;
  /** Endpoint messages by the enrichment's object for them, then identity. */
  readonly #endpoints = new WeakMap<object, Map<number, Endpoint>>();
  readonly #policyLists = new WeakMap<object, Policy[]>();

  constructor(o: FlowBuilderOptions) {
    this.nodeName = o.nodeName;
    this.#nodeLabels = o.nodeLabels ?? [];
    this.#e = o.enrichment ?? {};
    this.#bootTimeNs = o.bootTimeNs ?? BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    this.#uuid = o.uuid ?? (() => crypto.randomUUID());
    this.#emitter = o.emitter;
  }

  /** Wall-clock nanoseconds of a datapath timestamp. */
  wallTimeNs(tsNs: bigint): bigint {
    return this.#bootTimeNs + tsNs;
  }

  build(ev: DatapathEvent): Flow {
    const e = this.#e;
    const pkt = decodePacket(ev.packet);
    const hookEgress = ev.direction === DIR_EGRESS;
    const hookDirection: PolicyDirection = hookEgress ? 'egress' : 'ingress';
    const srcIp = pkt.IP?.source;
    const dstIp = pkt.IP?.destination;

    // The endpoint whose program saw the packet is its source on egress, its destination on ingress.
    const local = ev.source !== 0 ? e.endpointById?.(ev.source) : undefined;
    const source = this.#endpoint(srcIp, ev.src_identity, hookEgress ? local : undefined);
    const destination = this.#endpoint(dstIp, ev.dst_identity, hookEgress ? undefined : local);

    const isTrace = ev.type === EventType.Trace;
    const isVerdict = ev.type === EventType.PolicyVerdict;
    const rule = ev.cookie !== 0 ? e.policyRule?.(ev.cookie) : undefined;

    let verdict: Verdict = 'VERDICT_UNKNOWN';
    let dropReason = 0;
    if (ev.type === EventType.Drop) {
      verdict = 'DROPPED';
      dropReason = ev.subtype;
    } else if (isTrace) {
      verdict = 'FORWARDED';
    } else if (isVerdict) {
      if (ev.verdict === EventVerdict.Dropped) {
        verdict = 'DROPPED';
        dropReason = policyDropReason(ev, rule);
      } else {
        verdict = ev.verdict === EventVerdict.Redirected ? 'REDIRECTED' : 'FORWARDED';
      }
    }
    const dropReasonDesc = dropReason ? enumName(DROP_REASONS, dropReason) : undefined;

    const reply = ev.ct_state === CtState.Reply;
    let isReply: boolean | undefined;
    if (isTrace) isReply = reply;
    else if (isVerdict && verdict !== 'DROPPED') isReply = false;

    // Trace events describe the connection: a reply leaving an endpoint is ingress traffic.
    let direction: TrafficDirection = 'TRAFFIC_DIRECTION_UNKNOWN';
    if (isVerdict || (ev.type === EventType.Drop && ev.source !== 0)) {
      direction = hookEgress ? 'EGRESS' : 'INGRESS';
    } else if (isTrace && ev.source !== 0) {
      direction = hookEgress !== reply ? 'EGRESS' : 'INGRESS';
    }

    const sourceService =
      srcIp && pkt.sourcePort !== undefined ? e.serviceByAddr?.(srcIp, pkt.sourcePort) : undefined;
    const destinationService =
      dstIp && pkt.destinationPort !== undefined ? e.serviceByAddr?.(dstIp, pkt.destinationPort) : undefined;
    const sourceNames = srcIp ? e.namesOf?.(destination.ID ?? 0, srcIp) : undefined;
    const destinationNames = dstIp ? e.namesOf?.(source.ID ?? 0, dstIp) : undefined;

    // Only a matching entry has a match type: no cookie is Cilium's "none".
    let matchType: number | undefined;
    if (isVerdict && ev.source !== 0 && ev.cookie !== 0) {
      matchType = e.policyMatchType?.({
        endpoint: ev.source,
        direction: hookDirection,
        remoteIdentity: hookEgress ? ev.dst_identity : ev.src_identity,
        protocol: pkt.protocol ?? 0,
        port: pkt.destinationPort ?? icmpType(pkt.l4) ?? 0,
      });
    }

    const f: Flow = {};
    f.time = formatTimestamp(this.wallTimeNs(ev.ts_ns));
    f.uuid = this.#uuid();
    if (this.#emitter) f.emitter = this.#emitter;
    f.verdict = verdict;
    if (dropReason) f.drop_reason = dropReason;
    if (isVerdict && rule?.verdict === 'auth') f.auth_type = 'SPIRE';
    if (pkt.ethernet) f.ethernet = pkt.ethernet;
    if (pkt.IP) f.IP = pkt.IP;
    if (pkt.l4) f.l4 = pkt.l4;
    f.source = source;
    f.destination = destination;
    f.Type = 'L3_L4';
    if (this.nodeName) f.node_name = this.nodeName;
    if (this.#nodeLabels.length) f.node_labels = this.#nodeLabels as string[];
    if (sourceNames?.length) f.source_names = [...sourceNames];
    if (destinationNames?.length) f.destination_names = [...destinationNames];
    if (isReply) f.reply = true;
    f.event_type = ev.subtype ? { type: ev.type, sub_type: ev.subtype } : { type: ev.type };
    if (sourceService) f.source_service = sourceService;
    if (destinationService) f.destination_service = destinationService;
    if (direction !== 'TRAFFIC_DIRECTION_UNKNOWN') f.traffic_direction = direction;
    if (matchType) f.policy_match_type = matchType;
    if (isTrace) {
      f.trace_observation_point =
        ev.subtype === 0
          ? 'TO_ENDPOINT'
          : (enumName(TRACE_OBSERVATION_POINTS, ev.subtype) ?? 'UNKNOWN_POINT');
      const reason = TRACE_REASONS[ev.ct_state];
      if (reason) f.trace_reason = reason;
    }
    if (dropReasonDesc) f.drop_reason_desc = dropReasonDesc;
    if (isReply !== undefined) f.is_reply = isReply;
    if (isTrace && ev.ifindex !== 0) {
      const name = e.interfaceName?.(ev.ifindex);
      f.interface = { index: ev.ifindex, ...(name ? { name } : {}) };
    }
    if (isTrace && ev.subtype === 1 && ev.proxy_port) f.proxy_port = ev.proxy_port;
    f.Summary = pkt.summary;
    this.#policies(f, ev, hookDirection, verdict, dropReasonDesc, rule);
    return f;
  }

  /**
   * A proxy's L7 event as Hubble's L7 parser makes a flow of an access-log record: Type L7,
   * event_type 129, `l7` with the record, is_reply for responses, the endpoints named as
   * on L3/L4 flows, and the policy that decided in allowed_by/denied_by. Call
   * `validateL7Event` first; past it the event is trusted.
   */
  buildL7(
    ev: L7Event,
    c: L7Capture = this.captureL7(
      ev.endpointId,
      ev.trafficDirection === 'EGRESS',
      ev.type === 'request',
      ev.source,
      ev.destination,
    ),
  ): Flow {
    const egress = ev.trafficDirection === 'EGRESS';
    const { source, destination } = c;
    const ports = {
      ...(ev.source.port ? { source_port: ev.source.port } : {}),
      ...(ev.destination.port ? { destination_port: ev.destination.port } : {}),
    };
    const isResponse = ev.type === 'response';
    const latency = isResponse && ev.latencyNs ? Math.round(ev.latencyNs) : 0;

    const f: Flow = {};
    f.time = formatTimestamp(l7TimeNs(ev.time));
    f.uuid = this.#uuid();
    if (this.#emitter) f.emitter = this.#emitter;
    f.verdict = ev.verdict;
    f.IP = {
      source: ev.source.ip,
      destination: ev.destination.ip,
      ipVersion: ev.source.ip.includes(':') ? 'IPv6' : 'IPv4',
    };
    f.l4 = ev.kind === 'http' ? { TCP: ports } : { UDP: ports };
    f.source = source;
    f.destination = destination;
    f.Type = 'L7';
    if (this.nodeName) f.node_name = this.nodeName;
    if (this.#nodeLabels.length) f.node_labels = this.#nodeLabels as string[];
    if (c.sourceNames?.length) f.source_names = [...c.sourceNames];
    if (c.destinationNames?.length) f.destination_names = [...c.destinationNames];
    f.l7 = {
      type: isResponse ? 'RESPONSE' : 'REQUEST',
      ...(latency ? { latency_ns: String(latency) } : {}),
    };
    let summary = '';
    if (ev.kind === 'http' && ev.http) {
      const h = ev.http;
      // Hubble leaves a request's status out: it has none yet.
      f.l7.http = {
        ...(isResponse && h.code ? { code: h.code } : {}),
        method: h.method,
        url: h.url,
        protocol: h.protocol,
        ...(h.headers.length ? { headers: h.headers } : {}),
      };
      summary = httpSummary(ev.type, h, latency);
    } else if (ev.kind === 'dns' && ev.dns) {
      const d = ev.dns;
      f.l7.dns = isResponse
        ? {
            query: fqdn(d.query),
            ...(d.ips.length ? { ips: [...d.ips] } : {}),
            ...(d.ttl ? { ttl: d.ttl } : {}),
            observation_source: 'proxy',
            ...(d.rcode ? { rcode: d.rcode } : {}),
            ...(d.qtypes.length ? { qtypes: [...d.qtypes] } : {}),
            ...(d.rrtypes.length ? { rrtypes: [...d.rrtypes] } : {}),
          }
        : {
            query: fqdn(d.query),
            observation_source: 'proxy',
            ...(d.qtypes.length ? { qtypes: [...d.qtypes] } : {}),
          };
      summary = dnsSummary(ev.type, d);
    }
    if (isResponse) f.reply = true;
    f.event_type = { type: MessageType.AccessLog };
    if (c.sourceService) f.source_service = c.sourceService;
    if (c.destinationService) f.destination_service = c.destinationService;
    f.traffic_direction = ev.trafficDirection;
    f.is_reply = isResponse;
    // A message the proxy could not read has no record to summarize: the reason stands in.
    if (ev.verdict === 'ERROR' && ev.reason) summary = summary ? `${summary}; ${ev.reason}` : ev.reason;
    f.Summary = summary;
    // An error is neither allowed nor denied by the policy: it names none.
    if (ev.policy && ev.verdict !== 'ERROR') {
      const dir: PolicyDirection = egress ? 'egress' : 'ingress';
      const id = `${ev.policy.kind}/${ev.policy.namespace}/${ev.policy.name}`;
      let list = this.#l7Policies.get(id);
      if (!list) {
        const ref: PolicyRef = {
          kind: ev.policy.kind,
          name: ev.policy.name,
          ...(ev.policy.namespace ? { namespace: ev.policy.namespace } : {}),
        };
        list = [policyOf(ref)];
        if (this.#l7Policies.size >= 1024) this.#l7Policies.clear();
        this.#l7Policies.set(id, list);
      }
      const key = ev.verdict === 'FORWARDED' ? (`${dir}_allowed_by` as const) : (`${dir}_denied_by` as const);
      f[key] = list;
    }
    return f;
  }

  /**
   * What an L7 flow takes from the enrichment, looked up when the event comes (so that a
   * flow built later names what was there then): the endpoints of both sides (shared
   * messages, no copies), their DNS names and services.
   */
  captureL7(
    endpointId: number,
    egress: boolean,
    isRequest: boolean,
    src: { ip: string; port: number; identity: number },
    dst: { ip: string; port: number; identity: number },
  ): L7Capture {
    const e = this.#e;
    // The local endpoint sent the request on egress and received it on ingress; a response
    // travels the other way.
    const localIsSource = egress === isRequest;
    const local = endpointId ? e.endpointById?.(endpointId) : undefined;
    const source = this.#endpoint(src.ip, src.identity, localIsSource ? local : undefined);
    const destination = this.#endpoint(dst.ip, dst.identity, localIsSource ? undefined : local);
    const c: L7Capture = { source, destination };
    const sourceNames = e.namesOf?.(destination.ID ?? 0, src.ip);
    const destinationNames = e.namesOf?.(source.ID ?? 0, dst.ip);
    const sourceService = e.serviceByAddr?.(src.ip, src.port);
    const destinationService = e.serviceByAddr?.(dst.ip, dst.port);
    if (sourceNames?.length) c.sourceNames = sourceNames;
    if (destinationNames?.length) c.destinationNames = destinationNames;
    if (sourceService) c.sourceService = sourceService;
    if (destinationService) c.destinationService = destinationService;
    return c;
  }

  /**
   * The Endpoint message of one side. Endpoints repeat from flow to flow, so the message
   * is made once per (what is known of it, identity) and shared by the flows that name
   * it: flows are not modified once built.
   */
  #endpoint(ip: string | undefined, datapathIdentity: number, known: EndpointInfo | undefined): Endpoint {
    const e = this.#e;
    const info = known ?? (ip ? e.endpointByIp?.(ip) : undefined);
    const identity = datapathIdentity || info?.identity || 0;
    const labels = info?.labels ?? e.identityLabels?.(identity) ?? RESERVED_LABELS[identity] ?? NO_LABELS;
    // Keyed by the object the enrichment returned: a new one (a changed pod) makes a new message.
    const owner: object = info ?? labels;
    let byIdentity = this.#endpoints.get(owner);
    if (!byIdentity) {
      byIdentity = new Map();
      this.#endpoints.set(owner, byIdentity);
    }
    let ep = byIdentity.get(identity);
    if (!ep) {
      ep = makeEndpoint(info, identity, labels);
      byIdentity.set(identity, ep);
    }
    return ep;
  }

  /**
   * The policies that decided: the allowing rule on a policy verdict, the deny rule on a
   * deny, and on a default deny (no rule matched) every policy that selects the endpoint
   * in that direction, since one of them made the direction default-deny.
   */
  #policies(
    f: Flow,
    ev: DatapathEvent,
    direction: PolicyDirection,
    verdict: Verdict,
    reason: DropReason | undefined,
    rule: PolicyRuleInfo | undefined,
  ): void {
    const isVerdict = ev.type === EventType.PolicyVerdict;
    if (isVerdict && (verdict === 'FORWARDED' || verdict === 'REDIRECTED')) {
      if (rule) f[`${direction}_allowed_by`] = this.#policyList(rule);
      return;
    }
    if (verdict !== 'DROPPED' || !(isVerdict || ev.type === EventType.Drop)) return;
    if (reason === 'POLICY_DENIED' && ev.source !== 0) {
      const refs = this.#e.selectingPolicies?.(ev.source, direction);
      if (refs?.length) f[`${direction}_denied_by`] = this.#policyList(refs);
    } else if ((reason === 'POLICY_DENY' || reason === 'AUTH_REQUIRED') && rule) {
      f[`${direction}_denied_by`] = this.#policyList(rule);
    }
  }

  /** Policy messages for a rule or a list of them, made once per object the enrichment returned. */
  #policyList(refs: PolicyRef | readonly PolicyRef[]): Policy[] {
    let list = this.#policyLists.get(refs);
    if (!list) {
      list = Array.isArray(refs) ? refs.map(policyOf) : [policyOf(refs as PolicyRef)];
      this.#policyLists.set(refs, list);
    }
    return list;
  }
}

const NO_LABELS: readonly string[] = [];

/** The enrichment of one L7 flow (FlowBuilder.captureL7). */
export interface L7Capture {
  source: Endpoint;
  destination: Endpoint;
  sourceNames?: readonly string[];
  destinationNames?: readonly string[];
  sourceService?: Service;
  destinationService?: Service;
}

function makeEndpoint(info: EndpointInfo | undefined, identity: number, labels: readonly string[]): Endpoint {
  const cluster =
    info?.clusterName ?? labels.find((l) => l.startsWith(CLUSTER_LABEL))?.slice(CLUSTER_LABEL.length);
  const ep: Endpoint = {};
  if (info?.id) ep.ID = info.id;
  if (identity) ep.identity = identity;
  if (cluster) ep.cluster_name = cluster;
  if (info?.namespace) ep.namespace = info.namespace;
  if (labels.length) ep.labels = [...labels].sort();
  if (info?.podName) ep.pod_name = info.podName;
  if (info?.workloads?.length) ep.workloads = info.workloads.map((w) => ({ ...w }));
  return ep;
}

/**
 * A policy verdict record says only "dropped": no matching entry is a default deny; a
 * matching entry either denies or requires authentication, which its rule tells.
 */
function policyDropReason(ev: DatapathEvent, rule: PolicyRuleInfo | undefined): number {
  if (ev.subtype >= 130) return ev.subtype;
  if (ev.cookie === 0) return DROP_DENIED;
  return rule?.verdict === 'auth' ? DROP_REASONS.AUTH_REQUIRED : DROP_REASONS.POLICY_DENY;
}

function icmpType(l4: Flow['l4']): number | undefined {
  if (!l4) return undefined;
  if ('ICMPv4' in l4) return l4.ICMPv4.type ?? 0;
  if ('ICMPv6' in l4) return l4.ICMPv6.type ?? 0;
  return undefined;
}

/** The name Hubble prints for an identity: `(world)` for reserved ones, `(ID:1234)` otherwise. */
export function identityTag(identity: number): string {
  const r = RESERVED_IDENTITY_NAMES[identity];
  return r ? `(${r})` : `(ID:${identity})`;
}
