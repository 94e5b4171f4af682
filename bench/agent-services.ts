/**
 * The agent's service path at scale: Services and EndpointSlices in, as the Kubernetes
 * watcher takes them (a cache of objects, slices indexed by service, desiredFrontends of a
 * touched service), through the agent's applyServiceChanges into ServiceMaps on real
 * pinned maps at the agent's default sizes. With 100,000 services of 10 ready endpoints
 * each (1,000,000 backends):
 *  - the time to load everything (the watcher's first flush) and the process's RSS;
 *  - one backend change end to end, p50 and p99 over the changes: an EndpointSlice with
 *    one endpoint replaced (a pod rolled) handed to the watcher's cache, until the maps
 *    hold the new backend; against the same change with 1,000 services in the same run
 *    (a change costs what changed, not what exists), and against the 100 ms.
 * After every change the maps are read back: the new backend is in the service's slots,
 * the old one gone. The watcher's 15 ms debounce and the API server's watch delivery come
 * on top and are not in these figures.
 *
 *   node dist/bench/agent-services.js [services] [changes]
 *
 * A whole run (100,000 services) writes bench/results/agent-services.json; a smaller one
 * prints its figures only.
 */
import { rmSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  type AppliedServices,
  applyServiceChanges,
  desiredFrontends,
  type EndpointSliceObject,
  type ServiceFrontend,
  type ServiceObject,
} from '../src/agent/services.js';
import { ServiceMaps } from '../src/datapath/index.js';
import { type Figure, figure, percentile, writeResults } from './report.js';

const SERVICES = Number(process.argv[2] ?? 100_000);
const CHANGES = Number(process.argv[3] ?? 50);
const BACKENDS = 10;
const SMALL = 1_000;
const NS = 'bench';
const NODE = 'bench-node';

const clusterIp = (i: number) => {
  const k = Math.floor(i / 254);
  return `10.${96 + (k >> 8)}.${k & 255}.${(i % 254) + 1}`;
};
/** Pod addresses: 10.128.0.0 upwards, one per endpoint; replacements from 10.200.0.0. */
const podIp = (base: number, n: number) => `10.${base + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;

type Slice = EndpointSliceObject & { metadata: { name: string } };

function service(i: number): ServiceObject {
  return {
    metadata: { name: `svc-${i}`, namespace: NS },
    spec: {
      type: 'ClusterIP',
      clusterIP: clusterIp(i),
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      selector: { app: `svc-${i}` },
    },
  };
}

function slice(i: number, ips: readonly string[]): Slice {
  return {
    metadata: { name: `svc-${i}-abcde`, namespace: NS, labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: ips.map((ip, j) => ({
      addresses: [ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${j % 3}`,
    })),
  };
}

/** What KubernetesWatcher keeps and does for services: its caches, its index, its per-service recompute. */
class WatcherCache {
  readonly services = new Map<string, ServiceObject>();
  readonly slices = new Map<string, Slice>();
  readonly slicesBySvc = new Map<string, Set<string>>();

  /** An object arrived; returns the service it touches. */
  note(kind: 'services' | 'endpointslices', o: ServiceObject | Slice): string {
    const key = `${o.metadata.namespace}/${(o.metadata as { name: string }).name}`;
    if (kind === 'services') {
      this.services.set(key, o as ServiceObject);
      return key;
    }
    this.slices.set(key, o as Slice);
    const svc = `${o.metadata.namespace}/${(o as Slice).metadata.labels?.['kubernetes.io/service-name'] ?? ''}`;
    const set = this.slicesBySvc.get(svc) ?? new Set<string>();
    set.add(key);
    this.slicesBySvc.set(svc, set);
    return svc;
  }

  frontendsOf(key: string): ServiceFrontend[] {
    const svc = this.services.get(key);
    if (!svc) return [];
    const slices = [...(this.slicesBySvc.get(key) ?? [])]
      .map((k) => this.slices.get(k))
      .filter((s): s is Slice => s !== undefined);
    return [...desiredFrontends([svc], slices, { nodeName: NODE, defaultAlgorithm: 'random' }).values()];
  }
}

const mb = (bytes: number) => bytes / 2 ** 20;
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** The JavaScript heap still in use after a full collection. */
const liveHeap = () => {
  gc();
  return process.memoryUsage().heapUsed;
};

interface Run {
  loadMs: number;
  feedMs: number;
  changes: number[];
  writes: number[];
  rssMb: number;
  /** Live heap after a full collection: the watcher's objects, and the agent's state besides. */
  objectsHeapMb: number;
  stateHeapMb: number;
}

/** Loads n services into fresh maps, then times `changes` backend changes; checks each in the maps. */
function measure(n: number, changes: number, tag: string): Run {
  const pinDir = `/sys/fs/bpf/hypha/hybench-agentsvc-${tag}-${process.pid}`;
  const sm = ServiceMaps.open({ pinDir });
  try {
    const cache = new WatcherCache();
    const ips: string[][] = [];
    const heap0 = liveHeap();
    const objects: [ServiceObject, Slice][] = [];
    for (let i = 0; i < n; i++) {
      ips.push(Array.from({ length: BACKENDS }, (_, j) => podIp(128, i * BACKENDS + j)));
      objects.push([service(i), slice(i, ips[i]!)]);
    }
    const heap1 = liveHeap();

    // The first flush: every object into the cache, every service's frontends, one apply.
    const applied: AppliedServices = { records: new Map(), at: new Map() };
    let t = performance.now();
    const dirty = new Set<string>();
    for (const [s, sl] of objects) {
      dirty.add(cache.note('services', s));
      dirty.add(cache.note('endpointslices', sl));
    }
    const all = new Map([...dirty].map((k) => [k, cache.frontendsOf(k)]));
    const feedMs = performance.now() - t;
    applyServiceChanges(sm, applied, all);
    const loadMs = performance.now() - t;
    const failed = [...applied.records.values()].flat().filter((r) => r.error);
    if (failed.length) throw new Error(`${failed.length} frontends not written: ${failed[0]!.error}`);
    objects.length = 0;
    all.clear();
    const heap2 = liveHeap();
    const rss = process.memoryUsage().rss;

    // Changes: one endpoint of a random service replaced, object in to maps written.
    const times: number[] = [];
    const writes: number[] = [];
    for (let c = 0; c < changes; c++) {
      const i = Math.floor(Math.random() * n);
      const j = c % BACKENDS;
      const old = ips[i]![j]!;
      const fresh = podIp(200, c);
      ips[i]![j] = fresh;
      const obj = slice(i, ips[i]!);
      t = performance.now();
      const key = cache.note('endpointslices', obj);
      applyServiceChanges(sm, applied, new Map([[key, cache.frontendsOf(key)]]));
      times.push(performance.now() - t);
      writes.push(sm.lastWrites);
      checkInMaps(sm, applied, key, clusterIp(i), fresh, old);
    }
    return {
      loadMs,
      feedMs,
      changes: times,
      writes,
      rssMb: mb(rss),
      objectsHeapMb: mb(heap1 - heap0),
      stateHeapMb: mb(heap2 - heap1),
    };
  } finally {
    sm.destroy();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

/** The service's slots in the maps name the new backend and not the old one. */
function checkInMaps(
  sm: ServiceMaps,
  applied: AppliedServices,
  key: string,
  ip: string,
  fresh: string,
  old: string,
): void {
  const rec = applied.records.get(key)?.[0];
  if (!rec || rec.error) throw new Error(`${key}: ${rec?.error ?? 'no record'}`);
  const master = sm.maps.services.lookup({
    address: ip,
    dport: 80,
    backend_slot: 0,
    proto: 6,
    scope: 0,
    pad: [0, 0],
  });
  if (!master || master.count !== BACKENDS) throw new Error(`${key}: master ${JSON.stringify(master)}`);
  const addrs = new Set<string>();
  for (let slot = 1; slot <= master.count; slot++) {
    const s = sm.maps.services.lookup({
      address: ip,
      dport: 80,
      backend_slot: slot,
      proto: 6,
      scope: 0,
      pad: [0, 0],
    });
    const b = s && sm.maps.backends.lookup(s.backend_id);
    if (b) addrs.add(b.address);
  }
  if (!addrs.has(fresh) || addrs.has(old) || addrs.size !== BACKENDS)
    throw new Error(`${key}: maps hold ${[...addrs].join(' ')} after replacing ${old} by ${fresh}`);
}

const small = measure(Math.min(SMALL, SERVICES), CHANGES, 'small');
const big = measure(SERVICES, CHANGES, 'big');
const p = (r: Run, q: number) => percentile(r.changes, q);
console.log(
  `${SERVICES} services × ${BACKENDS} backends: load ${(big.loadMs / 1000).toFixed(1)} s (objects to frontends ${(big.feedMs / 1000).toFixed(1)} s), ` +
    `RSS ${big.rssMb.toFixed(0)} MB (live heap: objects ${big.objectsHeapMb.toFixed(0)} MB, agent state ${big.stateHeapMb.toFixed(0)} MB); one backend change p50 ${p(big, 50).toFixed(2)} ms, ` +
    `p99 ${p(big, 99).toFixed(2)} ms, max ${Math.max(...big.changes).toFixed(2)} ms, ${percentile(big.writes, 50)} map writes ` +
    `(${SMALL} services: p50 ${p(small, 50).toFixed(2)} ms, p99 ${p(small, 99).toFixed(2)} ms)`,
);
const figures: Figure[] = [
  figure(
    `one backend change, EndpointSlice in to maps written, p50 over ${CHANGES}, ${SERVICES} services vs ${SMALL}`,
    p(big, 50),
    'ms',
    p(small, 50),
  ),
  figure(
    `one backend change, EndpointSlice in to maps written, p99 over ${CHANGES}, ${SERVICES} services vs ${SMALL}`,
    p(big, 99),
    'ms',
    p(small, 99),
  ),
  figure(
    `one backend change, p99 over ${CHANGES}, ${SERVICES} services, vs the 100 ms target`,
    p(big, 99),
    'ms',
    100,
  ),
  figure(
    `map entries written per backend change, ${SERVICES} services`,
    percentile(big.writes, 50),
    'entries',
  ),
  figure(
    `load ${SERVICES} services × ${BACKENDS} backends (first flush, objects to maps)`,
    big.loadMs / 1000,
    's',
  ),
  figure(`of which objects to frontends (desiredFrontends)`, big.feedMs / 1000, 's'),
  figure(`process RSS after loading ${SERVICES} services (high-water of the load included)`, big.rssMb, 'MB'),
  figure(`live heap of the watcher's objects, ${SERVICES} services and slices`, big.objectsHeapMb, 'MB'),
  figure(`live heap of the agent's service state (records, ServiceMaps' view)`, big.stateHeapMb, 'MB'),
];
if (SERVICES >= 100_000) writeResults('agent-services', figures);
else for (const f of figures) console.log(JSON.stringify(f));
