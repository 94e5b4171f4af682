/**
 * The messages of flow.proto and observer.proto that Hypha serves, field by field in
 * declaration order with their numbers and kinds: enough to print protojson exactly as
 * Hubble does (declaration order, defaults omitted, uint64 as strings, proto field names)
 * and to encode the wire format.
 */
import {
  AUTH_TYPES,
  DROP_REASONS,
  FLOW_TYPES,
  IP_VERSIONS,
  L7_FLOW_TYPES,
  LOST_EVENT_SOURCES,
  TRACE_OBSERVATION_POINTS,
  TRACE_REASONS,
  TRAFFIC_DIRECTIONS,
  VERDICTS,
} from './flow.js';

export type ScalarKind = 'string' | 'bool' | 'int32' | 'uint32' | 'uint64';
/** Wrapper types (google.protobuf.*Value) are printed even when they hold the default. */
export type WrapperKind = 'boolValue' | 'int32Value' | 'uint32Value';

export interface FieldDesc {
  readonly name: string;
  readonly number: number;
  readonly kind: ScalarKind | WrapperKind | 'timestamp' | 'enum' | 'message';
  readonly repeated: boolean;
  /** For enums. */
  readonly values?: Readonly<Record<string, number>>;
  /** For messages. */
  readonly message?: string;
  /** Members of one oneof share a group name. */
  readonly oneof?: string;
}

type Opt = { repeated?: boolean; oneof?: string };

const s = (
  name: string,
  number: number,
  kind: ScalarKind | WrapperKind | 'timestamp',
  o: Opt = {},
): FieldDesc => ({
  name,
  number,
  kind,
  repeated: o.repeated ?? false,
  ...(o.oneof ? { oneof: o.oneof } : {}),
});
const e = (name: string, number: number, values: Record<string, number>, o: Opt = {}): FieldDesc => ({
  name,
  number,
  kind: 'enum',
  values,
  repeated: o.repeated ?? false,
});
const m = (name: string, number: number, message: string, o: Opt = {}): FieldDesc => ({
  name,
  number,
  kind: 'message',
  message,
  repeated: o.repeated ?? false,
  ...(o.oneof ? { oneof: o.oneof } : {}),
});
const R = { repeated: true };

export const MESSAGES: Readonly<Record<string, readonly FieldDesc[]>> = {
  Flow: [
    s('time', 1, 'timestamp'),
    s('uuid', 34, 'string'),
    m('emitter', 41, 'Emitter'),
    e('verdict', 2, VERDICTS),
    s('drop_reason', 3, 'uint32'),
    e('auth_type', 35, AUTH_TYPES),
    m('ethernet', 4, 'Ethernet'),
    m('IP', 5, 'IP'),
    m('l4', 6, 'Layer4'),
    m('source', 8, 'Endpoint'),
    m('destination', 9, 'Endpoint'),
    e('Type', 10, FLOW_TYPES),
    s('node_name', 11, 'string'),
    s('node_labels', 37, 'string', R),
    s('source_names', 13, 'string', R),
    s('destination_names', 14, 'string', R),
    m('l7', 15, 'Layer7'),
    s('reply', 16, 'bool'),
    m('event_type', 19, 'CiliumEventType'),
    m('source_service', 20, 'Service'),
    m('destination_service', 21, 'Service'),
    e('traffic_direction', 22, TRAFFIC_DIRECTIONS),
    s('policy_match_type', 23, 'uint32'),
    e('trace_observation_point', 24, TRACE_OBSERVATION_POINTS),
    e('trace_reason', 36, TRACE_REASONS),
    e('drop_reason_desc', 25, DROP_REASONS),
    s('is_reply', 26, 'boolValue'),
    m('interface', 28, 'NetworkInterface'),
    s('proxy_port', 29, 'uint32'),
    s('Summary', 100000, 'string'),
    m('egress_allowed_by', 21001, 'Policy', R),
    m('ingress_allowed_by', 21002, 'Policy', R),
    m('egress_denied_by', 21004, 'Policy', R),
    m('ingress_denied_by', 21005, 'Policy', R),
  ],
  Emitter: [s('name', 1, 'string'), s('version', 2, 'string')],
  Ethernet: [s('source', 1, 'string'), s('destination', 2, 'string')],
  IP: [
    s('source', 1, 'string'),
    s('source_xlated', 5, 'string'),
    s('destination', 2, 'string'),
    e('ipVersion', 3, IP_VERSIONS),
    s('encrypted', 4, 'bool'),
  ],
  Layer4: [
    m('TCP', 1, 'TCP', { oneof: 'protocol' }),
    m('UDP', 2, 'UDP', { oneof: 'protocol' }),
    m('ICMPv4', 3, 'ICMPv4', { oneof: 'protocol' }),
    m('ICMPv6', 4, 'ICMPv6', { oneof: 'protocol' }),
    m('SCTP', 5, 'SCTP', { oneof: 'protocol' }),
    m('VRRP', 6, 'VRRP', { oneof: 'protocol' }),
    m('IGMP', 7, 'IGMP', { oneof: 'protocol' }),
  ],
  TCP: [s('source_port', 1, 'uint32'), s('destination_port', 2, 'uint32'), m('flags', 3, 'TCPFlags')],
  TCPFlags: ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'].map((n, i) => s(n, i + 1, 'bool')),
  UDP: [s('source_port', 1, 'uint32'), s('destination_port', 2, 'uint32')],
  SCTP: [s('source_port', 1, 'uint32'), s('destination_port', 2, 'uint32')],
  ICMPv4: [s('type', 1, 'uint32'), s('code', 2, 'uint32')],
  ICMPv6: [s('type', 1, 'uint32'), s('code', 2, 'uint32')],
  VRRP: [s('type', 1, 'uint32'), s('vrid', 2, 'uint32'), s('priority', 3, 'uint32')],
  IGMP: [s('type', 1, 'uint32'), s('group_address', 2, 'string')],
  Endpoint: [
    s('ID', 1, 'uint32'),
    s('identity', 2, 'uint32'),
    s('cluster_name', 7, 'string'),
    s('namespace', 3, 'string'),
    s('labels', 4, 'string', R),
    s('pod_name', 5, 'string'),
    m('workloads', 6, 'Workload', R),
  ],
  Workload: [s('name', 1, 'string'), s('kind', 2, 'string')],
  Service: [s('name', 1, 'string'), s('namespace', 2, 'string')],
  CiliumEventType: [s('type', 1, 'int32'), s('sub_type', 2, 'int32')],
  NetworkInterface: [s('index', 1, 'uint32'), s('name', 2, 'string')],
  Policy: [
    s('name', 1, 'string'),
    s('namespace', 2, 'string'),
    s('labels', 3, 'string', R),
    s('revision', 4, 'uint64'),
    s('kind', 5, 'string'),
  ],
  Layer7: [
    e('type', 1, L7_FLOW_TYPES),
    s('latency_ns', 2, 'uint64'),
    m('dns', 100, 'DNS', { oneof: 'record' }),
    m('http', 101, 'HTTP', { oneof: 'record' }),
    m('kafka', 102, 'Kafka', { oneof: 'record' }),
  ],
  DNS: [
    s('query', 1, 'string'),
    s('ips', 2, 'string', R),
    s('ttl', 3, 'uint32'),
    s('cnames', 4, 'string', R),
    s('observation_source', 5, 'string'),
    s('rcode', 6, 'uint32'),
    s('qtypes', 7, 'string', R),
    s('rrtypes', 8, 'string', R),
  ],
  HTTPHeader: [s('key', 1, 'string'), s('value', 2, 'string')],
  HTTP: [
    s('code', 1, 'uint32'),
    s('method', 2, 'string'),
    s('url', 3, 'string'),
    s('protocol', 4, 'string'),
    m('headers', 5, 'HTTPHeader', R),
  ],
  Kafka: [
    s('error_code', 1, 'int32'),
    s('api_version', 2, 'int32'),
    s('api_key', 3, 'string'),
    s('correlation_id', 4, 'int32'),
    s('topic', 5, 'string'),
  ],
  LostEvent: [
    e('source', 1, LOST_EVENT_SOURCES),
    s('num_events_lost', 2, 'uint64'),
    s('cpu', 3, 'int32Value'),
    s('first', 4, 'timestamp'),
    s('last', 5, 'timestamp'),
  ],
  GetFlowsResponse: [
    m('flow', 1, 'Flow', { oneof: 'response_types' }),
    m('lost_events', 3, 'LostEvent', { oneof: 'response_types' }),
    s('node_name', 1000, 'string'),
    s('time', 1001, 'timestamp'),
  ],
  EventTypeFilter: [s('type', 1, 'int32'), s('match_sub_type', 2, 'bool'), s('sub_type', 3, 'int32')],
  FlowFilter: [
    s('uuid', 29, 'string', R),
    s('source_ip', 1, 'string', R),
    s('source_ip_xlated', 34, 'string', R),
    s('source_pod', 2, 'string', R),
    s('source_fqdn', 7, 'string', R),
    s('source_label', 10, 'string', R),
    s('source_service', 16, 'string', R),
    m('source_workload', 26, 'Workload', R),
    s('source_cluster_name', 37, 'string', R),
    s('destination_ip', 3, 'string', R),
    s('destination_pod', 4, 'string', R),
    s('destination_fqdn', 8, 'string', R),
    s('destination_label', 11, 'string', R),
    s('destination_service', 17, 'string', R),
    m('destination_workload', 27, 'Workload', R),
    s('destination_cluster_name', 38, 'string', R),
    e('traffic_direction', 30, TRAFFIC_DIRECTIONS, R),
    e('verdict', 5, VERDICTS, R),
    e('drop_reason_desc', 33, DROP_REASONS, R),
    m('interface', 35, 'NetworkInterface', R),
    m('event_type', 6, 'EventTypeFilter', R),
    s('http_status_code', 9, 'string', R),
    s('protocol', 12, 'string', R),
    s('source_port', 13, 'string', R),
    s('destination_port', 14, 'string', R),
    s('reply', 15, 'bool', R),
    s('dns_query', 18, 'string', R),
    s('source_identity', 19, 'uint32', R),
    s('destination_identity', 20, 'uint32', R),
    s('http_method', 21, 'string', R),
    s('http_path', 22, 'string', R),
    s('http_url', 31, 'string', R),
    m('http_header', 32, 'HTTPHeader', R),
    m('tcp_flags', 23, 'TCPFlags', R),
    s('node_name', 24, 'string', R),
    s('node_labels', 36, 'string', R),
    e('ip_version', 25, IP_VERSIONS, R),
    s('trace_id', 28, 'string', R),
    s('encrypted', 40, 'bool', R),
  ],
  GetFlowsRequest: [
    s('number', 1, 'uint64'),
    s('first', 9, 'bool'),
    s('follow', 3, 'bool'),
    m('blacklist', 5, 'FlowFilter', R),
    m('whitelist', 6, 'FlowFilter', R),
    s('since', 7, 'timestamp'),
    s('until', 8, 'timestamp'),
  ],
};

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

function isDefault(f: FieldDesc, v: unknown): boolean {
  switch (f.kind) {
    case 'string':
    case 'timestamp':
      return v === '';
    case 'bool':
      return v === false;
    case 'int32':
    case 'uint32':
      return v === 0;
    case 'uint64':
      return v === 0 || v === '0' || v === 0n;
    case 'enum':
      return v === 0 || (typeof v === 'string' && f.values?.[v] === 0);
    default:
      return false;
  }
}

function value(f: FieldDesc, v: unknown): Json {
  if (f.kind === 'message') return canonical(f.message!, v);
  if (f.kind === 'uint64') return String(v);
  return v as Json;
}

/**
 * A message as protojson prints it with proto names: fields in declaration order, unset
 * and default-valued fields left out (wrappers and messages are kept when present),
 * uint64 as decimal strings. Unknown keys are dropped.
 */
export function canonical(message: string, v: unknown): Json {
  const fields = MESSAGES[message];
  if (!fields) throw new Error(`no schema for message ${message}`);
  const obj = (v ?? {}) as Record<string, unknown>;
  const out: { [k: string]: Json } = {};
  for (const f of fields) {
    const x = obj[f.name];
    if (x === undefined || x === null) continue;
    if (f.repeated) {
      if (!Array.isArray(x) || x.length === 0) continue;
      out[f.name] = x.map((i) => value(f, i));
    } else if (!isDefault(f, x)) {
      out[f.name] = value(f, x);
    }
  }
  return out;
}

/** protojson text of a message, escaped as Go's JSON encoder escapes it. */
export function toProtoJSON(message: string, v: unknown): string {
  return JSON.stringify(canonical(message, v)).replace(/[<>&\u2028\u2029]/g, (c) => {
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}
