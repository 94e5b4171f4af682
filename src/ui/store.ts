/**
 * What the UI server keeps: a ring of the most recent flows (for the table) and the
 * service-map counters (for the map), both bounded whatever the flow rate. Listeners
 * hear of each flow as it is stored; they must not block.
 */
import type { Flow } from '../hubble/index.js';
import { type ServiceMap, ServiceMapBuilder, type ServiceMapLimits } from './map.js';

export interface FlowStoreOptions extends ServiceMapLimits {
  /** Flows kept for the table (default 10,000). */
  capacity?: number;
}

export interface StoreStats {
  /** Flows stored since the start. */
  seen: number;
  /** Flows in the ring now. */
  stored: number;
  capacity: number;
  /** Flows the relay or agents reported lost before they reached the UI. */
  lost: number;
  /** Flows received twice (a reconnection's overlap) and dropped. */
  duplicates: number;
  mapNodes: number;
  mapEdges: number;
}

export type FlowListener = (flow: Flow) => void;

export const DEFAULT_CAPACITY = 10_000;

export class FlowStore {
  readonly capacity: number;
  readonly #ring: (Flow | undefined)[];
  /** Index of the next write. */
  #head = 0;
  #count = 0;
  #seen = 0;
  #lost = 0;
  #duplicates = 0;
  /** uuids of the flows in the ring, so that a flow sent twice is stored once. */
  readonly #uuids = new Set<string>();
  readonly #map: ServiceMapBuilder;
  readonly #listeners = new Set<FlowListener>();

  constructor(o: FlowStoreOptions = {}) {
    this.capacity = Math.max(1, o.capacity ?? DEFAULT_CAPACITY);
    this.#ring = new Array(this.capacity);
    this.#map = new ServiceMapBuilder(o);
  }

  /** Stores a flow; false when it was already stored. */
  add(flow: Flow): boolean {
    if (flow.uuid) {
      if (this.#uuids.has(flow.uuid)) {
        this.#duplicates++;
        return false;
      }
      this.#uuids.add(flow.uuid);
    }
    const old = this.#ring[this.#head];
    if (old?.uuid) this.#uuids.delete(old.uuid);
    this.#ring[this.#head] = flow;
    this.#head = (this.#head + 1) % this.capacity;
    this.#count = Math.min(this.#count + 1, this.capacity);
    this.#seen++;
    this.#map.add(flow);
    for (const l of this.#listeners) l(flow);
    return true;
  }

  addLost(n: number): void {
    if (Number.isFinite(n) && n > 0) this.#lost += n;
  }

  /** The newest `limit` flows that match, oldest first. */
  recent(matches: (f: Flow) => boolean, limit: number): Flow[] {
    const out: Flow[] = [];
    for (let i = 1; i <= this.#count && out.length < limit; i++) {
      const f = this.#ring[(this.#head - i + this.capacity) % this.capacity]!;
      if (matches(f)) out.push(f);
    }
    return out.reverse();
  }

  /** The newest flow's time, to resume a stream after it. */
  get lastTime(): string | undefined {
    return this.#count ? this.#ring[(this.#head - 1 + this.capacity) % this.capacity]?.time : undefined;
  }

  map(namespace = ''): ServiceMap {
    return this.#map.snapshot(namespace);
  }

  /** Changes whenever the map does. */
  get generation(): number {
    return this.#map.generation;
  }

  subscribe(l: FlowListener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  stats(): StoreStats {
    const size = this.#map.size;
    return {
      seen: this.#seen,
      stored: this.#count,
      capacity: this.capacity,
      lost: this.#lost,
      duplicates: this.#duplicates,
      mapNodes: size.nodes,
      mapEdges: size.edges,
    };
  }
}
