/**
 * Hubble's metrics from flows, in Prometheus text format with Hubble's names, labels and
 * options, configured by the Helm values' `hubble.metrics.enabled` entries as Hubble
 * parses them: `name` or `name:option=value;option=value`, e.g.
 * `flow:sourceContext=workload-name|reserved-identity;destinationContext=workload-name`,
 * `drop:labelsContext=source_namespace,source_workload`, `dns:query;ignoreAAAA`.
 * Where Hubble ignores an unknown option or context silently, Hypha rejects the entry
 * with an error naming it.
 */
import { ValidationError } from '../errors.js';
import {
  type Endpoint,
  type Flow,
  LOST_EVENT_SOURCES,
  type LostEventSource,
  MessageType,
  TRACE_POINT_NAMES,
} from './flow.js';
import { DNS_RCODE_NAMES } from './l7.js';
import { icmpTypeName } from './packet.js';
import { Counter, Histogram } from './prometheus.js';

export const METRIC_NAMES = [
  'dns',
  'drop',
  'tcp',
  'flow',
  'port-distribution',
  'icmp',
  'http',
  'httpV2',
] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

/** One `hubble.metrics.enabled` entry, parsed. */
export interface MetricConfig {
  name: MetricName;
  /** Option names as written (Hubble matches them case-insensitively). */
  options: Readonly<Record<string, string>>;
}

// ---------------------------------------------------------------- contexts

const CONTEXT_IDENTIFIERS = [
  'identity',
  'namespace',
  'pod',
  'pod-short',
  'pod-name',
  'dns',
  'ip',
  'reserved-identity',
  'workload',
  'workload-name',
  'app',
] as const;
type ContextIdentifier = (typeof CONTEXT_IDENTIFIERS)[number];

/** labelsContext's labels, in the order Hubble emits them. */
const CONTEXT_LABELS = [
  'source_ip',
  'source_pod',
  'source_namespace',
  'source_workload',
  'source_workload_kind',
  'source_app',
  'destination_ip',
  'destination_pod',
  'destination_namespace',
  'destination_workload',
  'destination_workload_kind',
  'destination_app',
  'traffic_direction',
] as const;
type ContextLabel = (typeof CONTEXT_LABELS)[number];

const CONTEXT_OPTIONS = [
  'sourceContext',
  'destinationContext',
  'sourceEgressContext',
  'sourceIngressContext',
  'destinationEgressContext',
  'destinationIngressContext',
  'labelsContext',
] as const;

/** Options each metric takes besides the context options. */
const EXTRA_OPTIONS: Record<MetricName, readonly string[]> = {
  dns: ['query', 'ignoreAAAA'],
  drop: [],
  tcp: [],
  flow: [],
  'port-distribution': [],
  icmp: [],
  http: ['exemplars'],
  httpV2: ['exemplars'],
};

/** Labels recommended for an app name, most specific first (Hubble's podAppLabels). */
const APP_LABELS = ['k8s:app.kubernetes.io/name=', 'k8s:k8s-app=', 'k8s:app='];

function appOf(labels: readonly string[] | undefined): string {
  for (const l of labels ?? [])
    for (const prefix of APP_LABELS)
      if (l.startsWith(prefix) && l.length > prefix.length) return l.slice(prefix.length);
  return '';
}

function reservedOf(labels: readonly string[] | undefined): string {
  if (!labels) return '';
  if (labels.includes('reserved:kube-apiserver')) return 'reserved:kube-apiserver';
  return labels.find((l) => l.startsWith('reserved:')) ?? '';
}

function contextValue(id: ContextIdentifier, f: Flow, source: boolean): string {
  const ep: Endpoint | undefined = source ? f.source : f.destination;
  const ns = ep?.namespace ?? '';
  switch (id) {
    case 'namespace':
      return ns;
    case 'identity':
      return (ep?.labels ?? []).join(',');
    case 'pod':
      return ns ? `${ns}/${ep?.pod_name ?? ''}` : (ep?.pod_name ?? '');
    case 'pod-short': {
      const short = (ep?.pod_name ?? '').replace(/^(.+?)(-[a-z0-9]+){1,2}$/, '$1');
      return ns ? `${ns}/${short}` : short;
    }
    case 'pod-name':
      return ep?.pod_name ?? '';
    case 'dns':
      return ((source ? f.source_names : f.destination_names) ?? []).join(',');
    case 'ip':
      return (source ? f.IP?.source : f.IP?.destination) ?? '';
    case 'reserved-identity':
      return reservedOf(ep?.labels);
    case 'workload': {
      const w = ep?.workloads?.[0]?.name;
      return w ? (ns ? `${ns}/${w}` : w) : '';
    }
    case 'workload-name':
      return ep?.workloads?.[0]?.name ?? '';
    case 'app':
      return appOf(ep?.labels);
  }
}

function labelValue(l: ContextLabel, f: Flow, invert: boolean): string {
  const [src, dst] = invert ? [f.destination, f.source] : [f.source, f.destination];
  const [srcIp, dstIp] = invert ? [f.IP?.destination, f.IP?.source] : [f.IP?.source, f.IP?.destination];
  switch (l) {
    case 'source_ip':
      return srcIp ?? '';
    case 'source_pod':
      return src?.pod_name ?? '';
    case 'source_namespace':
      return src?.namespace ?? '';
    case 'source_workload':
      return src?.workloads?.[0]?.name ?? '';
    case 'source_workload_kind':
      return src?.workloads?.[0]?.kind ?? '';
    case 'source_app':
      return appOf(src?.labels);
    case 'destination_ip':
      return dstIp ?? '';
    case 'destination_pod':
      return dst?.pod_name ?? '';
    case 'destination_namespace':
      return dst?.namespace ?? '';
    case 'destination_workload':
      return dst?.workloads?.[0]?.name ?? '';
    case 'destination_workload_kind':
      return dst?.workloads?.[0]?.kind ?? '';
    case 'destination_app':
      return appOf(dst?.labels);
    case 'traffic_direction': {
      const d = f.traffic_direction;
      return d === 'INGRESS' ? 'ingress' : d === 'EGRESS' ? 'egress' : 'unknown';
    }
  }
}

/**
 * A metric's context options: extra labels naming the flow's source and destination
 * (`source`, `destination`, each the first non-empty of its identifiers) and the
 * labelsContext labels, in Hubble's order.
 */
export class MetricContext {
  readonly labelNames: readonly string[];
  readonly #labels: readonly ContextLabel[];
  readonly #source: readonly ContextIdentifier[];
  readonly #sourceIngress: readonly ContextIdentifier[] | undefined;
  readonly #sourceEgress: readonly ContextIdentifier[] | undefined;
  readonly #destination: readonly ContextIdentifier[];
  readonly #destinationIngress: readonly ContextIdentifier[] | undefined;
  readonly #destinationEgress: readonly ContextIdentifier[] | undefined;

  constructor(options: Readonly<Record<string, string>> = {}, where = 'metric') {
    const get = (name: string): string | undefined => {
      for (const [k, v] of Object.entries(options)) if (k.toLowerCase() === name.toLowerCase()) return v;
      return undefined;
    };
    const ids = (name: string): ContextIdentifier[] | undefined => {
      const v = get(name);
      if (v === undefined) return undefined;
      return v.split('|').map((s) => {
        const id = s.toLowerCase();
        if (!(CONTEXT_IDENTIFIERS as readonly string[]).includes(id))
          throw new ValidationError(
            where,
            name,
            `unknown context "${s}" (known: ${CONTEXT_IDENTIFIERS.join(', ')})`,
          );
        return id as ContextIdentifier;
      });
    };
    this.#source = ids('sourceContext') ?? [];
    this.#sourceIngress = ids('sourceIngressContext');
    this.#sourceEgress = ids('sourceEgressContext');
    this.#destination = ids('destinationContext') ?? [];
    this.#destinationIngress = ids('destinationIngressContext');
    this.#destinationEgress = ids('destinationEgressContext');
    const labels = get('labelsContext');
    const wanted = new Set<string>();
    if (labels !== undefined) {
      for (const l of labels.split(',')) {
        if (!(CONTEXT_LABELS as readonly string[]).includes(l))
          throw new ValidationError(
            where,
            'labelsContext',
            `unknown label "${l}" (known: ${CONTEXT_LABELS.join(', ')})`,
          );
        wanted.add(l);
      }
    }
    this.#labels = CONTEXT_LABELS.filter((l) => wanted.has(l));
    this.labelNames = [
      ...this.#labels,
      ...(this.#source.length ? ['source'] : []),
      ...(this.#destination.length ? ['destination'] : []),
    ];
  }

  /** Label values for a flow, in labelNames' order; `invert` swaps source and destination (replies). */
  values(f: Flow, invert = false): string[] {
    if (this.labelNames.length === 0) return [];
    const out = this.#labels.map((l) => labelValue(l, f, invert));
    const dir = f.traffic_direction;
    const pick = (
      all: readonly ContextIdentifier[],
      ingress: readonly ContextIdentifier[] | undefined,
      egress: readonly ContextIdentifier[] | undefined,
    ) => (dir === 'INGRESS' && ingress) || (dir === 'EGRESS' && egress) || all;
    const first = (list: readonly ContextIdentifier[], source: boolean) => {
      for (const id of list) {
        const v = contextValue(id, f, source);
        if (v) return v;
      }
      return '';
    };
    // Inverted (a response counted as its request), `source` describes the flow's destination.
    const src = first(pick(this.#source, this.#sourceIngress, this.#sourceEgress), !invert);
    const dst = first(pick(this.#destination, this.#destinationIngress, this.#destinationEgress), invert);
    if (this.#source.length) out.push(src);
    if (this.#destination.length) out.push(dst);
    return out;
  }
}

// ---------------------------------------------------------------- configuration

/**
 * Parses `hubble.metrics.enabled` entries. A ValidationError names the entry and what is
 * wrong: an unknown metric, an option the metric does not take, an unknown context or
 * label, a metric enabled twice, http together with httpV2.
 */
export function parseMetricsConfig(entries: readonly string[]): MetricConfig[] {
  const out: MetricConfig[] = [];
  entries.forEach((entry, i) => {
    const where = `hubble.metrics.enabled[${i}] "${entry}"`;
    const colon = entry.indexOf(':');
    const name = (colon < 0 ? entry : entry.slice(0, colon)).trim();
    if (!(METRIC_NAMES as readonly string[]).includes(name))
      throw new ValidationError(
        where,
        'name',
        `unknown metric "${name}" (known: ${METRIC_NAMES.join(', ')})`,
      );
    const metric = name as MetricName;
    if (out.some((c) => c.name === metric))
      throw new ValidationError(where, 'name', `"${name}" is enabled twice`);
    const options: Record<string, string> = {};
    if (colon >= 0) {
      for (const opt of entry.slice(colon + 1).split(';')) {
        if (opt === '') continue;
        const eq = opt.indexOf('=');
        const key = eq < 0 ? opt : opt.slice(0, eq);
        const known = [...CONTEXT_OPTIONS, ...EXTRA_OPTIONS[metric]];
        if (!known.some((k) => k.toLowerCase() === key.toLowerCase()))
          throw new ValidationError(where, key, `not an option of "${name}" (options: ${known.join(', ')})`);
        options[key] = eq < 0 ? '' : opt.slice(eq + 1);
      }
    }
    // Checks the contexts now, so that a bad one fails the configuration, not the first flow.
    new MetricContext(options, where);
    out.push({ name: metric, options });
  });
  const names = out.map((c) => c.name);
  if (names.includes('http') && names.includes('httpV2'))
    throw new ValidationError(
      'hubble.metrics.enabled',
      'httpV2',
      'conflicts with "http": enable one of them',
    );
  return out;
}

/**
 * Splits a comma-separated flag of entries (as the lab passes `hubble.metrics.enabled` to
 * the agents) where labelsContext values contain commas too: a piece that does not start
 * with a metric name continues the entry before it.
 */
export function splitMetricsFlag(flag: string): string[] {
  const out: string[] = [];
  for (const piece of flag.split(',')) {
    const name = piece.split(':')[0]!.trim();
    const continues = out.length > 0 && !(METRIC_NAMES as readonly string[]).includes(name);
    if (continues) out[out.length - 1] += `,${piece}`;
    else if (piece.trim() !== '') out.push(piece.trim());
  }
  return out;
}

// ---------------------------------------------------------------- handlers

interface Handler {
  add(f: Flow): void;
  families(): { render(): string }[];
}

/** v1.FlowProtocol: the L7 protocol if any, else the L4 one. */
export function flowProtocol(f: Flow): string {
  const t = f.event_type?.type;
  if (t === MessageType.AccessLog) {
    const l7 = f.l7;
    if (l7?.dns) return 'DNS';
    if (l7?.http) return 'HTTP';
    if (l7?.kafka) return 'Kafka';
    return 'Unknown L7';
  }
  if (
    t === MessageType.Drop ||
    t === MessageType.Trace ||
    t === MessageType.PolicyVerdict ||
    t === MessageType.Capture
  ) {
    const l4 = f.l4;
    if (!l4) return 'Unknown L4';
    if ('TCP' in l4) return 'TCP';
    if ('UDP' in l4) return 'UDP';
    if ('ICMPv4' in l4) return 'ICMPv4';
    if ('ICMPv6' in l4) return 'ICMPv6';
    if ('SCTP' in l4) return 'SCTP';
    if ('VRRP' in l4) return 'VRRP';
    if ('IGMP' in l4) return 'IGMP';
    return 'Unknown L4';
  }
  return 'Unknown flow';
}

const forwarded = (f: Flow) => f.verdict === 'FORWARDED' || f.verdict === 'REDIRECTED';

function flowHandler(ctx: MetricContext): Handler {
  const flows = new Counter('hubble_flows_processed_total', 'Total number of flows processed', [
    'protocol',
    'type',
    'subtype',
    'verdict',
    ...ctx.labelNames,
  ]);
  return {
    add(f) {
      const t = f.event_type?.type ?? 0;
      let type: string;
      let sub = '';
      switch (t) {
        case MessageType.AccessLog:
          type = 'L7';
          sub = f.l7?.dns ? 'DNS' : f.l7?.http ? 'HTTP' : f.l7?.kafka ? 'Kafka' : '';
          break;
        case MessageType.Drop:
          type = 'Drop';
          break;
        case MessageType.Capture:
          type = 'Capture';
          break;
        case MessageType.Trace:
          type = 'Trace';
          sub = TRACE_POINT_NAMES[(f.event_type?.sub_type ?? 0) & 0xff] ?? '';
          break;
        case MessageType.PolicyVerdict:
          type = 'PolicyVerdict';
          break;
        default:
          type = 'Unknown';
          sub = String(t);
      }
      flows.inc([flowProtocol(f), type, sub, f.verdict ?? 'VERDICT_UNKNOWN', ...ctx.values(f)]);
    },
    families: () => [flows],
  };
}

function dropHandler(ctx: MetricContext): Handler {
  const drops = new Counter('hubble_drop_total', 'Number of drops', [
    ...ctx.labelNames,
    'reason',
    'protocol',
  ]);
  return {
    add(f) {
      if (f.verdict !== 'DROPPED') return;
      drops.inc([...ctx.values(f), f.drop_reason_desc ?? 'DROP_REASON_UNKNOWN', flowProtocol(f)]);
    },
    families: () => [drops],
  };
}

function tcpHandler(ctx: MetricContext): Handler {
  const tcp = new Counter('hubble_tcp_flags_total', 'TCP flag occurrences', [
    'flag',
    'family',
    ...ctx.labelNames,
  ]);
  return {
    add(f) {
      const l4 = f.l4;
      if (!forwarded(f) || !f.IP || !l4 || !('TCP' in l4) || !l4.TCP.flags) return;
      const flags = l4.TCP.flags;
      const rest = [f.IP.ipVersion ?? 'IP_NOT_USED', ...ctx.values(f)];
      if (flags.FIN) tcp.inc(['FIN', ...rest]);
      if (flags.SYN) tcp.inc([flags.ACK ? 'SYN-ACK' : 'SYN', ...rest]);
      if (flags.RST) tcp.inc(['RST', ...rest]);
    },
    families: () => [tcp],
  };
}

function portHandler(ctx: MetricContext): Handler {
  const ports = new Counter(
    'hubble_port_distribution_total',
    'Numbers of packets distributed by destination port',
    ['protocol', 'port', ...ctx.labelNames],
  );
  return {
    add(f) {
      // A flow not known to be a request tells nothing about the service port.
      const l4 = f.l4;
      if (!forwarded(f) || !l4 || f.is_reply !== false) return;
      const ctxv = ctx.values(f);
      if ('TCP' in l4) ports.inc(['TCP', String(l4.TCP.destination_port ?? 0), ...ctxv]);
      else if ('UDP' in l4) ports.inc(['UDP', String(l4.UDP.destination_port ?? 0), ...ctxv]);
      else if ('SCTP' in l4) ports.inc(['SCTP', String(l4.SCTP.destination_port ?? 0), ...ctxv]);
      else if ('ICMPv4' in l4) ports.inc(['ICMPv4', '0', ...ctxv]);
      else if ('ICMPv6' in l4) ports.inc(['ICMPv6', '0', ...ctxv]);
    },
    families: () => [ports],
  };
}

function icmpHandler(ctx: MetricContext): Handler {
  const icmp = new Counter('hubble_icmp_total', 'Number of ICMP messages', [
    'family',
    'type',
    ...ctx.labelNames,
  ]);
  return {
    add(f) {
      const l4 = f.l4;
      if (!l4) return;
      if ('ICMPv4' in l4)
        icmp.inc(['IPv4', icmpTypeName(false, l4.ICMPv4.type ?? 0, l4.ICMPv4.code ?? 0), ...ctx.values(f)]);
      else if ('ICMPv6' in l4)
        icmp.inc(['IPv6', icmpTypeName(true, l4.ICMPv6.type ?? 0, l4.ICMPv6.code ?? 0), ...ctx.values(f)]);
    },
    families: () => [icmp],
  };
}

function dnsHandler(ctx: MetricContext, options: Readonly<Record<string, string>>): Handler {
  const has = (o: string) => Object.keys(options).some((k) => k.toLowerCase() === o.toLowerCase());
  const withQuery = has('query');
  const ignoreAAAA = has('ignoreAAAA');
  const q = withQuery ? ['query'] : [];
  const common = [...ctx.labelNames, 'rcode', 'qtypes', 'ips_returned', ...q];
  const queries = new Counter('hubble_dns_queries_total', 'Number of DNS queries observed', common);
  const responses = new Counter('hubble_dns_responses_total', 'Number of DNS responses observed', common);
  const types = new Counter('hubble_dns_response_types_total', 'Number of DNS response types', [
    ...ctx.labelNames,
    'type',
    'qtypes',
    ...q,
  ]);
  return {
    add(f) {
      const dns = f.l7?.dns;
      if (!dns) return;
      const qtypes = dns.qtypes ?? [];
      if (ignoreAAAA && qtypes.length === 1 && qtypes[0] === 'AAAA') return;
      const c = ctx.values(f);
      const qt = qtypes.join(',');
      const ips = String(dns.ips?.length ?? 0);
      const query = withQuery ? [dns.query ?? ''] : [];
      if (f.verdict === 'DROPPED') queries.inc([...c, 'Policy denied', qt, ips, ...query]);
      else if (!f.is_reply) queries.inc([...c, '', qt, ips, ...query]);
      else {
        responses.inc([...c, DNS_RCODE_NAMES[dns.rcode ?? 0] ?? '', qt, ips, ...query]);
        for (const t of dns.rrtypes ?? []) types.inc([...c, t, qt, ...query]);
      }
    },
    families: () => [queries, responses, types],
  };
}

function httpHandler(ctx: MetricContext, v2: boolean): Handler {
  const requests = new Counter('hubble_http_requests_total', 'Count of HTTP requests', [
    ...ctx.labelNames,
    'method',
    'protocol',
    ...(v2 ? ['status'] : []),
    'reporter',
  ]);
  const responses = new Counter('hubble_http_responses_total', 'Count of HTTP responses', [
    ...ctx.labelNames,
    'method',
    'protocol',
    'status',
    'reporter',
  ]);
  const duration = new Histogram(
    'hubble_http_request_duration_seconds',
    'Quantiles of HTTP request duration in seconds',
    [...ctx.labelNames, 'method', 'reporter'],
  );
  return {
    add(f) {
      const l7 = f.l7;
      const h = l7?.http;
      if (!l7 || !h) return;
      const d = f.traffic_direction;
      const reporter = d === 'EGRESS' ? 'client' : d === 'INGRESS' ? 'server' : 'unknown';
      const method = h.method ?? '';
      const seconds = Number(l7.latency_ns ?? 0) / 1e9;
      if (v2) {
        // One series per exchange, counted at the response and labelled as the request.
        if (l7.type !== 'RESPONSE') return;
        const c = ctx.values(f, true);
        requests.inc([...c, method, h.protocol ?? '', String(h.code ?? 0), reporter]);
        duration.observe([...c, method, reporter], seconds);
        return;
      }
      if (l7.type === 'REQUEST') requests.inc([...ctx.values(f), method, h.protocol ?? '', reporter]);
      else if (l7.type === 'RESPONSE') {
        const c = ctx.values(f);
        responses.inc([...c, method, h.protocol ?? '', String(h.code ?? 0), reporter]);
        duration.observe([...c, method, reporter], seconds);
      }
    },
    families: () => (v2 ? [requests, duration] : [requests, responses, duration]),
  };
}

function handlerFor(c: MetricConfig): Handler {
  const ctx = new MetricContext(c.options, `hubble metric ${c.name}`);
  switch (c.name) {
    case 'flow':
      return flowHandler(ctx);
    case 'drop':
      return dropHandler(ctx);
    case 'tcp':
      return tcpHandler(ctx);
    case 'port-distribution':
      return portHandler(ctx);
    case 'icmp':
      return icmpHandler(ctx);
    case 'dns':
      return dnsHandler(ctx, c.options);
    case 'http':
      return httpHandler(ctx, false);
    case 'httpV2':
      return httpHandler(ctx, true);
  }
}

/** The lost-event counter's `source` label: the enum name in lower case, as Hubble has it. */
const LOST_SOURCES = (Object.keys(LOST_EVENT_SOURCES) as LostEventSource[]).filter(
  (s) => s !== 'UNKNOWN_LOST_EVENT_SOURCE',
);

/** Hubble's metrics over the flows `add` is given, for the enabled metrics. */
export class HubbleMetrics {
  readonly configs: readonly MetricConfig[];
  readonly #handlers: Handler[];
  readonly #lost = new Counter('hubble_lost_events_total', 'Number of lost events', ['source']);
  /** Where lost events are counted (the flow ring); read at render time. */
  lostSource: (() => Readonly<Record<LostEventSource, number>>) | undefined;

  /** Metric names (all of them by default) or parsed entries with options. */
  constructor(enabled: Iterable<MetricName | MetricConfig> = METRIC_NAMES.filter((n) => n !== 'httpV2')) {
    this.configs = [...enabled].map((e) => (typeof e === 'string' ? { name: e, options: {} } : e));
    this.#handlers = this.configs.map(handlerFor);
  }

  add(f: Flow): void {
    for (const h of this.#handlers) h.add(f);
  }

  /** Events lost outside the ring (its own losses come from `lostSource`). */
  lost(source: LostEventSource, n: number): void {
    this.#lost.inc([source.toLowerCase()], n);
  }

  /** The exposition text; `extra` carries the agent's own metrics. */
  render(extra = ''): string {
    const lost = new Counter('hubble_lost_events_total', 'Number of lost events', ['source']);
    const counted = this.lostSource?.();
    for (const s of LOST_SOURCES) {
      const l = s.toLowerCase();
      lost.set([l], this.#lost.get([l]) + (counted?.[s] ?? 0));
    }
    const parts = [lost.render()];
    for (const h of this.#handlers) for (const fam of h.families()) parts.push(fam.render());
    return parts.join('') + extra;
  }
}
