/**
 * `hubble observe` command lines to a GetFlowsRequest and printer options, with the hubble
 * CLI's semantics: a flag without from/to (`--pod`, `--ip`, `--label`, `--namespace`, ...)
 * matches either side, so it yields two whitelist filters (source, destination); values
 * of one flag are alternatives, different flags must all match; `--not` sends the next
 * filter flag to the blacklist. Errors are UsageErrors that name the flag.
 */
import { UsageError, ValidationError } from '../errors.js';
import { compileFilter, type FlowFilter, type GetFlowsRequest } from './filter.js';
import {
  DROP_REASONS,
  type DropReason,
  formatTimestamp,
  MESSAGE_TYPE_NAMES,
  MessageType,
  RESERVED_IDENTITY_NAMES,
  type TCPFlags,
  TRACE_POINT_NAMES,
  VERDICTS,
  type Verdict,
  type Workload,
} from './flow.js';
import {
  OUTPUT_FORMATS,
  type OutputFormat,
  type PrinterOptions,
  TIME_FORMATS,
  type TimeFormat,
} from './printer.js';

export interface ObserveArgs extends GetFlowsRequest {
  printer: PrinterOptions & { output: OutputFormat };
  /** --server */
  server?: string;
  /** --print-raw-filters: print the filters and exit. */
  printRawFilters: boolean;
}

/** Flows printed when nothing selects a number (the CLI's default). */
export const DEFAULT_FLOW_COUNT = 20;

type FlagKind = 'filter' | 'filter-noopt' | 'bool' | 'value' | 'uint';

interface FlagSpec {
  kind: FlagKind;
  short?: string;
}

const FILTER_FLAGS = [
  'uuid',
  'node-name',
  'node-label',
  'protocol',
  'tcp-flags',
  'type',
  'verdict',
  'drop-reason-desc',
  'http-status',
  'http-method',
  'http-path',
  'http-url',
  'http-header',
  'from-fqdn',
  'fqdn',
  'to-fqdn',
  'from-ip',
  'ip',
  'to-ip',
  'ip-version',
  'from-pod',
  'pod',
  'to-pod',
  'from-namespace',
  'namespace',
  'to-namespace',
  'from-label',
  'label',
  'to-label',
  'from-service',
  'service',
  'to-service',
  'from-port',
  'port',
  'to-port',
  'from-workload',
  'workload',
  'to-workload',
  'from-identity',
  'identity',
  'to-identity',
  'from-cluster',
  'cluster',
  'to-cluster',
  'traffic-direction',
  'interface',
] as const;
const NOOPT_FILTER_FLAGS = [
  'not',
  'ipv4',
  'ipv6',
  'all-namespaces',
  'from-all-namespaces',
  'to-all-namespaces',
  'encrypted',
  'unencrypted',
] as const;

const FLAGS: Record<string, FlagSpec> = {
  ...Object.fromEntries(FILTER_FLAGS.map((f) => [f, { kind: 'filter' as const }])),
  ...Object.fromEntries(NOOPT_FILTER_FLAGS.map((f) => [f, { kind: 'filter-noopt' as const }])),
  type: { kind: 'filter', short: 't' },
  namespace: { kind: 'filter', short: 'n' },
  label: { kind: 'filter', short: 'l' },
  ipv4: { kind: 'filter-noopt', short: '4' },
  ipv6: { kind: 'filter-noopt', short: '6' },
  'all-namespaces': { kind: 'filter-noopt', short: 'A' },
  all: { kind: 'bool' },
  last: { kind: 'uint' },
  first: { kind: 'uint' },
  follow: { kind: 'bool', short: 'f' },
  since: { kind: 'value' },
  until: { kind: 'value' },
  output: { kind: 'value', short: 'o' },
  'time-format': { kind: 'value' },
  'print-node-name': { kind: 'bool' },
  'print-policy-names': { kind: 'bool' },
  numeric: { kind: 'bool' },
  'ip-translation': { kind: 'bool' },
  color: { kind: 'value' },
  'silent-errors': { kind: 'bool', short: 's' },
  'print-raw-filters': { kind: 'bool' },
  allowlist: { kind: 'value' },
  denylist: { kind: 'value' },
  server: { kind: 'value' },
};

const SHORT: Record<string, string> = Object.fromEntries(
  Object.entries(FLAGS)
    .filter(([, s]) => s.short)
    .map(([n, s]) => [s.short!, n]),
);

/** Flags that may not be combined within the whitelist (or within the blacklist). */
const CONFLICTS: string[][] = [
  [
    'from-fqdn',
    'from-ip',
    'ip',
    'fqdn',
    'from-namespace',
    'namespace',
    'from-all-namespaces',
    'all-namespaces',
  ],
  ['from-fqdn', 'from-ip', 'ip', 'fqdn', 'from-pod', 'pod'],
  ['to-fqdn', 'to-ip', 'ip', 'fqdn', 'to-namespace', 'namespace', 'to-all-namespaces', 'all-namespaces'],
  ['to-fqdn', 'to-ip', 'ip', 'fqdn', 'to-pod', 'pod'],
  ['to-pod', 'namespace', 'all-namespaces'],
  ['from-pod', 'namespace', 'all-namespaces'],
  ['to-service', 'namespace', 'all-namespaces'],
  ['from-service', 'namespace', 'all-namespaces'],
  ['label', 'from-label'],
  ['label', 'to-label'],
  ['service', 'from-service'],
  ['service', 'to-service'],
  ['port', 'to-port'],
  ['port', 'from-port'],
  ['identity', 'to-identity'],
  ['identity', 'from-identity'],
  ['workload', 'to-workload'],
  ['workload', 'from-workload'],
  ['encrypted', 'unencrypted'],
];

type ListKey = {
  [K in keyof FlowFilter]-?: NonNullable<FlowFilter[K]> extends readonly unknown[] ? K : never;
}[keyof FlowFilter];
type Item<K extends ListKey> = NonNullable<FlowFilter[K]>[number];

/** One side of the command line (whitelist or blacklist): Hubble's filterTracker. */
class Tracker {
  left: FlowFilter | undefined;
  right: FlowFilter | undefined;
  readonly ns: string[] = [];
  readonly srcNs: string[] = [];
  readonly dstNs: string[] = [];
  readonly changed: string[] = [];

  push<K extends ListKey>(side: 'both' | 'left' | 'right', key: K, v: Item<K>): void {
    if (side !== 'right') this.left = appendTo(this.left ?? {}, key, v);
    if (side !== 'left') this.right = appendTo(this.right ?? {}, key, v);
  }

  filters(): FlowFilter[] {
    if (!this.left && !this.right && !this.ns.length && !this.srcNs.length && !this.dstNs.length) return [];
    const left = this.left ?? {};
    const right = this.right ?? {};
    if (this.dstNs.length) {
      applyDest(left, this.dstNs);
      applyDest(right, this.dstNs);
    }
    if (this.srcNs.length) {
      applySrc(left, this.srcNs);
      applySrc(right, this.srcNs);
    }
    if (this.ns.length) {
      applySrc(left, this.ns);
      applyDest(right, this.ns);
    }
    return sameFilter(left, right) ? [left] : [left, right];
  }

  checkNamespaces(): void {
    for (const ff of [this.left, this.right]) {
      if (!ff) continue;
      conflicts(this.ns, ff.source_pod);
      conflicts(this.ns, ff.source_service);
      conflicts(this.ns, ff.destination_pod);
      conflicts(this.ns, ff.destination_service);
      conflicts(this.srcNs, ff.source_pod);
      conflicts(this.srcNs, ff.source_service);
      conflicts(this.dstNs, ff.destination_pod);
      conflicts(this.dstNs, ff.destination_service);
      inconsistent(ff.source_pod, ff.source_service);
      inconsistent(ff.destination_pod, ff.destination_service);
    }
  }
}

function appendTo<K extends ListKey>(ff: FlowFilter, key: K, v: Item<K>): FlowFilter {
  const list = (ff[key] ?? []) as Item<K>[];
  (ff as Record<string, unknown>)[key] = [...list, v];
  return ff;
}

function sameFilter(a: FlowFilter, b: FlowFilter): boolean {
  const norm = (f: FlowFilter) =>
    JSON.stringify(
      Object.entries(f)
        .filter(([, v]) => !Array.isArray(v) || v.length > 0)
        .sort(([x], [y]) => x.localeCompare(y)),
    );
  return norm(a) === norm(b);
}

function namespaceOf(name: string): string {
  const parts = name.split('/');
  return parts.length > 1 ? (parts[0] ?? '') : '';
}

function withNamespaces(names: string[] | undefined, ns: readonly string[]): string[] | undefined {
  if (!names || names.length === 0 || ns.length === 0) return names;
  return names.flatMap((n) => (n.includes('/') ? [n] : ns.map((s) => `${s}/${n}`)));
}

function applySrc(ff: FlowFilter, ns: readonly string[]): void {
  if (!ff.source_pod?.length && !ff.source_service?.length) ff.source_pod = [''];
  ff.source_pod = withNamespaces(ff.source_pod, ns);
  ff.source_service = withNamespaces(ff.source_service, ns);
  if (!ff.source_service?.length) delete ff.source_service;
}

function applyDest(ff: FlowFilter, ns: readonly string[]): void {
  if (!ff.destination_pod?.length && !ff.destination_service?.length) ff.destination_pod = [''];
  ff.destination_pod = withNamespaces(ff.destination_pod, ns);
  ff.destination_service = withNamespaces(ff.destination_service, ns);
  if (!ff.destination_service?.length) delete ff.destination_service;
}

function conflicts(namespaces: readonly string[], names: readonly string[] | undefined): void {
  for (const ns of namespaces) {
    for (const name of names ?? []) {
      const nn = namespaceOf(name);
      if (nn !== '' && nn !== ns)
        throw new UsageError(`namespace conflict: "${ns}" does not contain "${name}"`);
    }
  }
}

function inconsistent(pods: readonly string[] | undefined, services: readonly string[] | undefined): void {
  for (const pod of pods ?? []) {
    const podNs = namespaceOf(pod);
    if (podNs === '') continue;
    for (const svc of services ?? []) {
      if (namespaceOf(svc) !== podNs) {
        throw new UsageError(`namespace of service "${svc}" conflicts with pod namespace "${podNs}"`);
      }
    }
  }
}

const IDENTITY_BY_NAME: Record<string, number> = Object.fromEntries(
  Object.entries(RESERVED_IDENTITY_NAMES)
    .filter(([id]) => id !== '0')
    .map(([id, name]) => [name, Number(id)]),
);

function parseIdentity(flag: string, v: string): number {
  const reserved = IDENTITY_BY_NAME[v];
  if (reserved !== undefined) return reserved;
  if (/^\d+$/.test(v) && Number(v) <= 0xffffffff) return Number(v);
  throw new UsageError(
    `invalid --${flag} value "${v}": expected one of ${Object.keys(IDENTITY_BY_NAME).join(', ')} or a number`,
  );
}

function parseWorkload(v: string): Workload {
  if (v === '') return {};
  const slash = v.indexOf('/');
  if (slash < 0) return { name: v };
  const kind = v.slice(0, slash);
  const name = v.slice(slash + 1);
  return { ...(name ? { name } : {}), ...(kind ? { kind } : {}) };
}

function parseTcpFlags(flag: string, v: string): TCPFlags {
  const flags: TCPFlags = {};
  for (const f of v.split(',')) {
    const n = f.toUpperCase();
    if (!['SYN', 'FIN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'].includes(n)) {
      throw new UsageError(`invalid --${flag} value "${v}": unknown TCP flag "${f}"`);
    }
    flags[n as keyof TCPFlags] = true;
  }
  return flags;
}

function parseEventType(
  flag: string,
  v: string,
): { type: number; match_sub_type?: boolean; sub_type?: number } {
  const colon = v.indexOf(':');
  const typeName = colon < 0 ? v : v.slice(0, colon);
  const subName = colon < 0 ? undefined : v.slice(colon + 1);
  let type = MESSAGE_TYPE_NAMES[typeName];
  if (type === undefined) {
    if (!/^\d+$/.test(typeName)) {
      throw new UsageError(
        `invalid --${flag} value "${v}": "${typeName}" is not one of ${Object.keys(MESSAGE_TYPE_NAMES).join(', ')} or a number`,
      );
    }
    type = Number(typeName);
  }
  if (subName === undefined) return { type };
  let sub: number | undefined;
  if (type === MessageType.Trace) {
    const e = Object.entries(TRACE_POINT_NAMES).find(([, n]) => n === subName);
    if (e) sub = Number(e[0]);
  }
  if (sub === undefined) {
    if (!/^\d+$/.test(subName)) {
      throw new UsageError(`invalid --${flag} value "${v}": unknown sub-type "${subName}"`);
    }
    sub = Number(subName);
  }
  return { type, match_sub_type: true, ...(sub ? { sub_type: sub } : {}) };
}

function ipVersion(v: string): 'IPv4' | 'IPv6' | 'IP_NOT_USED' {
  switch (v.toLowerCase()) {
    case '4':
    case 'v4':
    case 'ipv4':
    case 'ip4':
      return 'IPv4';
    case '6':
    case 'v6':
    case 'ipv6':
    case 'ip6':
      return 'IPv6';
    default:
      return 'IP_NOT_USED';
  }
}

/** Checks a value the server would reject (ports, addresses, patterns, selectors) now, naming the flag. */
function check(flag: string, v: string, ff: FlowFilter): void {
  try {
    compileFilter(ff);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    throw new UsageError(`invalid --${flag} value "${v}": ${err.reason}`, { cause: err });
  }
}

type Setter = (t: Tracker, v: string, flag: string) => void;

/** `key` on both filters (a from-/to- flag, or one that is not about a side). */
const both =
  (key: ListKey): Setter =>
  (t, v, flag) => {
    check(flag, v, { [key]: [v] });
    t.push('both', key, v as never);
  };

/** `src` on the first filter, `dst` on the second: the flag matches either side. */
const either =
  (src: ListKey, dst: ListKey): Setter =>
  (t, v, flag) => {
    check(flag, v, { [src]: [v] });
    t.push('left', src, v as never);
    t.push('right', dst, v as never);
  };

const SETTERS: Record<string, Setter> = {
  uuid: both('uuid'),
  fqdn: either('source_fqdn', 'destination_fqdn'),
  'from-fqdn': both('source_fqdn'),
  'to-fqdn': both('destination_fqdn'),
  pod: either('source_pod', 'destination_pod'),
  'from-pod': both('source_pod'),
  'to-pod': both('destination_pod'),
  ip: either('source_ip', 'destination_ip'),
  'from-ip': both('source_ip'),
  'to-ip': both('destination_ip'),
  ipv4: (t) => t.push('both', 'ip_version', 'IPv4'),
  ipv6: (t) => t.push('both', 'ip_version', 'IPv6'),
  'ip-version': (t, v) => t.push('both', 'ip_version', ipVersion(v)),
  label: either('source_label', 'destination_label'),
  'from-label': both('source_label'),
  'to-label': both('destination_label'),
  namespace: (t, v) => t.ns.push(v),
  'from-namespace': (t, v) => t.srcNs.push(v),
  'to-namespace': (t, v) => t.dstNs.push(v),
  'all-namespaces': (t) => t.ns.push(''),
  'from-all-namespaces': (t) => t.srcNs.push(''),
  'to-all-namespaces': (t) => t.dstNs.push(''),
  service: either('source_service', 'destination_service'),
  'from-service': both('source_service'),
  'to-service': both('destination_service'),
  port: either('source_port', 'destination_port'),
  'from-port': both('source_port'),
  'to-port': both('destination_port'),
  verdict: (t, v) => {
    if (!(v in VERDICTS)) {
      throw new UsageError(
        `invalid --verdict value "${v}": expected one of ${Object.keys(VERDICTS).slice(1).join(', ')}`,
      );
    }
    t.push('both', 'verdict', v as Verdict);
  },
  'drop-reason-desc': (t, v) => {
    if (v === '') throw new UsageError('empty --drop-reason-desc value');
    if (!(v in DROP_REASONS)) throw new UsageError(`invalid --drop-reason-desc value "${v}"`);
    t.push('both', 'drop_reason_desc', v as DropReason);
  },
  'http-status': both('http_status_code'),
  'http-method': both('http_method'),
  'http-path': both('http_path'),
  'http-url': both('http_url'),
  'http-header': (t, v) => {
    const colon = v.indexOf(':');
    if (colon < 0) throw new UsageError(`invalid --http-header value "${v}": expected name:value`);
    t.push('both', 'http_header', { key: v.slice(0, colon), value: v.slice(colon + 1) });
  },
  type: (t, v, flag) => t.push('both', 'event_type', parseEventType(flag, v)),
  protocol: both('protocol'),
  workload: (t, v) => {
    t.push('left', 'source_workload', parseWorkload(v));
    t.push('right', 'destination_workload', parseWorkload(v));
  },
  'from-workload': (t, v) => t.push('both', 'source_workload', parseWorkload(v)),
  'to-workload': (t, v) => t.push('both', 'destination_workload', parseWorkload(v)),
  identity: (t, v, flag) => {
    const id = parseIdentity(flag, v);
    t.push('left', 'source_identity', id);
    t.push('right', 'destination_identity', id);
  },
  'from-identity': (t, v, flag) => t.push('both', 'source_identity', parseIdentity(flag, v)),
  'to-identity': (t, v, flag) => t.push('both', 'destination_identity', parseIdentity(flag, v)),
  'node-name': both('node_name'),
  'node-label': both('node_labels'),
  cluster: either('source_cluster_name', 'destination_cluster_name'),
  'from-cluster': both('source_cluster_name'),
  'to-cluster': both('destination_cluster_name'),
  'tcp-flags': (t, v, flag) => t.push('both', 'tcp_flags', parseTcpFlags(flag, v)),
  'traffic-direction': (t, v) => {
    const d = v.toLowerCase();
    if (d !== 'ingress' && d !== 'egress') {
      throw new UsageError(`invalid --traffic-direction value "${v}": expected ingress or egress`);
    }
    t.push('both', 'traffic_direction', d === 'ingress' ? 'INGRESS' : 'EGRESS');
  },
  interface: (t, v) => t.push('both', 'interface', { name: v }),
  encrypted: (t) => t.push('both', 'encrypted', true),
  unencrypted: (t) => t.push('both', 'encrypted', false),
};

// ---------------------------------------------------------------- times

const DURATION_UNITS: Record<string, number> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  μs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's time.ParseDuration, in nanoseconds; undefined if it is not a duration. */
export function parseDuration(s: string): number | undefined {
  const m = /^([-+]?)(.+)$/.exec(s);
  if (!m) return undefined;
  const body = m[2]!;
  if (body === '0') return 0;
  let total = 0;
  let rest = body;
  while (rest.length > 0) {
    const part = /^(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)/.exec(rest);
    if (!part || part[1] === '' || part[1] === '.') return undefined;
    total += Number(part[1]) * DURATION_UNITS[part[2]!]!;
    rest = rest.slice(part[0].length);
  }
  return m[1] === '-' ? -total : total;
}

const MONTHS: Record<string, number> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
};

function zoneMinutes(z: string): number {
  if (z === 'Z' || z === 'z') return 0;
  const sign = z[0] === '-' ? -1 : 1;
  const digits = z.slice(1).replace(':', '');
  return sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4)));
}

/**
 * `--since`/`--until`: a duration back from now (`5m`, `1h30m`) or a time in one of the
 * CLI's layouts (2006-01-02, 2006-01-02T15Z07:00, 2006-01-02T15:04Z07:00, RFC 3339 with
 * any fraction, RFC 1123 with numeric zone). Nanoseconds since the epoch.
 */
export function parseTimeArg(s: string, nowMs = Date.now()): bigint | undefined {
  const d = parseDuration(s);
  if (d !== undefined) return BigInt(nowMs) * 1_000_000n - BigInt(Math.round(d));
  let m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (m) return BigInt(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) * 1_000_000n;
  m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?(Z|[+-]\d{2}:\d{2})$/.exec(
    s,
  );
  if (m) {
    const ms = Date.UTC(
      Number(m[1]),
      Number(m[2]) - 1,
      Number(m[3]),
      Number(m[4]),
      Number(m[5] ?? 0),
      Number(m[6] ?? 0),
    );
    const frac = BigInt((m[7] ?? '').padEnd(9, '0') || '0');
    return (BigInt(ms) - BigInt(zoneMinutes(m[8]!)) * 60_000n) * 1_000_000n + frac;
  }
  m = /^[A-Z][a-z]{2}, (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})$/.exec(s);
  if (m && MONTHS[m[2]!] !== undefined) {
    const ms = Date.UTC(Number(m[3]), MONTHS[m[2]!]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
    return (BigInt(ms) - BigInt(zoneMinutes(m[7]!)) * 60_000n) * 1_000_000n;
  }
  return undefined;
}

// ---------------------------------------------------------------- command line

interface Parsed {
  whitelist: Tracker;
  blacklist: Tracker;
  values: Map<string, string[]>;
}

function parseArgv(argv: readonly string[]): Parsed {
  const whitelist = new Tracker();
  const blacklist = new Tracker();
  const values = new Map<string, string[]>();
  let negate = false;

  const apply = (name: string, value: string | undefined, short: boolean) => {
    const spec = FLAGS[name];
    const shown = short ? `-${FLAGS[name]?.short}` : `--${name}`;
    if (!spec) throw new UsageError(`unknown flag: ${shown}`);
    if (spec.kind === 'filter' || spec.kind === 'filter-noopt') {
      const v = value ?? 'true';
      if (name === 'not') {
        if (negate) throw new UsageError('consecutive --not statements');
        negate = true;
        return;
      }
      const t = negate ? blacklist : whitelist;
      negate = false;
      if (!t.changed.includes(name)) {
        t.changed.push(name);
        for (const group of CONFLICTS) {
          if (!group.includes(name)) continue;
          const other = group.find((g) => g !== name && t.changed.includes(g));
          if (other) throw new UsageError(`filters --${name} and --${other} cannot be combined`);
        }
      }
      SETTERS[name]?.(t, v, name);
      t.checkNamespaces();
      return;
    }
    const list = values.get(name) ?? [];
    list.push(value ?? 'true');
    values.set(name, list);
  };

  const needsValue = (name: string) => {
    const k = FLAGS[name]?.kind;
    return k === 'filter' || k === 'value' || k === 'uint';
  };

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      if (i + 1 < argv.length) throw new UsageError(`unexpected argument "${argv[i + 1]}"`);
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      let value = eq < 0 ? undefined : a.slice(eq + 1);
      if (!FLAGS[name]) throw new UsageError(`unknown flag: --${name}`);
      if (value === undefined && needsValue(name)) {
        if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: --${name}`);
        value = argv[++i];
      }
      apply(name, value, false);
    } else if (a.startsWith('-') && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j]!;
        const name = SHORT[c];
        if (!name) throw new UsageError(`unknown shorthand flag: '${c}' in ${a}`);
        if (needsValue(name)) {
          let value = a.slice(j + 1);
          if (value.startsWith('=')) value = value.slice(1);
          if (value === '') {
            if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: '${c}' in -${c}`);
            value = argv[++i]!;
          }
          apply(name, value, true);
          break;
        }
        if (a[j + 1] === '=') {
          apply(name, a.slice(j + 2), true);
          break;
        }
        apply(name, undefined, true);
      }
    } else {
      throw new UsageError(`unexpected argument "${a}"`);
    }
  }
  if (negate) throw new UsageError('trailing --not found in the arguments');
  return { whitelist, blacklist, values };
}

function boolFlag(values: Map<string, string[]>, name: string, def = false): boolean {
  const v = values.get(name)?.at(-1);
  if (v === undefined) return def;
  const l = v.toLowerCase();
  if (['true', '1', 't'].includes(l)) return true;
  if (['false', '0', 'f'].includes(l)) return false;
  throw new UsageError(`invalid argument "${v}" for --${name}: expected true or false`);
}

function uintFlag(values: Map<string, string[]>, name: string): number {
  const v = values.get(name)?.at(-1);
  if (v === undefined) return 0;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new UsageError(`invalid argument "${v}" for --${name}: expected a non-negative integer`);
  }
  return Number(v);
}

function rawFilters(values: Map<string, string[]>, name: string): FlowFilter[] {
  const out: FlowFilter[] = [];
  for (const v of values.get(name) ?? []) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(v);
    } catch (err) {
      throw new UsageError(`invalid --${name} value: ${v} is not JSON`, { cause: err });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new UsageError(`invalid --${name} value: ${v} is not a FlowFilter object`);
    }
    try {
      compileFilter(parsed as FlowFilter, `--${name}`);
    } catch (err) {
      if (err instanceof ValidationError)
        throw new UsageError(`invalid --${name} value: ${err.message}`, { cause: err });
      throw err;
    }
    out.push(parsed as FlowFilter);
  }
  return out;
}

function timeFlag(values: Map<string, string[]>, name: string, nowMs: number): string | undefined {
  const v = values.get(name)?.at(-1);
  if (v === undefined || v === '') return undefined;
  const ns = parseTimeArg(v, nowMs);
  if (ns === undefined) {
    throw new UsageError(
      `invalid --${name} value "${v}": expected a duration (e.g. 30s, 5m, 1h30m) or a time (e.g. 2006-01-02, 2006-01-02T15:04:05Z07:00)`,
    );
  }
  return formatTimestamp(ns);
}

/** Parses `hubble observe` arguments (without the command words). */
export function parseObserveArgs(argv: readonly string[], nowMs = Date.now()): ObserveArgs {
  const { whitelist, blacklist, values } = parseArgv(argv);

  const follow = boolFlag(values, 'follow');
  const all = boolFlag(values, 'all');
  let last = uintFlag(values, 'last');
  const firstN = uintFlag(values, 'first');
  const first = firstN > 0;
  if (first && last > 0) throw new UsageError('cannot set both --first and --last');
  if (first && all) throw new UsageError('cannot set both --first and --all');
  if (first && follow) throw new UsageError('cannot set both --first and --follow');
  if (last > 0 && all) throw new UsageError('cannot set both --last and --all');

  const since = timeFlag(values, 'since', nowMs);
  // As the CLI: --until is ignored when following.
  const until = follow ? undefined : timeFlag(values, 'until', nowMs);
  if (since === undefined && until === undefined && !first) {
    if (all) last = Number.MAX_SAFE_INTEGER;
    else if (last === 0 && !follow) last = DEFAULT_FLOW_COUNT;
  }

  let output = (values.get('output')?.at(-1) ?? 'compact') as string;
  if (output === 'JSON') output = 'json';
  if (output === 'tab') output = 'table';
  if (!(OUTPUT_FORMATS as readonly string[]).includes(output))
    throw new UsageError(`invalid output format: ${output}`);
  if (output === 'table' && follow)
    throw new UsageError('table output format is not compatible with follow mode');

  const timeFormatArg = values.get('time-format')?.at(-1) ?? 'StampMilli';
  const timeFormat = TIME_FORMATS.find((t) => t.toLowerCase() === timeFormatArg.toLowerCase());
  if (!timeFormat) {
    throw new UsageError(
      `invalid --time-format value "${timeFormatArg}": expected one of ${TIME_FORMATS.join(', ')}`,
    );
  }
  const color = values.get('color')?.at(-1);
  if (color !== undefined && !['auto', 'always', 'never'].includes(color)) {
    throw new UsageError(`invalid --color value "${color}": expected auto, always or never`);
  }
  const numeric = boolFlag(values, 'numeric');

  const server = values.get('server')?.at(-1);
  return {
    number: first ? firstN : last,
    first,
    follow,
    whitelist: [...whitelist.filters(), ...rawFilters(values, 'allowlist')],
    blacklist: [...blacklist.filters(), ...rawFilters(values, 'denylist')],
    ...(since !== undefined ? { since } : {}),
    ...(until !== undefined ? { until } : {}),
    printer: {
      output: output as OutputFormat,
      timeFormat: timeFormat as TimeFormat,
      nodeName: boolFlag(values, 'print-node-name'),
      policyNames: boolFlag(values, 'print-policy-names'),
      ipTranslation: numeric ? false : boolFlag(values, 'ip-translation', true),
    },
    ...(server !== undefined ? { server } : {}),
    printRawFilters: boolFlag(values, 'print-raw-filters'),
  };
}
