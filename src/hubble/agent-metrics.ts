/**
 * The agent's own metrics, next to Hubble's on :9965, in Cilium's names where Cilium has
 * them (so its dashboards and alerts apply): endpoints by state, BPF map pressure, policy
 * regeneration time, policies and identities; `hypha_*` for what Cilium has no name for.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { MapType, openPinnedRawMap } from '../bpf/index.js';
import { Counter, Gauge, Histogram } from './prometheus.js';

/** One pinned map's fill: entries over capacity. */
export interface MapUsage {
  name: string;
  entries: number;
  maxEntries: number;
}

/** What the agent reports at a scrape. */
export interface AgentSnapshot {
  /** Each endpoint's state, e.g. `ready`, `regenerating`, `not-ready`. */
  endpointStates: readonly string[];
  policies: number;
  identities: readonly number[];
  serviceFrontends: number;
  datapathEvents: number;
  flowBuildErrors: number;
  l7Errors: number;
  maps: readonly MapUsage[];
}

/** The states Cilium's endpoints go through that a Hypha endpoint can be in. */
const ENDPOINT_STATES = ['ready', 'regenerating', 'not-ready'];

/** Regenerations take microseconds to seconds: finer low buckets than client_golang's. */
const REGENERATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class AgentMetrics {
  readonly #regenerations = new Counter(
    'cilium_policy_regeneration_total',
    'Total number of successful policy regenerations',
    [],
  );
  readonly #regenerationTime = new Histogram(
    'cilium_policy_regeneration_time_stats_seconds',
    'Policy regeneration time stats labeled by the scope',
    ['scope'],
    REGENERATION_BUCKETS,
  );

  /** One policy change computed and written to the maps, in seconds. */
  observeRegeneration(seconds: number): void {
    this.#regenerations.inc();
    this.#regenerationTime.observe(['total'], seconds);
  }

  render(s: AgentSnapshot): string {
    const endpoint = new Gauge('cilium_endpoint', 'Number of endpoints managed by this agent', []);
    endpoint.set([], s.endpointStates.length);
    const state = new Gauge(
      'cilium_endpoint_state',
      'Count of all endpoints, tagged by different endpoint states',
      ['endpoint_state'],
    );
    for (const st of new Set([...ENDPOINT_STATES, ...s.endpointStates]))
      state.set([st], s.endpointStates.filter((x) => x === st).length);
    const policy = new Gauge('cilium_policy', 'Number of policies currently loaded', []);
    policy.set([], s.policies);
    const identity = new Gauge('cilium_identity', 'Number of identities currently allocated', ['type']);
    const types = { cluster_local: 0, node_local: 0, reserved: 0 };
    for (const id of s.identities) {
      if (id < 256) types.reserved++;
      else if (id >= 1 << 24) types.node_local++;
      else types.cluster_local++;
    }
    for (const [t, n] of Object.entries(types)) identity.set([t], n);
    const pressure = new Gauge('cilium_bpf_map_pressure', 'Fill percentage of map, tagged by map name', [
      'map_name',
    ]);
    for (const m of s.maps) if (m.maxEntries > 0) pressure.set([m.name], m.entries / m.maxEntries);
    const services = new Gauge('cilium_services', 'Number of service frontends in the load balancer', []);
    services.set([], s.serviceFrontends);
    const events = new Counter(
      'hypha_datapath_events_total',
      'Datapath events read from the ring buffer',
      [],
    );
    events.set([], s.datapathEvents);
    const buildErrors = new Counter(
      'hypha_flow_build_errors_total',
      'Datapath records and L7 events that could not become flows',
      ['source'],
    );
    buildErrors.set(['datapath'], s.flowBuildErrors);
    buildErrors.set(['proxy'], s.l7Errors);
    return [
      endpoint,
      state,
      policy,
      identity,
      pressure,
      services,
      this.#regenerations,
      this.#regenerationTime,
      events,
      buildErrors,
    ]
      .map((f) => f.render())
      .join('');
  }
}

/**
 * Entries and capacity of every map pinned under `dir` (ring buffers and arrays have no
 * fill to report). Counting walks the keys, so callers cache the answer between scrapes.
 */
export function pinnedMapUsage(dir: string): MapUsage[] {
  const out: MapUsage[] = [];
  const walk = (d: string) => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(d, e.name);
      if (e.isDirectory()) {
        walk(path);
        continue;
      }
      let map: ReturnType<typeof openPinnedRawMap>;
      try {
        map = openPinnedRawMap(path);
      } catch {
        continue; // removed meanwhile, or not ours to open
      }
      if (!map) continue;
      try {
        const t = map.type;
        if (t === MapType.RingBuf || t === MapType.Array || t === MapType.PerCpuArray) continue;
        out.push({ name: e.name, entries: map.count(), maxEntries: map.maxEntries });
      } finally {
        map.close();
      }
    }
  };
  walk(dir);
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** `pinnedMapUsage` at most once per `ttlMs`. */
export function cachedMapUsage(dir: string, ttlMs = 5000): () => MapUsage[] {
  let at = 0;
  let last: MapUsage[] = [];
  return () => {
    const now = Date.now();
    if (now - at >= ttlMs) {
      last = pinnedMapUsage(dir);
      at = now;
    }
    return last;
  };
}
