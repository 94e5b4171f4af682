/**
 * Read access to a node's pinned maps without loading programs: what the debugging
 * commands use, while the agent owns the programs.
 */
import { join } from 'node:path';
import { type BpfMap, openPinnedMap, type PerCpuMap } from '../bpf/index.js';
import { DIR_EGRESS, dropReasonName } from './constants.js';
import {
  ctEntry,
  ctKey4,
  endpointInfo,
  endpointKey,
  ipcacheInfo,
  ipcacheKey4,
  metricsKey,
  metricsValue,
  policyEntry,
  policyKey,
} from './layout.js';

type Decoded<C> = C extends { decode(d: DataView, o: number): infer T } ? T : never;

export class PinnedMaps implements Disposable {
  readonly #open: BpfMap<unknown, unknown>[] = [];
  constructor(readonly dir: string) {}

  #map<K, V>(
    name: string,
    codecs: { key: { size: number } & object; value: { size: number } & object },
  ): BpfMap<K, V> {
    const m = openPinnedMap(join(this.dir, name), codecs as never) as BpfMap<K, V>;
    this.#open.push(m as BpfMap<unknown, unknown>);
    return m;
  }

  policy() {
    return this.#map<Decoded<typeof policyKey>, Decoded<typeof policyEntry>>('hypha_policy', {
      key: policyKey,
      value: policyEntry,
    });
  }
  endpoints() {
    return this.#map<Decoded<typeof endpointKey>, Decoded<typeof endpointInfo>>('hypha_endpoints', {
      key: endpointKey,
      value: endpointInfo,
    });
  }
  ipcache() {
    return this.#map<Decoded<typeof ipcacheKey4>, Decoded<typeof ipcacheInfo>>('hypha_ipcache4', {
      key: ipcacheKey4,
      value: ipcacheInfo,
    });
  }
  ct() {
    return this.#map<Decoded<typeof ctKey4>, Decoded<typeof ctEntry>>('hypha_ct4', {
      key: ctKey4,
      value: ctEntry,
    });
  }
  metrics() {
    return this.#map<number, Decoded<typeof metricsValue>[]>('hypha_metrics', {
      key: metricsKey,
      value: metricsValue,
    }) as unknown as PerCpuMap<number, Decoded<typeof metricsValue>>;
  }

  metricsTotals(): MetricsTotal[] {
    return metricsTotals(this.metrics());
  }

  close(): void {
    for (const m of this.#open) m.close();
    this.#open.length = 0;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export interface MetricsTotal {
  reason: number;
  reasonName: string;
  direction: 'ingress' | 'egress';
  packets: number;
  bytes: number;
}

/**
 * The per-CPU counters of hypha_metrics added up, by reason and direction; counters never
 * hit are left out. The map is an array indexed by METRICS_INDEX(reason, direction).
 */
export function metricsTotals(map: PerCpuMap<number, Decoded<typeof metricsValue>>): MetricsTotal[] {
  const out: MetricsTotal[] = [];
  for (const [index, perCpu] of map.lookupBatch()) {
    const packets = perCpu.reduce((n, v) => n + Number(v.packets), 0);
    if (packets === 0) continue;
    const reason = index & 0xff;
    out.push({
      reason,
      reasonName: reason === 0 ? 'FORWARDED' : dropReasonName(reason),
      direction: index >> 8 === DIR_EGRESS ? 'egress' : 'ingress',
      packets,
      bytes: perCpu.reduce((n, v) => n + Number(v.bytes), 0),
    });
  }
  return out;
}
