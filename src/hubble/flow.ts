/**
 * Hubble's flow, in the shape of its JSON (flow.proto through protojson with proto field
 * names): the object `hubble observe -o json` prints under "flow", with the same keys,
 * enum names and omissions. Objects made by the FlowBuilder serialize to Hubble's JSON
 * with JSON.stringify; `schema.ts` canonicalizes any other (order, defaults, uint64s).
 */

// ---------------------------------------------------------------- enums (flow.proto numbers)

export const VERDICTS = {
  VERDICT_UNKNOWN: 0,
  FORWARDED: 1,
  DROPPED: 2,
  ERROR: 3,
  AUDIT: 4,
  REDIRECTED: 5,
  TRACED: 6,
  TRANSLATED: 7,
} as const;
export type Verdict = keyof typeof VERDICTS;

/** flow.proto's DropReason: Cilium's drop codes (bpf/lib/common.h), never renumbered. */
export const DROP_REASONS = {
  DROP_REASON_UNKNOWN: 0,
  INVALID_SOURCE_MAC: 130,
  INVALID_DESTINATION_MAC: 131,
  INVALID_SOURCE_IP: 132,
  POLICY_DENIED: 133,
  INVALID_PACKET_DROPPED: 134,
  CT_TRUNCATED_OR_INVALID_HEADER: 135,
  CT_MISSING_TCP_ACK_FLAG: 136,
  CT_UNKNOWN_L4_PROTOCOL: 137,
  CT_CANNOT_CREATE_ENTRY_FROM_PACKET: 138,
  UNSUPPORTED_L3_PROTOCOL: 139,
  MISSED_TAIL_CALL: 140,
  ERROR_WRITING_TO_PACKET: 141,
  UNKNOWN_L4_PROTOCOL: 142,
  UNKNOWN_ICMPV4_CODE: 143,
  UNKNOWN_ICMPV4_TYPE: 144,
  UNKNOWN_ICMPV6_CODE: 145,
  UNKNOWN_ICMPV6_TYPE: 146,
  ERROR_RETRIEVING_TUNNEL_KEY: 147,
  ERROR_RETRIEVING_TUNNEL_OPTIONS: 148,
  INVALID_GENEVE_OPTION: 149,
  UNKNOWN_L3_TARGET_ADDRESS: 150,
  STALE_OR_UNROUTABLE_IP: 151,
  NO_MATCHING_LOCAL_CONTAINER_FOUND: 152,
  ERROR_WHILE_CORRECTING_L3_CHECKSUM: 153,
  ERROR_WHILE_CORRECTING_L4_CHECKSUM: 154,
  CT_MAP_INSERTION_FAILED: 155,
  INVALID_IPV6_EXTENSION_HEADER: 156,
  IP_FRAGMENTATION_NOT_SUPPORTED: 157,
  SERVICE_BACKEND_NOT_FOUND: 158,
  NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT: 160,
  FAILED_TO_INSERT_INTO_PROXYMAP: 161,
  REACHED_EDT_RATE_LIMITING_DROP_HORIZON: 162,
  UNKNOWN_CONNECTION_TRACKING_STATE: 163,
  LOCAL_HOST_IS_UNREACHABLE: 164,
  NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION: 165,
  UNSUPPORTED_L2_PROTOCOL: 166,
  NO_MAPPING_FOR_NAT_MASQUERADE: 167,
  UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE: 168,
  FIB_LOOKUP_FAILED: 169,
  ENCAPSULATION_TRAFFIC_IS_PROHIBITED: 170,
  INVALID_IDENTITY: 171,
  UNKNOWN_SENDER: 172,
  NAT_NOT_NEEDED: 173,
  IS_A_CLUSTERIP: 174,
  FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND: 175,
  FORBIDDEN_ICMPV6_MESSAGE: 176,
  DENIED_BY_LB_SRC_RANGE_CHECK: 177,
  SOCKET_LOOKUP_FAILED: 178,
  SOCKET_ASSIGN_FAILED: 179,
  PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL: 180,
  POLICY_DENY: 181,
  VLAN_FILTERED: 182,
  INVALID_VNI: 183,
  INVALID_TC_BUFFER: 184,
  NO_SID: 185,
  MISSING_SRV6_STATE: 186,
  NAT46: 187,
  NAT64: 188,
  AUTH_REQUIRED: 189,
  CT_NO_MAP_FOUND: 190,
  SNAT_NO_MAP_FOUND: 191,
  INVALID_CLUSTER_ID: 192,
  UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP: 193,
  NO_EGRESS_GATEWAY: 194,
  UNENCRYPTED_TRAFFIC: 195,
  TTL_EXCEEDED: 196,
  NO_NODE_ID: 197,
  DROP_RATE_LIMITED: 198,
  IGMP_HANDLED: 199,
  IGMP_SUBSCRIBED: 200,
  MULTICAST_HANDLED: 201,
  DROP_HOST_NOT_READY: 202,
  DROP_EP_NOT_READY: 203,
  DROP_NO_EGRESS_IP: 204,
  DROP_PUNT_PROXY: 205,
} as const;
export type DropReason = keyof typeof DROP_REASONS;

/** Cilium's observation point numbers, except that 0 (to-endpoint) is 101 here. */
export const TRACE_OBSERVATION_POINTS = {
  UNKNOWN_POINT: 0,
  TO_PROXY: 1,
  TO_HOST: 2,
  TO_STACK: 3,
  TO_OVERLAY: 4,
  TO_ENDPOINT: 101,
  FROM_ENDPOINT: 5,
  FROM_PROXY: 6,
  FROM_HOST: 7,
  FROM_STACK: 8,
  FROM_OVERLAY: 9,
  FROM_NETWORK: 10,
  TO_NETWORK: 11,
  FROM_CRYPTO: 12,
  TO_CRYPTO: 13,
} as const;
export type TraceObservationPoint = keyof typeof TRACE_OBSERVATION_POINTS;

export const TRACE_REASONS = {
  TRACE_REASON_UNKNOWN: 0,
  NEW: 1,
  ESTABLISHED: 2,
  REPLY: 3,
  RELATED: 4,
  REOPENED: 5,
  SRV6_ENCAP: 6,
  SRV6_DECAP: 7,
  ENCRYPT_OVERLAY: 8,
} as const;
export type TraceReason = keyof typeof TRACE_REASONS;

export const TRAFFIC_DIRECTIONS = { TRAFFIC_DIRECTION_UNKNOWN: 0, INGRESS: 1, EGRESS: 2 } as const;
export type TrafficDirection = keyof typeof TRAFFIC_DIRECTIONS;

export const IP_VERSIONS = { IP_NOT_USED: 0, IPv4: 1, IPv6: 2 } as const;
export type IPVersion = keyof typeof IP_VERSIONS;

export const FLOW_TYPES = { UNKNOWN_TYPE: 0, L3_L4: 1, L7: 2, SOCK: 3 } as const;
export type FlowType = keyof typeof FLOW_TYPES;

export const AUTH_TYPES = { DISABLED: 0, SPIRE: 1, TEST_ALWAYS_FAIL: 2 } as const;
export type AuthType = keyof typeof AUTH_TYPES;

export const L7_FLOW_TYPES = { UNKNOWN_L7_TYPE: 0, REQUEST: 1, RESPONSE: 2, SAMPLE: 3 } as const;
export type L7FlowType = keyof typeof L7_FLOW_TYPES;

export const LOST_EVENT_SOURCES = {
  UNKNOWN_LOST_EVENT_SOURCE: 0,
  PERF_EVENT_RING_BUFFER: 1,
  OBSERVER_EVENTS_QUEUE: 2,
  HUBBLE_RING_BUFFER: 3,
} as const;
export type LostEventSource = keyof typeof LOST_EVENT_SOURCES;

/** Monitor message types (Cilium's pkg/monitor/api), as `event_type.type` carries them. */
export const MessageType = {
  Drop: 1,
  Debug: 2,
  Capture: 3,
  Trace: 4,
  PolicyVerdict: 5,
  TraceSock: 7,
  AccessLog: 129,
  Agent: 130,
} as const;

export const MESSAGE_TYPE_NAMES: Record<string, number> = {
  drop: MessageType.Drop,
  debug: MessageType.Debug,
  capture: MessageType.Capture,
  trace: MessageType.Trace,
  'policy-verdict': MessageType.PolicyVerdict,
  'trace-sock': MessageType.TraceSock,
  l7: MessageType.AccessLog,
  agent: MessageType.Agent,
};

/** Cilium's trace observation point numbers and their monitor names (event_type.sub_type). */
export const TRACE_POINT_NAMES: Record<number, string> = {
  0: 'to-endpoint',
  1: 'to-proxy',
  2: 'to-host',
  3: 'to-stack',
  4: 'to-overlay',
  5: 'from-endpoint',
  6: 'from-proxy',
  7: 'from-host',
  8: 'from-stack',
  9: 'from-overlay',
  10: 'from-network',
  11: 'to-network',
  12: 'from-crypto',
  13: 'to-crypto',
};

/** Policy verdict match types (Cilium's monitor API), as `policy_match_type` carries them. */
export const PolicyMatchType = {
  None: 0,
  L3Only: 1,
  L3L4: 2,
  L4Only: 3,
  All: 4,
  L3Proto: 5,
  ProtoOnly: 6,
} as const;

const MATCH_TYPE_NAMES = ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all', 'L3-Proto', 'Proto-Only'];

export function policyMatchTypeName(m: number): string {
  return MATCH_TYPE_NAMES[m] ?? 'unknown';
}

/** Reserved identities and the names Cilium prints for them. */
export const RESERVED_IDENTITY_NAMES: Record<number, string> = {
  0: 'unknown',
  1: 'host',
  2: 'world',
  3: 'unmanaged',
  4: 'health',
  5: 'init',
  6: 'remote-node',
  7: 'kube-apiserver',
  8: 'ingress',
  9: 'world-ipv4',
  10: 'world-ipv6',
};

/** The name of an enum value, for numbers read off the wire or the datapath. */
export function enumName<E extends Record<string, number>>(e: E, n: number): keyof E | undefined {
  for (const k in e) if (e[k] === n) return k;
  return undefined;
}

// ---------------------------------------------------------------- messages

export interface Ethernet {
  source?: string;
  destination?: string;
}

export interface IP {
  source?: string;
  source_xlated?: string;
  destination?: string;
  ipVersion?: IPVersion;
  encrypted?: boolean;
}

export interface TCPFlags {
  FIN?: boolean;
  SYN?: boolean;
  RST?: boolean;
  PSH?: boolean;
  ACK?: boolean;
  URG?: boolean;
  ECE?: boolean;
  CWR?: boolean;
  NS?: boolean;
}

export interface Ports {
  source_port?: number;
  destination_port?: number;
}

export interface TCP extends Ports {
  flags?: TCPFlags;
}

export interface ICMP {
  type?: number;
  code?: number;
}

/** A oneof: exactly one key is present. */
export type Layer4 =
  | { TCP: TCP }
  | { UDP: Ports }
  | { ICMPv4: ICMP }
  | { ICMPv6: ICMP }
  | { SCTP: Ports }
  | { VRRP: { type?: number; vrid?: number; priority?: number } }
  | { IGMP: { type?: number; group_address?: string } };

export interface Workload {
  name?: string;
  kind?: string;
}

export interface Endpoint {
  ID?: number;
  identity?: number;
  cluster_name?: string;
  namespace?: string;
  /** `source:key=value`, e.g. `k8s:app=frontend`, `reserved:world`; sorted. */
  labels?: string[];
  pod_name?: string;
  workloads?: Workload[];
}

export interface Service {
  name?: string;
  namespace?: string;
}

export interface CiliumEventType {
  type?: number;
  sub_type?: number;
}

export interface NetworkInterface {
  index?: number;
  name?: string;
}

export interface Policy {
  name?: string;
  namespace?: string;
  labels?: string[];
  /** uint64: a decimal string in JSON. */
  revision?: string;
  kind?: string;
}

export interface HTTPHeader {
  key?: string;
  value?: string;
}

export interface HTTP {
  code?: number;
  method?: string;
  url?: string;
  protocol?: string;
  headers?: HTTPHeader[];
}

export interface DNS {
  query?: string;
  ips?: string[];
  ttl?: number;
  cnames?: string[];
  observation_source?: string;
  rcode?: number;
  qtypes?: string[];
  rrtypes?: string[];
}

export interface Kafka {
  error_code?: number;
  api_version?: number;
  api_key?: string;
  correlation_id?: number;
  topic?: string;
}

export interface Layer7 {
  type?: L7FlowType;
  /** uint64: a decimal string in JSON. */
  latency_ns?: string;
  dns?: DNS;
  http?: HTTP;
  kafka?: Kafka;
}

export interface Emitter {
  name?: string;
  version?: string;
}

export interface Flow {
  /** RFC 3339, UTC, with 0, 3, 6 or 9 fractional digits (protojson's Timestamp). */
  time?: string;
  uuid?: string;
  emitter?: Emitter;
  verdict?: Verdict;
  /** Deprecated by Hubble in favour of drop_reason_desc; still filled. */
  drop_reason?: number;
  auth_type?: AuthType;
  ethernet?: Ethernet;
  IP?: IP;
  l4?: Layer4;
  source?: Endpoint;
  destination?: Endpoint;
  Type?: FlowType;
  node_name?: string;
  node_labels?: string[];
  source_names?: string[];
  destination_names?: string[];
  l7?: Layer7;
  /** Deprecated by Hubble in favour of is_reply. */
  reply?: boolean;
  event_type?: CiliumEventType;
  source_service?: Service;
  destination_service?: Service;
  traffic_direction?: TrafficDirection;
  policy_match_type?: number;
  trace_observation_point?: TraceObservationPoint;
  trace_reason?: TraceReason;
  drop_reason_desc?: DropReason;
  /** A BoolValue: absent when unknown, so `false` is printed. */
  is_reply?: boolean;
  interface?: NetworkInterface;
  proxy_port?: number;
  Summary?: string;
  egress_allowed_by?: Policy[];
  ingress_allowed_by?: Policy[];
  egress_denied_by?: Policy[];
  ingress_denied_by?: Policy[];
}

export interface LostEvent {
  source?: LostEventSource;
  /** uint64: a decimal string in JSON. */
  num_events_lost?: string;
  /** An Int32Value: absent when not per CPU. */
  cpu?: number;
  first?: string;
  last?: string;
}

/** observer.proto's GetFlowsResponse, as `hubble observe -o jsonpb` prints it. */
export type GetFlowsResponse = ({ flow: Flow } | { lost_events: LostEvent }) & {
  node_name?: string;
  time?: string;
};

// ---------------------------------------------------------------- time

const NS_PER_SEC = 1_000_000_000n;

/** The last second formatted: flows come in time order, most in the same second as the last. */
let lastSec = Number.NaN;
let lastIso = '';

/** Nanoseconds since the epoch as protojson prints a Timestamp. */
export function formatTimestamp(ns: bigint): string {
  let sec = ns / NS_PER_SEC;
  let nanos = ns % NS_PER_SEC;
  if (nanos < 0n) {
    nanos += NS_PER_SEC;
    sec -= 1n;
  }
  const s = Number(sec);
  if (s !== lastSec) {
    lastIso = new Date(s * 1000).toISOString().slice(0, 19);
    lastSec = s;
  }
  const iso = lastIso;
  const n = Number(nanos);
  const frac =
    n === 0
      ? ''
      : n % 1_000_000 === 0
        ? `.${String(n / 1_000_000).padStart(3, '0')}`
        : n % 1000 === 0
          ? `.${String(n / 1000).padStart(6, '0')}`
          : `.${String(n).padStart(9, '0')}`;
  return `${iso}${frac}Z`;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

/** Parses an RFC 3339 timestamp to nanoseconds since the epoch; undefined if malformed. */
export function parseTimestamp(s: string): bigint | undefined {
  const m = RFC3339.exec(s);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, sec, frac, zone] = m;
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec));
  if (Number.isNaN(ms)) return undefined;
  let offsetMin = 0;
  if (zone && zone !== 'Z' && zone !== 'z') {
    const sign = zone[0] === '-' ? -1 : 1;
    offsetMin = sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
  }
  const nanos = BigInt((frac ?? '').padEnd(9, '0') || '0');
  return (BigInt(ms) - BigInt(offsetMin) * 60_000n) * 1_000_000n + nanos;
}

// ---------------------------------------------------------------- accessors

/** Source and destination ports of a flow's L4 (TCP, UDP or SCTP). */
export function flowPorts(f: Flow): { source?: number; destination?: number } {
  const l4 = f.l4;
  if (!l4) return {};
  const p = 'TCP' in l4 ? l4.TCP : 'UDP' in l4 ? l4.UDP : 'SCTP' in l4 ? l4.SCTP : undefined;
  if (!p) return {};
  return { source: p.source_port ?? 0, destination: p.destination_port ?? 0 };
}
