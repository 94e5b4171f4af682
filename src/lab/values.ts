/**
 * Install values for the lab, as the tutorial gives them to Helm: `-f values.yaml` files
 * and `--set key=value` overrides, merged in order. Every key is accounted for: what the
 * lab implements, what does not apply to a lab (and why), and what Hypha does not
 * implement yet. None is silently ignored.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { HTTP_PROXY_ENGINES, type HttpProxyEngine, MAX_WORKERS } from '../agent/l7.js';
import { UsageError, ValidationError } from '../errors.js';
import { parseMetricsConfig } from '../hubble/metrics.js';

export type Values = Record<string, unknown>;

export type KeyStatus =
  | { key: string; state: 'applied'; note: string }
  | { key: string; state: 'not-applicable'; note: string }
  | { key: string; state: 'not-supported'; note: string };

/** Keys by dotted path (list values are one key). */
const KNOWN: Record<string, { state: KeyStatus['state']; note: string }> = {
  'ipam.mode': { state: 'applied', note: 'kubernetes: pod CIDRs come from the Node objects' },
  k8sServiceHost: { state: 'not-applicable', note: "the lab's agents use the lab API server's address" },
  k8sServicePort: { state: 'not-applicable', note: "the lab's agents use the lab API server's port" },
  'operator.replicas': { state: 'not-applicable', note: 'the lab runs its controllers in one process' },
  'bgpControlPlane.enabled': { state: 'applied', note: 'false: no BGP (true is not supported)' },
  kubeProxyReplacement: {
    state: 'applied',
    note: 'services translated by the agents in eBPF; there is no kube-proxy',
  },
  'hubble.enabled': {
    state: 'applied',
    note: 'flows on every agent: hypha observe, the Observer gRPC API on :4244',
  },
  'hubble.relay.enabled': { state: 'applied', note: 'the relay on 127.0.0.1:4245' },
  'hubble.ui.enabled': {
    state: 'applied',
    note: 'the service map and flows on http://127.0.0.1:12000 (hypha ui), through the relay',
  },
  'hubble.metrics.enabled': {
    state: 'applied',
    note: "on each node's address at :9965, with Hubble's options (sourceContext, labelsContext...); targets in <data-dir>/prometheus-targets.json",
  },
  'encryption.enabled': { state: 'not-supported', note: 'WireGuard encryption is not implemented yet' },
  'encryption.type': { state: 'not-supported', note: 'WireGuard encryption is not implemented yet' },
  'egressGateway.enabled': { state: 'not-supported', note: 'the egress gateway is not implemented yet' },
  'cluster.name': { state: 'applied', note: 'the lab cluster name' },
  'dnsProxy.minTtl': { state: 'applied', note: "the agents' --tofqdns-min-ttl (seconds)" },
  'httpProxy.workers': {
    state: 'applied',
    note: "Hypha's: L7 HTTP proxy processes per node, the agents' --http-proxy-workers",
  },
  'httpProxy.engine': {
    state: 'applied',
    note: "Hypha's: what the HTTP proxy workers run (native or node), the agents' --http-proxy-engine",
  },
};

function setPath(v: Values, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = v;
  parts.slice(0, -1).forEach((p) => {
    const next = cur[p];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[p] = {};
    cur = cur[p] as Values;
  });
  cur[parts[parts.length - 1]!] = value;
}

/** A `--set` value as Helm reads it: true/false, numbers, `{a,b}` lists, else a string. */
function scalar(raw: string): unknown {
  if (raw === 'true' || raw === 'false') return raw === 'true';
  if (/^-?\d+$/.test(raw)) return Number(raw);
  if (/^\{.*\}$/.test(raw)) return raw.slice(1, -1).split(',').filter(Boolean).map(scalar);
  return raw;
}

function merge(into: Values, from: Values): void {
  for (const [k, v] of Object.entries(from)) {
    const cur = into[k];
    if (
      typeof v === 'object' &&
      v !== null &&
      !Array.isArray(v) &&
      typeof cur === 'object' &&
      cur !== null &&
      !Array.isArray(cur)
    )
      merge(cur as Values, v as Values);
    else into[k] = v;
  }
}

export function loadValues(files: readonly string[], sets: readonly string[]): Values {
  const v: Values = {};
  for (const f of files) {
    let doc: unknown;
    try {
      doc = parse(readFileSync(f, 'utf8'));
    } catch (err) {
      throw new UsageError(`-f ${f}: ${(err as Error).message}`);
    }
    if (doc === null || doc === undefined) continue;
    if (typeof doc !== 'object' || Array.isArray(doc))
      throw new UsageError(`-f ${f}: a values file is a mapping of keys`);
    merge(v, doc as Values);
  }
  for (const s of sets) {
    const m = /^([A-Za-z0-9_.-]+)=(.*)$/.exec(s);
    if (!m) throw new UsageError(`--set ${s}: expected key=value`);
    setPath(v, m[1]!, scalar(m[2]!));
  }
  return v;
}

function leaves(v: Values, prefix = ''): [string, unknown][] {
  return Object.entries(v).flatMap(([k, x]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    return typeof x === 'object' && x !== null && !Array.isArray(x) ? leaves(x as Values, key) : [[key, x]];
  });
}

/** What the lab does with each key; throws for a value it cannot honour. */
export function reviewValues(v: Values): KeyStatus[] {
  return leaves(v).map(([key, value]) => {
    const known = KNOWN[key];
    if (key === 'bgpControlPlane.enabled' && value === true)
      return { key, state: 'not-supported', note: 'BGP is not implemented' };
    if (key === 'ipam.mode' && value !== 'kubernetes' && value !== 'cluster-pool')
      return {
        key,
        state: 'not-supported',
        note: `ipam.mode ${String(value)}: the lab does kubernetes (and cluster-pool alike)`,
      };
    if (key === 'hubble.metrics.enabled' && Array.isArray(value)) {
      try {
        parseMetricsConfig(value.map(String));
      } catch (err) {
        if (err instanceof ValidationError) throw new UsageError(err.message, { cause: err });
        throw err;
      }
    }
    if (key === 'dnsProxy.minTtl' && !(typeof value === 'number' && Number.isInteger(value) && value >= 0))
      throw new UsageError(`dnsProxy.minTtl: ${String(value)} is not a whole number of seconds`);
    if (
      key === 'httpProxy.workers' &&
      !(typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= MAX_WORKERS)
    )
      throw new UsageError(
        `httpProxy.workers: ${String(value)} is not a whole number from 1 to ${MAX_WORKERS}`,
      );
    if (key === 'httpProxy.engine' && !HTTP_PROXY_ENGINES.includes(value as HttpProxyEngine))
      throw new UsageError(`httpProxy.engine: ${String(value)} is not ${HTTP_PROXY_ENGINES.join(' or ')}`);
    if ((key.endsWith('.enabled') || key === 'kubeProxyReplacement') && value === false)
      return { key, state: 'applied', note: 'off' };
    if (known) return { key, ...known };
    return { key, state: 'not-supported', note: 'Hypha does not know this key' };
  });
}
