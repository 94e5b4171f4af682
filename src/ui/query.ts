/**
 * The UI API's query strings. Flow filters are `hubble observe`'s flags as parameters
 * (`?namespace=production&verdict=DROPPED&pod=frontend`), parsed by the same code as the
 * CLI and compiled by filter.ts, so the UI selects exactly the flows `hubble observe`
 * would. On top: `q` (free text), `edge` and `node` (service-map ids), `limit`, `since`.
 * A parameter that is unknown, repeated where it cannot be, or malformed is a
 * ValidationError naming it.
 */
import { UsageError, ValidationError } from '../errors.js';
import {
  compileFilters,
  type Flow,
  type FlowPredicate,
  formatTimestamp,
  parseObserveArgs,
  parseTimeArg,
  parseTimestamp,
} from '../hubble/index.js';
import { type FlowRow, flowRow } from './map.js';

/** `hubble observe` filter flags accepted as parameters (their values as the CLI takes them). */
export const FILTER_PARAMS = [
  'pod',
  'from-pod',
  'to-pod',
  'label',
  'from-label',
  'to-label',
  'service',
  'from-service',
  'to-service',
  'workload',
  'from-workload',
  'to-workload',
  'identity',
  'from-identity',
  'to-identity',
  'ip',
  'from-ip',
  'to-ip',
  'fqdn',
  'from-fqdn',
  'to-fqdn',
  'port',
  'from-port',
  'to-port',
  'protocol',
  'verdict',
  'drop-reason-desc',
  'type',
  'traffic-direction',
  'http-status',
  'http-method',
  'http-path',
  'http-url',
  'node-name',
  'uuid',
  'tcp-flags',
  'from-namespace',
  'to-namespace',
  // Whole FlowFilters as JSON, for any field the flags above do not reach.
  'allowlist',
  'denylist',
] as const;

const SINGLE_PARAMS = ['namespace', 'q', 'edge', 'node', 'limit', 'since'] as const;

export const DEFAULT_LIMIT = 200;
export const MAX_LIMIT = 5000;

/** A parsed flow query: what a flow must match, and how many to return. */
export interface FlowQuery {
  /** '' for every namespace. */
  namespace: string;
  limit: number;
  /** Nanoseconds since the epoch, as an RFC 3339 string (flows' time format). */
  since?: string;
  /** The whole predicate: filters, namespace, edge, node, text. */
  matches(flow: Flow): boolean;
  /** As `matches`, for a flow whose row is already made. */
  matchesRow(flow: Flow, row: FlowRow): boolean;
}

const OBJECT = 'query';

export function parseFlowQuery(params: URLSearchParams, nowMs = Date.now()): FlowQuery {
  const known = new Set<string>([...FILTER_PARAMS, ...SINGLE_PARAMS]);
  for (const key of new Set(params.keys())) {
    if (!known.has(key))
      throw new ValidationError(
        OBJECT,
        key,
        `unknown parameter (filters: namespace, ${FILTER_PARAMS.join(', ')}; also q, edge, node, limit, since)`,
      );
    if ((SINGLE_PARAMS as readonly string[]).includes(key) && params.getAll(key).length > 1)
      throw new ValidationError(OBJECT, key, 'given more than once');
  }

  const namespace = params.get('namespace') ?? '';
  if (namespace !== '' && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace))
    throw new ValidationError(OBJECT, 'namespace', `"${namespace}" is not a namespace name`);

  const argv: string[] = [];
  if (namespace !== '') argv.push(`--namespace=${namespace}`);
  for (const key of FILTER_PARAMS) {
    for (const v of params.getAll(key)) {
      if (v === '') continue;
      argv.push(`--${key}=${v}`);
    }
  }
  let predicate: FlowPredicate;
  try {
    const req = parseObserveArgs(argv, nowMs);
    predicate = compileFilters(req.whitelist, req.blacklist);
  } catch (err) {
    if (err instanceof UsageError || err instanceof ValidationError) {
      const msg = err instanceof ValidationError ? err.reason : err.message;
      throw new ValidationError(OBJECT, paramOf(msg), msg.replace(/--([a-z-]+)/g, '$1'), { cause: err });
    }
    throw err;
  }

  const rawLimit = params.get('limit');
  let limit = DEFAULT_LIMIT;
  if (rawLimit !== null) {
    if (!/^\d+$/.test(rawLimit) || Number(rawLimit) < 1 || Number(rawLimit) > MAX_LIMIT)
      throw new ValidationError(
        OBJECT,
        'limit',
        `"${rawLimit}" is not a whole number from 1 to ${MAX_LIMIT}`,
      );
    limit = Number(rawLimit);
  }

  let since: string | undefined;
  let sinceNs: bigint | undefined;
  const rawSince = params.get('since');
  if (rawSince !== null && rawSince !== '') {
    const ns = parseTimeArg(rawSince, nowMs);
    if (ns === undefined)
      throw new ValidationError(
        OBJECT,
        'since',
        `"${rawSince}" is not a duration (30s, 5m, 1h) or a time (2006-01-02T15:04:05Z)`,
      );
    since = formatTimestamp(ns);
    sinceNs = ns;
  }
  const early = (f: Flow) => sinceNs !== undefined && (parseTimestamp(f.time ?? '') ?? 0n) < sinceNs;

  const text = (params.get('q') ?? '').trim().toLowerCase();
  if (text.length > 200) throw new ValidationError(OBJECT, 'q', 'longer than 200 characters');
  const edge = params.get('edge') || undefined;
  const node = params.get('node') || undefined;
  for (const [name, v] of [
    ['edge', edge],
    ['node', node],
  ] as const) {
    if (v !== undefined && v.length > 600)
      throw new ValidationError(OBJECT, name, 'longer than 600 characters');
  }
  if (edge !== undefined && !edge.includes('->'))
    throw new ValidationError(OBJECT, 'edge', `"${edge}" is not a map edge id (<source>-><target>)`);

  const matchesRow = (f: Flow, row: FlowRow): boolean => {
    if (early(f) || !predicate(f)) return false;
    if (edge !== undefined && row.edge !== edge) return false;
    if (node !== undefined && row.sourceNode !== node && row.destinationNode !== node) return false;
    if (text !== '' && !rowText(row).includes(text)) return false;
    return true;
  };
  const needsRow = edge !== undefined || node !== undefined || text !== '';
  return {
    namespace,
    limit,
    ...(since !== undefined ? { since } : {}),
    matchesRow,
    matches: (f) => {
      if (early(f) || !predicate(f)) return false;
      return needsRow ? matchesRow(f, rowFor(f)) : true;
    },
  };
}

const rows = new WeakMap<Flow, FlowRow>();

/** A flow's table row, made once per flow (stored flows are never changed). */
export function rowFor(f: Flow): FlowRow {
  let r = rows.get(f);
  if (!r) {
    r = flowRow(f);
    rows.set(f, r);
  }
  return r;
}

/** The parameter a CLI error message names (`--verdict` -> `verdict`), else `filters`. */
function paramOf(message: string): string {
  return /--([a-z-]+)/.exec(message)?.[1] ?? 'filters';
}

/** What free text searches: every column of the row, lower-cased. */
export function rowText(r: FlowRow): string {
  return [
    r.source,
    r.destination,
    r.verdict,
    r.dropReason,
    r.policy,
    r.l7,
    r.summary,
    r.type,
    r.node,
    r.protocol,
    r.port,
    r.sourceNode,
    r.destinationNode,
  ]
    .filter((x) => x !== undefined && x !== '')
    .join(' ')
    .toLowerCase();
}
