/**
 * Flow filters as observer.proto's GetFlowsRequest carries them: a flow passes when it
 * matches at least one whitelist filter (or there are none) and no blacklist filter.
 * Within a filter every field that is set must match; within a field, any one value.
 * Filters are compiled once per request: patterns, regular expressions, addresses and
 * selectors are checked then, and an error names the filter and the field.
 */
import { BlockList, isIP } from 'node:net';
import { ValidationError } from '../errors.js';
import {
  type DropReason,
  type Flow,
  flowPorts,
  type HTTPHeader,
  type IPVersion,
  MessageType,
  type NetworkInterface,
  type TCPFlags,
  type TrafficDirection,
  type Verdict,
  type Workload,
} from './flow.js';
import { MESSAGES } from './schema.js';

export interface EventTypeFilter {
  type?: number;
  match_sub_type?: boolean;
  sub_type?: number;
}

/** flow.proto's FlowFilter in its JSON shape; an absent or empty list is unset. */
export interface FlowFilter {
  uuid?: string[];
  source_ip?: string[];
  source_ip_xlated?: string[];
  source_pod?: string[];
  source_fqdn?: string[];
  source_label?: string[];
  source_service?: string[];
  source_workload?: Workload[];
  source_cluster_name?: string[];
  destination_ip?: string[];
  destination_pod?: string[];
  destination_fqdn?: string[];
  destination_label?: string[];
  destination_service?: string[];
  destination_workload?: Workload[];
  destination_cluster_name?: string[];
  traffic_direction?: TrafficDirection[];
  verdict?: Verdict[];
  drop_reason_desc?: DropReason[];
  interface?: NetworkInterface[];
  event_type?: EventTypeFilter[];
  http_status_code?: string[];
  protocol?: string[];
  source_port?: string[];
  destination_port?: string[];
  reply?: boolean[];
  dns_query?: string[];
  source_identity?: number[];
  destination_identity?: number[];
  http_method?: string[];
  http_path?: string[];
  http_url?: string[];
  http_header?: HTTPHeader[];
  tcp_flags?: TCPFlags[];
  node_name?: string[];
  node_labels?: string[];
  ip_version?: IPVersion[];
  trace_id?: string[];
  encrypted?: boolean[];
  experimental?: { cel_expression?: string[] };
}

export type FlowPredicate = (flow: Flow) => boolean;

/** observer.proto's GetFlowsRequest in its JSON shape (times as RFC 3339). */
export interface GetFlowsRequest {
  /** Last N flows (with `first`: first N); 0 = no limit. */
  number: number;
  first: boolean;
  follow: boolean;
  whitelist: FlowFilter[];
  blacklist: FlowFilter[];
  since?: string;
  until?: string;
}

/** One predicate for a request's lists (Hubble's filters.Apply). */
export function compileFilters(
  whitelist: readonly FlowFilter[] = [],
  blacklist: readonly FlowFilter[] = [],
): FlowPredicate {
  const wl = whitelist.map((f, i) => compileFilter(f, `whitelist[${i}]`));
  const bl = blacklist.map((f, i) => compileFilter(f, `blacklist[${i}]`));
  if (wl.length === 0 && bl.length === 0) return () => true;
  return (flow) => (wl.length === 0 || wl.some((p) => p(flow))) && !bl.some((p) => p(flow));
}

type Getter<T> = (f: Flow) => T;

/** One filter: the conjunction of its set fields. `where` names it in errors. */
export function compileFilter(ff: FlowFilter, where = 'filter'): FlowPredicate {
  const ps: FlowPredicate[] = [];
  const fail = (field: string, reason: string, cause?: unknown): never => {
    throw new ValidationError(where, field, reason, cause === undefined ? undefined : { cause });
  };
  const set = <T>(v: readonly T[] | undefined): v is readonly T[] => v !== undefined && v.length > 0;
  // An ignored field would widen the answer: a field this API does not know is an error.
  for (const key of Object.keys(ff)) if (!FILTER_FIELDS.has(key)) fail(key, 'unknown FlowFilter field');

  if (set(ff.uuid)) {
    const ids = new Set(ff.uuid);
    ps.push((f) => f.uuid !== undefined && ids.has(f.uuid));
  }
  if (set(ff.event_type)) ps.push(eventTypes(ff.event_type));
  if (set(ff.verdict)) {
    const vs = new Set(ff.verdict);
    ps.push((f) => vs.has(f.verdict ?? 'VERDICT_UNKNOWN'));
  }
  if (set(ff.drop_reason_desc)) {
    const rs = new Set(ff.drop_reason_desc);
    ps.push((f) => f.verdict === 'DROPPED' && rs.has(f.drop_reason_desc ?? 'DROP_REASON_UNKNOWN'));
  }
  if (set(ff.reply)) {
    const want = ff.reply;
    ps.push((f) => {
      if (f.is_reply === undefined && f.verdict !== 'DROPPED') return false;
      return want.includes(f.is_reply ?? false);
    });
  }
  if (set(ff.encrypted)) {
    const want = ff.encrypted;
    ps.push((f) => want.includes(f.IP?.encrypted ?? false));
  }
  if (set(ff.source_identity)) ps.push(identities(ff.source_identity, (f) => f.source?.identity));
  if (set(ff.destination_identity))
    ps.push(identities(ff.destination_identity, (f) => f.destination?.identity));
  if (set(ff.protocol)) ps.push(protocols(ff.protocol, fail));
  if (set(ff.source_ip)) ps.push(ips(ff.source_ip, (f) => f.IP?.source, 'source_ip', fail));
  if (set(ff.destination_ip))
    ps.push(ips(ff.destination_ip, (f) => f.IP?.destination, 'destination_ip', fail));
  if (set(ff.source_ip_xlated))
    ps.push(ips(ff.source_ip_xlated, (f) => f.IP?.source_xlated, 'source_ip_xlated', fail));
  if (set(ff.source_pod))
    ps.push(names(ff.source_pod, (f) => [f.source?.namespace, f.source?.pod_name], 'source_pod', fail));
  if (set(ff.destination_pod))
    ps.push(
      names(
        ff.destination_pod,
        (f) => [f.destination?.namespace, f.destination?.pod_name],
        'destination_pod',
        fail,
      ),
    );
  if (set(ff.source_workload)) ps.push(workloads(ff.source_workload, (f) => f.source?.workloads));
  if (set(ff.destination_workload))
    ps.push(workloads(ff.destination_workload, (f) => f.destination?.workloads));
  if (set(ff.source_service))
    ps.push(
      names(
        ff.source_service,
        (f) => [f.source_service?.namespace, f.source_service?.name],
        'source_service',
        fail,
      ),
    );
  if (set(ff.destination_service))
    ps.push(
      names(
        ff.destination_service,
        (f) => [f.destination_service?.namespace, f.destination_service?.name],
        'destination_service',
        fail,
      ),
    );
  if (set(ff.source_fqdn)) ps.push(fqdns(ff.source_fqdn, (f) => f.source_names, 'source_fqdn', fail));
  if (set(ff.destination_fqdn))
    ps.push(fqdns(ff.destination_fqdn, (f) => f.destination_names, 'destination_fqdn', fail));
  if (set(ff.dns_query)) {
    const res = regexps(ff.dns_query, 'dns_query', fail);
    ps.push((f) => {
      const q = f.l7?.dns?.query;
      return q !== undefined && res.some((r) => r.test(q));
    });
  }
  if (set(ff.source_label)) ps.push(labels(ff.source_label, (f) => f.source?.labels, 'source_label', fail));
  if (set(ff.destination_label))
    ps.push(labels(ff.destination_label, (f) => f.destination?.labels, 'destination_label', fail));
  if (set(ff.node_labels)) ps.push(labels(ff.node_labels, (f) => f.node_labels, 'node_labels', fail));
  if (set(ff.source_port)) ps.push(ports(ff.source_port, (f) => flowPorts(f).source, 'source_port', fail));
  if (set(ff.destination_port))
    ps.push(ports(ff.destination_port, (f) => flowPorts(f).destination, 'destination_port', fail));
  ps.push(...http(ff, fail));
  if (set(ff.tcp_flags)) ps.push(tcpFlags(ff.tcp_flags));
  if (set(ff.node_name)) {
    const re = pattern(ff.node_name, 'node_name', fail, nodeNamePattern);
    ps.push((f) => {
      const n = f.node_name;
      if (!n) return false;
      return re.test(n.includes('/') ? n : `default/${n}`);
    });
  }
  if (set(ff.source_cluster_name))
    ps.push(clusterNames(ff.source_cluster_name, (f) => f.source?.cluster_name, 'source_cluster_name', fail));
  if (set(ff.destination_cluster_name))
    ps.push(
      clusterNames(
        ff.destination_cluster_name,
        (f) => f.destination?.cluster_name,
        'destination_cluster_name',
        fail,
      ),
    );
  if (set(ff.ip_version)) {
    const vs = new Set(ff.ip_version);
    ps.push((f) => vs.has(f.IP?.ipVersion ?? 'IP_NOT_USED'));
  }
  if (set(ff.trace_id)) fail('trace_id', 'flows carry no trace context yet');
  if (set(ff.traffic_direction)) {
    const ds = new Set(ff.traffic_direction);
    ps.push((f) => ds.has(f.traffic_direction ?? 'TRAFFIC_DIRECTION_UNKNOWN'));
  }
  if (set(ff.interface)) {
    const want = ff.interface;
    ps.push((f) => {
      const i = f.interface;
      if (!i) return false;
      return want.some((w) => (!w.index || w.index === i.index) && (!w.name || w.name === i.name));
    });
  }
  if (set(ff.experimental?.cel_expression))
    fail('experimental.cel_expression', 'CEL expressions are not supported');

  if (ps.length === 0) return () => true;
  if (ps.length === 1) return ps[0]!;
  return (f) => {
    for (const p of ps) if (!p(f)) return false;
    return true;
  };
}

type Fail = (field: string, reason: string, cause?: unknown) => never;

const FILTER_FIELDS = new Set([
  ...(MESSAGES.FlowFilter ?? []).map((f) => f.name),
  'experimental',
  'ip_trace_id',
]);

function eventTypes(types: readonly EventTypeFilter[]): FlowPredicate {
  return (f) => {
    const et = f.event_type;
    if (!et) return false;
    return types.some(
      (t) =>
        (!t.type || t.type === (et.type ?? 0)) &&
        (!t.match_sub_type || (t.sub_type ?? 0) === (et.sub_type ?? 0)),
    );
  };
}

function identities(ids: readonly number[], get: Getter<number | undefined>): FlowPredicate {
  const s = new Set(ids);
  return (f) => s.has(get(f) ?? 0);
}

const L4_PROTOCOLS = ['icmp', 'icmpv4', 'icmpv6', 'tcp', 'udp', 'sctp', 'vrrp', 'igmp'];
const L7_PROTOCOLS = ['dns', 'http', 'kafka'];

function protocols(values: readonly string[], fail: Fail): FlowPredicate {
  const want = values.map((p, i) => {
    const v = p.toLowerCase();
    if (!L4_PROTOCOLS.includes(v) && !L7_PROTOCOLS.includes(v))
      fail(`protocol[${i}]`, `unknown protocol "${p}"`);
    return v;
  });
  return (f) => {
    const l4 = f.l4 ?? {};
    const l7 = f.l7;
    return want.some((p) => {
      switch (p) {
        case 'icmp':
          return 'ICMPv4' in l4 || 'ICMPv6' in l4;
        case 'icmpv4':
          return 'ICMPv4' in l4;
        case 'icmpv6':
          return 'ICMPv6' in l4;
        case 'tcp':
          return 'TCP' in l4;
        case 'udp':
          return 'UDP' in l4;
        case 'sctp':
          return 'SCTP' in l4;
        case 'vrrp':
          return 'VRRP' in l4;
        case 'igmp':
          return 'IGMP' in l4;
        case 'dns':
          return l7?.dns !== undefined;
        case 'http':
          return l7?.http !== undefined;
        default:
          return l7?.kafka !== undefined;
      }
    });
  };
}

/** Exact addresses or CIDR prefixes. */
function ips(
  values: readonly string[],
  get: Getter<string | undefined>,
  field: string,
  fail: Fail,
): FlowPredicate {
  const exact = new Set<string>();
  const prefixes = new BlockList();
  let anyPrefix = false;
  values.forEach((v, i) => {
    const slash = v.indexOf('/');
    if (slash < 0) {
      if (!isIP(v)) fail(`${field}[${i}]`, `"${v}" is not an IP address`);
      exact.add(v);
      return;
    }
    const addr = v.slice(0, slash);
    const len = v.slice(slash + 1);
    const family = isIP(addr);
    const bits = Number(len);
    if (!family || !/^\d+$/.test(len) || bits > (family === 4 ? 32 : 128)) {
      fail(`${field}[${i}]`, `"${v}" is not an IP prefix`);
    }
    prefixes.addSubnet(addr, bits, family === 4 ? 'ipv4' : 'ipv6');
    anyPrefix = true;
  });
  return (f) => {
    const ip = get(f);
    if (!ip) return false;
    if (exact.has(ip)) return true;
    if (!anyPrefix) return false;
    const family = isIP(ip);
    return family !== 0 && prefixes.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  };
}

/**
 * `namespace/name-prefix`, `namespace/` (any name) or `name-prefix` (namespace "default"),
 * as Hubble parses pod and service filters.
 */
function names(
  values: readonly string[],
  get: Getter<[string | undefined, string | undefined]>,
  field: string,
  fail: Fail,
): FlowPredicate {
  const want = values.map((v, i) => {
    if (v === '') fail(`${field}[${i}]`, 'must not be empty');
    return parseNamespacedName(v);
  });
  return (f) => {
    const [ns = '', name = ''] = get(f);
    if (ns === '' && name === '') return false;
    return want.some(
      (w) => (w.prefix === '' || name.startsWith(w.prefix)) && (w.namespace === '' || w.namespace === ns),
    );
  };
}

export function parseNamespacedName(s: string): { namespace: string; prefix: string } {
  const parts = s.split('/');
  const ns = parts[0] ?? '';
  if (parts.length > 1) return { namespace: ns, prefix: parts[1] ?? '' };
  if (ns === '') return { namespace: '', prefix: '' };
  return { namespace: 'default', prefix: ns };
}

function workloads(want: readonly Workload[], get: Getter<Workload[] | undefined>): FlowPredicate {
  return (f) =>
    (get(f) ?? []).some((w) =>
      want.some((x) => (!x.name || x.name === w.name) && (!x.kind || x.kind === w.kind)),
    );
}

function clusterNames(
  values: readonly string[],
  get: Getter<string | undefined>,
  field: string,
  fail: Fail,
): FlowPredicate {
  const re = pattern(values, field, fail, (sb, p) => fqdnPattern(sb, p));
  return (f) => {
    const c = get(f);
    return c !== undefined && re.test(c);
  };
}

function fqdns(
  values: readonly string[],
  get: Getter<string[] | undefined>,
  field: string,
  fail: Fail,
): FlowPredicate {
  const re = pattern(values, field, fail, (sb, p) => fqdnPattern(sb, p));
  return (f) => (get(f) ?? []).some((n) => re.test(n));
}

const FQDN_ANY = '(?:[-0-9_a-z]+(?:\\.[-0-9_a-z]+)*)';

/** Glob patterns (`*` within a name) as one anchored regular expression; throws a reason. */
function pattern(
  values: readonly string[],
  field: string,
  fail: Fail,
  append: (parts: string[], p: string) => void,
): RegExp {
  const parts: string[] = [];
  values.forEach((v, i) => {
    const one: string[] = [];
    try {
      append(one, v);
    } catch (err) {
      fail(`${field}[${i}]`, err instanceof Error ? err.message : String(err));
    }
    parts.push(one.join(''));
  });
  return new RegExp(`^(?:${parts.join('|')})$`);
}

function fqdnPattern(out: string[], raw: string): void {
  const p = raw.trim().replace(/\.$/, '').toLowerCase();
  if (p === '') throw new Error('empty pattern');
  if (p.endsWith('.')) throw new Error('multiple trailing dots in pattern');
  for (const c of p) {
    if (c === '.') out.push('\\.');
    else if (c === '*') out.push('[-.0-9a-z]*');
    else if (/[-0-9_a-z]/.test(c)) out.push(c);
    else throw new Error(`"${c}": invalid character in pattern`);
  }
}

/** `node`, `cluster/node`, `cluster/` with globs; node names without a cluster are in "default". */
function nodeNamePattern(out: string[], p: string): void {
  if (p === '') throw new Error('empty pattern');
  const elems = p.split('/');
  if (elems.length > 2) throw new Error('too many slashes in pattern');
  const [cluster, node] = elems.length === 2 ? [elems[0]!, elems[1]!] : ['', elems[0]!];
  if (cluster === '') out.push(FQDN_ANY);
  else fqdnPattern(out, cluster);
  out.push('/');
  if (node === '') out.push(FQDN_ANY);
  else fqdnPattern(out, node);
}

function regexps(values: readonly string[], field: string, fail: Fail): RegExp[] {
  return values.map((v, i) => {
    try {
      return new RegExp(v);
    } catch (err) {
      return fail(`${field}[${i}]`, `invalid regular expression "${v}"`, err);
    }
  });
}

function ports(
  values: readonly string[],
  get: Getter<number | undefined>,
  field: string,
  fail: Fail,
): FlowPredicate {
  const want = new Set(
    values.map((v, i) => {
      const n = Number(v);
      if (!/^\d+$/.test(v) || n > 65535) fail(`${field}[${i}]`, `invalid port "${v}"`);
      return n;
    }),
  );
  return (f) => {
    const p = get(f);
    return p !== undefined && want.has(p);
  };
}

const TCP_FLAG_NAMES = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'] as const;

/** A flow matches a TCPFlags value when it has every flag the value sets. */
function tcpFlags(want: readonly TCPFlags[]): FlowPredicate {
  return (f) => {
    const l4 = f.l4;
    const flags = l4 && 'TCP' in l4 ? l4.TCP.flags : undefined;
    if (!flags) return false;
    return want.some((w) => TCP_FLAG_NAMES.every((n) => !w[n] || flags[n]));
  };
}

const STATUS_FULL = /^[1-5][0-9]{2}$/;
const STATUS_PREFIX = /^[1-5][0-9]?\+$/;

function http(ff: FlowFilter, fail: Fail): FlowPredicate[] {
  const ps: FlowPredicate[] = [];
  const l7Only = (field: string) => {
    const types = ff.event_type ?? [];
    if (types.length > 0 && !types.some((t) => t.type === MessageType.AccessLog)) {
      fail(field, "requires the event type filter to match 'l7' events");
    }
  };
  if (ff.http_status_code?.length) {
    l7Only('http_status_code');
    const full: string[] = [];
    const prefix: string[] = [];
    ff.http_status_code.forEach((s, i) => {
      if (STATUS_FULL.test(s)) full.push(s);
      else if (STATUS_PREFIX.test(s)) prefix.push(s.slice(0, -1));
      else fail(`http_status_code[${i}]`, `invalid status code prefix "${s}"`);
    });
    ps.push((f) => {
      const code = f.l7?.http?.code;
      if (!code) return false;
      const c = String(code).padStart(3, '0');
      return full.includes(c) || prefix.some((p) => c.startsWith(p));
    });
  }
  if (ff.http_method?.length) {
    l7Only('http_method');
    const want = ff.http_method.map((m) => m.toUpperCase());
    ps.push((f) => {
      const m = f.l7?.http?.method;
      return !!m && want.includes(m.toUpperCase());
    });
  }
  if (ff.http_path?.length) {
    l7Only('http_path');
    const res = regexps(ff.http_path, 'http_path', fail);
    ps.push((f) => {
      const path = urlPath(f.l7?.http?.url);
      return path !== undefined && res.some((r) => r.test(path));
    });
  }
  if (ff.http_url?.length) {
    l7Only('http_url');
    const res = regexps(ff.http_url, 'http_url', fail);
    ps.push((f) => {
      const url = f.l7?.http?.url;
      return !!url && res.some((r) => r.test(url));
    });
  }
  if (ff.http_header?.length) {
    l7Only('http_header');
    const want = ff.http_header;
    ps.push((f) =>
      (f.l7?.http?.headers ?? []).some((h) => want.some((w) => w.key === h.key && w.value === h.value)),
    );
  }
  return ps;
}

function urlPath(url: string | undefined): string | undefined {
  if (!url) return undefined;
  if (url.startsWith('/')) return url.split(/[?#]/, 1)[0];
  try {
    return new URL(url).pathname;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- label selectors

interface LabelKey {
  /** Undefined: any source. */
  source?: string;
  key: string;
}

type Requirement =
  | { key: LabelKey; op: 'exists' | '!exists' }
  | { key: LabelKey; op: 'in' | 'notin'; values: string[] }
  | { key: LabelKey; op: 'gt' | 'lt'; value: number };

interface ParsedLabel {
  source: string;
  key: string;
  value: string;
}

/**
 * Kubernetes label selector syntax (`a=b,c!=d,e in (f,g),!h,i`) over Cilium labels: a key
 * may name its source (`k8s:app`, `reserved:world`); without one it matches any source.
 */
export function parseLabelSelector(s: string): FlowPredicateOn<readonly string[] | undefined> {
  const reqs = parseRequirements(s);
  return (labels) => {
    const parsed = parseLabels(labels ?? []);
    return reqs.every((r) => matchRequirement(r, parsed));
  };
}

export type FlowPredicateOn<T> = (value: T) => boolean;

function labels(
  values: readonly string[],
  get: Getter<string[] | undefined>,
  field: string,
  fail: Fail,
): FlowPredicate {
  const sels = values.map((v, i) => {
    try {
      return parseLabelSelector(v);
    } catch (err) {
      return fail(`${field}[${i}]`, err instanceof Error ? err.message : String(err));
    }
  });
  return (f) => {
    const l = get(f);
    return sels.some((s) => s(l));
  };
}

const parsedCache = new WeakMap<readonly string[], ParsedLabel[]>();

function parseLabels(labels: readonly string[]): ParsedLabel[] {
  let out = parsedCache.get(labels);
  if (out) return out;
  out = labels.map((l) => {
    const colon = l.indexOf(':');
    const eq = l.indexOf('=');
    const hasSource = colon >= 0 && (eq < 0 || colon < eq);
    const source = hasSource ? l.slice(0, colon) : 'unspec';
    const rest = hasSource ? l.slice(colon + 1) : l;
    const e = rest.indexOf('=');
    return e < 0
      ? { source, key: rest, value: '' }
      : { source, key: rest.slice(0, e), value: rest.slice(e + 1) };
  });
  parsedCache.set(labels, out);
  return out;
}

function lookup(key: LabelKey, labels: ParsedLabel[]): string | undefined {
  for (const l of labels) {
    if (l.key === key.key && (key.source === undefined || key.source === l.source)) return l.value;
  }
  return undefined;
}

function matchRequirement(r: Requirement, labels: ParsedLabel[]): boolean {
  const v = lookup(r.key, labels);
  switch (r.op) {
    case 'exists':
      return v !== undefined;
    case '!exists':
      return v === undefined;
    case 'in':
      return v !== undefined && r.values.includes(v);
    case 'notin':
      return v === undefined || !r.values.includes(v);
    case 'gt':
    case 'lt': {
      if (v === undefined || !/^-?\d+$/.test(v)) return false;
      return r.op === 'gt' ? Number(v) > r.value : Number(v) < r.value;
    }
  }
}

const KEY_CHARS = /^[A-Za-z0-9._/-]+$/;
const VALUE_CHARS = /^[A-Za-z0-9._-]*$/;

function parseKey(raw: string): LabelKey {
  const colon = raw.indexOf(':');
  const source = colon >= 0 ? raw.slice(0, colon) : undefined;
  const key = colon >= 0 ? raw.slice(colon + 1) : raw;
  if (!key || !KEY_CHARS.test(key)) throw new Error(`invalid label key "${raw}"`);
  return source === undefined || source === 'any' ? { key } : { source, key };
}

function parseValue(raw: string): string {
  const v = raw.trim();
  if (!VALUE_CHARS.test(v)) throw new Error(`invalid label value "${v}"`);
  return v;
}

function parseRequirements(s: string): Requirement[] {
  const out: Requirement[] = [];
  for (const part of splitTopLevel(s)) {
    const t = part.trim();
    if (t === '') throw new Error(`empty requirement in selector "${s}"`);
    let m = /^!\s*([^\s=!<>(),]+)$/.exec(t);
    if (m) {
      out.push({ key: parseKey(m[1]!), op: '!exists' });
      continue;
    }
    m = /^([^\s=!<>(),]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(t);
    if (m) {
      const values = m[3]!.split(',').map(parseValue);
      out.push({ key: parseKey(m[1]!), op: m[2] === 'in' ? 'in' : 'notin', values });
      continue;
    }
    m = /^([^\s=!<>(),]+)\s*(==|=|!=|>|<)\s*([^\s,()]*)$/.exec(t);
    if (m) {
      const key = parseKey(m[1]!);
      const op = m[2]!;
      if (op === '>' || op === '<') {
        if (!/^-?\d+$/.test(m[3]!)) throw new Error(`"${m[3]}" is not an integer`);
        out.push({ key, op: op === '>' ? 'gt' : 'lt', value: Number(m[3]) });
      } else {
        out.push({ key, op: op === '!=' ? 'notin' : 'in', values: [parseValue(m[3]!)] });
      }
      continue;
    }
    m = /^([^\s=!<>(),]+)$/.exec(t);
    if (m) {
      out.push({ key: parseKey(m[1]!), op: 'exists' });
      continue;
    }
    throw new Error(`cannot parse "${t}" in selector "${s}"`);
  }
  return out;
}

function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(s.slice(start));
  return parts;
}
