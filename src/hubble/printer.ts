/**
 * `hubble observe` output formats: compact (one line per flow), dict (key: value blocks),
 * table (aligned columns), json/jsonpb (GetFlowsResponse as protojson). Layouts, names
 * and the choice of what to show follow the hubble CLI's printer, so scripts written
 * against its output keep working.
 */
import { isIP } from 'node:net';
import { identityTag } from './builder.js';
import {
  type Flow,
  flowPorts,
  type GetFlowsResponse,
  type LostEvent,
  MessageType,
  type Policy,
  parseTimestamp,
  policyMatchTypeName,
  TRACE_POINT_NAMES,
} from './flow.js';
import { toProtoJSON } from './schema.js';

export const OUTPUT_FORMATS = ['compact', 'dict', 'json', 'jsonpb', 'table'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const TIME_FORMATS = [
  'StampMilli',
  'YearMonthDay',
  'YearMonthDayHour',
  'YearMonthDayHourMinute',
  'RFC3339',
  'RFC3339Milli',
  'RFC3339Micro',
  'RFC3339Nano',
  'RFC1123Z',
] as const;
export type TimeFormat = (typeof TIME_FORMATS)[number];

export interface PrinterOptions {
  output?: OutputFormat;
  timeFormat?: TimeFormat;
  /** --print-node-name */
  nodeName?: boolean;
  /** --print-policy-names */
  policyNames?: boolean;
  /** Show pod, service or DNS names instead of addresses (default; --numeric turns it off). */
  ipTranslation?: boolean;
}

/** Cilium's drop reason texts (pkg/monitor/api), which Hubble prints as a drop's type. */
const DROP_TEXT: Record<number, string> = {
  0: 'Success',
  2: 'Invalid packet',
  130: 'Invalid source mac',
  131: 'Invalid destination mac',
  132: 'Invalid source ip',
  133: 'Policy denied',
  134: 'Invalid packet',
  135: 'CT: Truncated or invalid header',
  136: 'Fragmentation needed',
  137: 'CT: Unknown L4 protocol',
  138: "CT: Can't create entry from packet",
  139: 'Unsupported L3 protocol',
  140: 'Missed tail call',
  141: 'Error writing to packet',
  142: 'Unknown L4 protocol',
  143: 'Unknown ICMPv4 code',
  144: 'Unknown ICMPv4 type',
  145: 'Unknown ICMPv6 code',
  146: 'Unknown ICMPv6 type',
  147: 'Error retrieving tunnel key',
  150: 'Unknown L3 target address',
  151: 'Stale or unroutable IP',
  153: 'Error while correcting L3 checksum',
  154: 'Error while correcting L4 checksum',
  155: 'CT: Map insertion failed',
  156: 'Invalid IPv6 extension header',
  157: 'IP fragmentation not supported',
  158: 'Service backend not found',
  160: 'No tunnel/encapsulation endpoint (datapath BUG!)',
  161: 'NAT 46/64 not enabled',
  162: 'Reached EDT rate-limiting drop horizon',
  163: 'Unknown connection tracking state',
  164: 'Local host is unreachable',
  165: 'No configuration available to perform policy decision',
  166: 'Unsupported L2 protocol',
  167: 'No mapping for NAT masquerade',
  168: 'Unsupported protocol for NAT masquerade',
  169: 'FIB lookup failed',
  170: 'Encapsulation traffic is prohibited',
  171: 'Invalid identity',
  172: 'Unknown sender',
  173: 'NAT not needed',
  174: 'Is a ClusterIP',
  175: 'First logical datagram fragment not found',
  176: 'Forbidden ICMPv6 message',
  177: 'Denied by LB src range check',
  178: 'Socket lookup failed',
  179: 'Socket assign failed',
  180: 'Proxy redirection not supported for protocol',
  181: 'Policy denied by denylist',
  182: 'VLAN traffic disallowed by VLAN filter',
  183: 'Incorrect VNI from VTEP',
  184: 'Failed to update or lookup TC buffer',
  185: 'No SID was found for the IP address',
  186: 'SRv6 state was removed during tail call',
  187: 'L3 translation from IPv4 to IPv6 failed (NAT46)',
  188: 'L3 translation from IPv6 to IPv4 failed (NAT64)',
  189: 'Authentication required',
  190: 'No conntrack map found',
  191: 'No nat map found',
  192: 'Invalid ClusterID',
  193: 'Unsupported packet protocol for DSR encapsulation',
  194: 'No egress gateway found',
  195: 'Traffic is unencrypted',
  196: 'TTL exceeded',
  197: 'No node ID found',
  198: 'Rate limited',
  199: 'IGMP handled',
  200: 'IGMP subscribed',
  201: 'Multicast handled',
  202: 'Host datapath not ready',
  203: 'Endpoint policy program not available',
  204: 'No Egress IP configured',
  205: 'Punt to proxy',
};

export function dropReasonText(code: number): string {
  return DROP_TEXT[code] ?? `${code}, 0`;
}

// ---------------------------------------------------------------- time

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const p2 = (n: number) => String(n).padStart(2, '0');

/** A flow time (RFC 3339) in one of the CLI's layouts, in UTC as the CLI prints it. */
export function formatTime(time: string | undefined, layout: TimeFormat = 'StampMilli'): string {
  const ns = time ? parseTimestamp(time) : undefined;
  if (ns === undefined) return 'N/A';
  const d = new Date(Number(ns / 1_000_000n));
  const nanos = Number(((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n);
  const date = `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}`;
  const hm = `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}`;
  const hms = `${hm}:${p2(d.getUTCSeconds())}`;
  // Go's ".999" layouts print up to that many digits, trailing zeros removed.
  const frac = (digits: number) => {
    const f = String(nanos).padStart(9, '0').slice(0, digits).replace(/0+$/, '');
    return f ? `.${f}` : '';
  };
  switch (layout) {
    case 'YearMonthDay':
      return date;
    case 'YearMonthDayHour':
      return `${date}T${p2(d.getUTCHours())}Z`;
    case 'YearMonthDayHourMinute':
      return `${date}T${hm}Z`;
    case 'RFC3339':
      return `${date}T${hms}Z`;
    case 'RFC3339Milli':
      return `${date}T${hms}${frac(3)}Z`;
    case 'RFC3339Micro':
      return `${date}T${hms}${frac(6)}Z`;
    case 'RFC3339Nano':
      return `${date}T${hms}${frac(9)}Z`;
    case 'RFC1123Z':
      return `${DAYS[d.getUTCDay()]}, ${p2(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${hms} +0000`;
    default:
      return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${hms}.${String(Math.floor(nanos / 1e6)).padStart(3, '0')}`;
  }
}

// ---------------------------------------------------------------- flow parts

/** `host:port` as Go joins them: IPv6 hosts in brackets. */
function joinHostPort(host: string, port: string): string {
  return host.includes(':') || isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

function hostname(
  ip: string,
  port: number | undefined,
  ns: string,
  pod: string,
  svc: string,
  names: readonly string[],
  translate: boolean,
): string {
  let host = ip;
  if (translate) {
    if (pod) host = ns ? `${ns}/${pod}` : pod;
    else if (svc) host = ns ? `${ns}/${svc}` : svc;
    else if (names.length) host = names.join(',');
  }
  return port ? joinHostPort(host, String(port)) : host;
}

/** Source and destination as the CLI names them: pod, service, DNS names or address, with the port. */
export function hostNames(f: Flow, translate = true): [string, string] {
  if (!f.IP) {
    return f.ethernet ? [f.ethernet.source ?? '', f.ethernet.destination ?? ''] : ['', ''];
  }
  const ports = flowPorts(f);
  const side = (
    ip: string | undefined,
    port: number | undefined,
    ep: Flow['source'],
    svc: Flow['source_service'],
    names: string[] | undefined,
  ) =>
    hostname(
      ip ?? '',
      port,
      svc ? (svc.namespace ?? '') : (ep?.namespace ?? ''),
      ep?.pod_name ?? '',
      svc?.name ?? '',
      names ?? [],
      translate,
    );
  return [
    side(f.IP.source, ports.source, f.source, f.source_service, f.source_names),
    side(f.IP.destination, ports.destination, f.destination, f.destination_service, f.destination_names),
  ];
}

/** The TYPE column: L7 kind, trace point, drop reason text, or policy-verdict match and direction. */
export function flowType(f: Flow): string {
  if (f.l7) {
    let proto = 'l7';
    let type = (f.l7.type ?? 'UNKNOWN_L7_TYPE').toLowerCase();
    if (f.l7.http) proto = 'http';
    else if (f.l7.dns) {
      proto = 'dns';
      type += ` ${f.l7.dns.observation_source ?? ''}`;
    } else if (f.l7.kafka) proto = 'kafka';
    return `${proto}-${type}`;
  }
  const sub = f.event_type?.sub_type ?? 0;
  switch (f.event_type?.type) {
    case MessageType.Trace:
      return TRACE_POINT_NAMES[sub & 0xff] ?? String(sub & 0xff);
    case MessageType.Drop:
      return dropReasonText(sub & 0xff);
    case MessageType.PolicyVerdict:
      return `policy-verdict:${policyMatchTypeName(f.policy_match_type ?? 0)} ${f.traffic_direction ?? 'TRAFFIC_DIRECTION_UNKNOWN'}`;
    default:
      return 'UNKNOWN';
  }
}

function policyNames(policies: readonly Policy[] | undefined): string {
  const named = (policies ?? []).filter((p) => p.kind && p.name);
  return named.length ? ` BY ${named.map((p) => `${p.name} (${p.kind})`).join(', ')}` : '';
}

/** The VERDICT column: policy verdicts read ALLOWED, DENIED or AUDITED. */
export function flowVerdict(f: Flow, withPolicyNames = false): string {
  const verdict = f.verdict ?? 'VERDICT_UNKNOWN';
  const isPolicy = f.event_type?.type === MessageType.PolicyVerdict;
  if (!isPolicy) return verdict;
  const dir = f.traffic_direction;
  switch (verdict) {
    case 'FORWARDED':
    case 'REDIRECTED':
      return `ALLOWED${withPolicyNames ? policyNames(dir === 'EGRESS' ? f.egress_allowed_by : dir === 'INGRESS' ? f.ingress_allowed_by : []) : ''}`;
    case 'DROPPED':
    case 'ERROR':
      return `DENIED${withPolicyNames ? policyNames(dir === 'EGRESS' ? f.egress_denied_by : dir === 'INGRESS' ? f.ingress_denied_by : []) : ''}`;
    case 'AUDIT':
      return 'AUDITED';
    default:
      return verdict;
  }
}

function summary(f: Flow): string {
  const auth = f.auth_type && f.auth_type !== 'DISABLED' ? `; Auth: ${f.auth_type}` : '';
  return `${f.Summary ?? ''}${auth}`;
}

function lostSummary(l: LostEvent, layout: TimeFormat, sep: string): string {
  let s = `CPU(${l.cpu ?? 0})${sep}${l.num_events_lost ?? '0'}`;
  if (l.first && l.last) s += ` (first: ${formatTime(l.first, layout)}, last: ${formatTime(l.last, layout)})`;
  return s;
}

// ---------------------------------------------------------------- printer

/**
 * Formats GetFlowsResponses one at a time. `write` returns the text for one response
 * (empty for table rows, which `flush` aligns and returns at the end, as the CLI does).
 */
export class FlowPrinter {
  readonly #o: Required<PrinterOptions>;
  #line = 0;
  #rows: string[][] = [];

  constructor(o: PrinterOptions = {}) {
    this.#o = {
      output: o.output ?? 'compact',
      timeFormat: o.timeFormat ?? 'StampMilli',
      nodeName: o.nodeName ?? false,
      policyNames: o.policyNames ?? false,
      ipTranslation: o.ipTranslation ?? true,
    };
  }

  write(res: GetFlowsResponse): string {
    const o = this.#o;
    if (o.output === 'json' || o.output === 'jsonpb') return `${toProtoJSON('GetFlowsResponse', res)}\n`;
    const text = 'flow' in res ? this.#flow(res.flow) : this.#lost(res.lost_events, res);
    this.#line++;
    return text;
  }

  /** The aligned table (table output); empty for the other formats. */
  flush(): string {
    if (this.#o.output !== 'table' || this.#rows.length === 0) return '';
    const text = tabulate(this.#rows);
    this.#rows = [];
    return text;
  }

  #header(): string[] {
    return [
      'TIMESTAMP',
      ...(this.#o.nodeName ? ['NODE'] : []),
      'SOURCE',
      'DESTINATION',
      'TYPE',
      'VERDICT',
      'SUMMARY',
    ];
  }

  #flow(f: Flow): string {
    const o = this.#o;
    const time = formatTime(f.time, o.timeFormat);
    let [src, dst] = hostNames(f, o.ipTranslation);
    const type = flowType(f);
    const verdict = flowVerdict(f, o.policyNames);
    switch (o.output) {
      case 'table':
        if (this.#line === 0) this.#rows.push(this.#header());
        this.#rows.push([
          time,
          ...(o.nodeName ? [f.node_name ?? ''] : []),
          src,
          dst,
          type,
          verdict,
          summary(f),
        ]);
        return '';
      case 'dict':
        return [
          ...(this.#line !== 0 ? ['------------'] : []),
          `  TIMESTAMP: ${time}`,
          ...(o.nodeName ? [`       NODE: ${f.node_name ?? ''}`] : []),
          `     SOURCE: ${src}`,
          `DESTINATION: ${dst}`,
          `       TYPE: ${type}`,
          `    VERDICT: ${verdict}`,
          `    SUMMARY: ${summary(f)}`,
          '',
        ].join('\n');
      default: {
        let srcId = identityTag(f.source?.identity ?? 0);
        let dstId = identityTag(f.destination?.identity ?? 0);
        let arrow = '->';
        if (f.is_reply === undefined) arrow = '<>';
        else if (f.is_reply) {
          [src, dst] = [dst, src];
          [srcId, dstId] = [dstId, srcId];
          arrow = '<-';
        }
        const node = o.nodeName ? ` [${f.node_name ?? ''}]` : '';
        return `${time}${node}: ${src} ${srcId} ${arrow} ${dst} ${dstId} ${type} ${verdict} (${summary(f)})\n`;
      }
    }
  }

  #lost(l: LostEvent, res: GetFlowsResponse): string {
    const o = this.#o;
    const time = formatTime(res.time, o.timeFormat);
    const source = l.source ?? 'UNKNOWN_LOST_EVENT_SOURCE';
    const node = res.node_name || '-';
    switch (o.output) {
      case 'table':
        if (this.#line === 0) this.#rows.push(this.#header());
        this.#rows.push([
          time,
          ...(o.nodeName ? [node] : []),
          source,
          '-',
          'EVENTS LOST',
          '-',
          lostSummary(l, o.timeFormat, ' - '),
        ]);
        return '';
      case 'dict':
        return [
          ...(this.#line !== 0 ? ['------------'] : []),
          `  TIMESTAMP: ${time}`,
          ...(o.nodeName ? [`       NODE: ${node}`] : []),
          `     SOURCE: ${source}`,
          '       TYPE: EVENTS LOST',
          '    VERDICT: -',
          `    SUMMARY: ${lostSummary(l, o.timeFormat, ' - ')}`,
          '',
        ].join('\n');
      default:
        return `${time} EVENTS LOST: ${source} ${lostSummary(l, o.timeFormat, ' ')}\n`;
    }
  }
}

/**
 * Go's tabwriter as the CLI configures it (min width 2, padding 3, spaces): every cell
 * but the last of a row is padded to its column's widest cell plus three.
 */
export function tabulate(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) {
    r.forEach((c, i) => {
      if (i < r.length - 1) widths[i] = Math.max(widths[i] ?? 0, c.length + 3, 2);
    });
  }
  return rows
    .map((r) => r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i] ?? 0) : c)).join(''))
    .map((l) => `${l}\n`)
    .join('');
}
