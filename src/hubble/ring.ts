/**
 * The flow ring: the last `capacity` events (flows and lost-event notices), each with a
 * monotonically increasing index. Writing is O(1) and never waits for readers; readers
 * pull at their own pace with an index of their own, so a slow reader costs no memory:
 * when the writer laps it, it skips to the oldest event still held and is told how many
 * it missed (a LostEvent from HUBBLE_RING_BUFFER), as Hubble's ring readers are.
 */
import { ValidationError } from '../errors.js';
import { compileFilters, type FlowPredicate, type GetFlowsRequest } from './filter.js';
import {
  type Flow,
  formatTimestamp,
  type GetFlowsResponse,
  type LostEvent,
  type LostEventSource,
  parseTimestamp,
} from './flow.js';

/** What the ring holds: the oneof of observer.proto's GetFlowsResponse. */
export type RingEvent = { readonly flow: Flow } | { lost_events: LostEvent };

/**
 * A flow made when first read, then kept: most flows are never read (the ring overwrites
 * them unseen), and for a busy L7 proxy making each one cost the agent more CPU than the
 * proxying did. `build` must not fail (its input is checked when written).
 */
class LazyFlow {
  #build: (() => Flow) | undefined;
  #flow: Flow | undefined;

  constructor(build: () => Flow) {
    this.#build = build;
  }

  get flow(): Flow {
    if (this.#build) {
      this.#flow = this.#build();
      this.#build = undefined;
    }
    return this.#flow!;
  }
}

export interface RingEntry {
  /** Position in the write sequence; -1 for a lost-event notice made for one reader. */
  readonly index: number;
  /** Wall-clock nanoseconds since the epoch. */
  readonly ns: bigint;
  readonly event: RingEvent;
}

/** GetFlowsRequest's selection, with times already parsed. */
export interface RingQuery {
  /** Last N (or with `first`, first N) matching events; 0 = no limit. */
  number?: number;
  first?: boolean;
  /** Keep following new events after the buffered ones, until the signal aborts. */
  follow?: boolean;
  /** Nanoseconds since the epoch, inclusive. */
  since?: bigint;
  until?: bigint;
  /** Applies to flows; lost-event notices always pass. */
  filter?: FlowPredicate;
  signal?: AbortSignal;
}

export interface RingStats {
  /** Events held now. */
  numFlows: number;
  maxFlows: number;
  /** Flows written since start. */
  seenFlows: number;
}

/** Hubble's default (cilium --hubble-event-buffer-capacity). */
export const DEFAULT_RING_CAPACITY = 4095;

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

export class FlowRing {
  readonly capacity: number;
  readonly #buf: (RingEntry | undefined)[];
  /** Index of the next write = events written so far. */
  #next = 0;
  #seenFlows = 0;
  #closed = false;
  #waiter: { promise: Promise<void>; resolve: () => void } | undefined;
  readonly #lost: Record<LostEventSource, number> = {
    UNKNOWN_LOST_EVENT_SOURCE: 0,
    PERF_EVENT_RING_BUFFER: 0,
    OBSERVER_EVENTS_QUEUE: 0,
    HUBBLE_RING_BUFFER: 0,
  };

  /** `capacity` is one less than a power of two, up to 65535, as Cilium requires. */
  constructor(capacity = DEFAULT_RING_CAPACITY) {
    if (
      !Number.isInteger(capacity) ||
      capacity < 1 ||
      capacity > 65535 ||
      (capacity & (capacity + 1)) !== 0
    ) {
      throw new ValidationError(
        'flow ring',
        'capacity',
        `${capacity} is not one less than a power of two between 1 and 65535`,
      );
    }
    this.capacity = capacity;
    this.#buf = new Array<RingEntry | undefined>(capacity);
  }

  /** Index of the oldest event still held. */
  get oldestIndex(): number {
    return Math.max(0, this.#next - this.capacity);
  }

  /** Index the next write gets. */
  get nextIndex(): number {
    return this.#next;
  }

  get stats(): RingStats {
    return { numFlows: this.#next - this.oldestIndex, maxFlows: this.capacity, seenFlows: this.#seenFlows };
  }

  /** Events lost so far, by where they were lost. */
  get lost(): Readonly<Record<LostEventSource, number>> {
    return { ...this.#lost };
  }

  at(index: number): RingEntry | undefined {
    if (index < this.oldestIndex || index >= this.#next) return undefined;
    return this.#buf[index % this.capacity];
  }

  /** Stores a flow; its time is its `time` field unless given. */
  writeFlow(flow: Flow, ns?: bigint): RingEntry {
    this.#seenFlows++;
    return this.#write({ flow }, ns ?? (flow.time ? parseTimestamp(flow.time) : undefined) ?? nowNs());
  }

  /** A flow built by `build` when something reads it (LazyFlow), at `ns`. */
  writeLazyFlow(build: () => Flow, ns: bigint): RingEntry {
    this.#seenFlows++;
    return this.#write(new LazyFlow(build), ns);
  }

  /**
   * Records events lost before they reached the ring (datapath ring buffer full, observer
   * queue full): counted, and stored as a LostEvent so that followers learn of it.
   */
  reportLost(source: Exclude<LostEventSource, 'HUBBLE_RING_BUFFER'>, count: number, cpu?: number): void {
    if (count <= 0) return;
    this.#lost[source] += count;
    const ns = nowNs();
    this.#write(
      { lost_events: { source, num_events_lost: String(count), ...(cpu === undefined ? {} : { cpu }) } },
      ns,
    );
  }

  /** Ends every follower once it has read what is buffered. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  /**
   * The events a GetFlows request selects, oldest first: with `number` the last N that
   * match (rewinding from the newest), with `first` the first N, with `since` those from
   * then on; with `follow`, then every new one as it is written.
   */
  read(q: RingQuery = {}): AsyncGenerator<RingEntry, void, undefined> {
    const filter = q.filter ?? (() => true);
    const since = q.since;
    // Hubble: a bounded query with `since` and no `until` ends now.
    const until = q.until ?? (since !== undefined && !q.follow ? nowNs() : undefined);
    const selected = (e: RingEntry) =>
      (since === undefined || e.ns >= since) &&
      (until === undefined || e.ns <= until) &&
      ('lost_events' in e.event || filter(e.event.flow));
    const number = q.number ?? 0;

    let pos: number;
    let remaining = number > 0 ? number : Number.POSITIVE_INFINITY;
    if (q.first) {
      pos = this.oldestIndex;
    } else if (number > 0) {
      pos = this.#next;
      let found = 0;
      for (let i = this.#next - 1; i >= this.oldestIndex && found < number; i--) {
        if (selected(this.#buf[i % this.capacity]!)) {
          found++;
          pos = i;
        }
      }
      remaining = Number.POSITIVE_INFINITY;
    } else if (since !== undefined || !q.follow) {
      pos = this.oldestIndex;
    } else {
      pos = this.#next;
    }

    // Without follow, the answer is what is buffered now.
    const end = q.follow ? Number.POSITIVE_INFINITY : this.#next;
    return this.#readFrom(pos, end, remaining, q, selected, until);
  }

  /** The start is fixed when `read` is called, not when the caller first pulls. */
  async *#readFrom(
    start: number,
    end: number,
    limit: number,
    q: RingQuery,
    selected: (e: RingEntry) => boolean,
    until: bigint | undefined,
  ): AsyncGenerator<RingEntry, void, undefined> {
    let pos = start;
    let remaining = limit;
    while (!q.signal?.aborted) {
      const oldest = this.oldestIndex;
      if (pos < oldest) {
        const missed = oldest - pos;
        this.#lost.HUBBLE_RING_BUFFER += missed;
        pos = oldest;
        yield {
          index: -1,
          ns: nowNs(),
          event: { lost_events: { source: 'HUBBLE_RING_BUFFER', num_events_lost: String(missed) } },
        };
        continue;
      }
      if (pos >= end) return;
      if (pos < this.#next) {
        const e = this.#buf[pos % this.capacity]!;
        pos++;
        if (q.follow && until !== undefined && e.ns > until) return;
        if (!selected(e)) continue;
        yield e;
        if (--remaining === 0) return;
        continue;
      }
      if (!q.follow || this.#closed) return;
      await this.#nextWrite(q.signal);
    }
  }

  #write(event: RingEvent, ns: bigint): RingEntry {
    const e: RingEntry = { index: this.#next, ns, event };
    this.#buf[this.#next % this.capacity] = e;
    this.#next++;
    this.#wake();
    return e;
  }

  #wake(): void {
    const w = this.#waiter;
    if (!w) return;
    this.#waiter = undefined;
    w.resolve();
  }

  #nextWrite(signal: AbortSignal | undefined): Promise<void> {
    if (!this.#waiter) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.#waiter = { promise, resolve };
    }
    const written = this.#waiter.promise;
    if (!signal) return written;
    return new Promise<void>((resolve) => {
      const onAbort = () => resolve();
      signal.addEventListener('abort', onAbort, { once: true });
      void written.then(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }
}

/**
 * A GetFlowsRequest as a ring query: filters compiled (a ValidationError names the bad
 * one), times parsed.
 */
export function toRingQuery(req: GetFlowsRequest, signal?: AbortSignal): RingQuery {
  const time = (field: 'since' | 'until'): bigint | undefined => {
    const v = req[field];
    if (v === undefined) return undefined;
    const ns = parseTimestamp(v);
    if (ns === undefined)
      throw new ValidationError('GetFlowsRequest', field, `"${v}" is not an RFC 3339 time`);
    return ns;
  };
  const since = time('since');
  const until = time('until');
  return {
    number: req.number,
    first: req.first,
    follow: req.follow,
    filter: compileFilters(req.whitelist, req.blacklist),
    ...(since !== undefined ? { since } : {}),
    ...(until !== undefined ? { until } : {}),
    ...(signal ? { signal } : {}),
  };
}

/** A ring entry as the Observer API sends it: GetFlowsResponse with node name and time. */
export function toResponse(e: RingEntry, nodeName: string): GetFlowsResponse {
  if ('flow' in e.event) {
    const f = e.event.flow;
    return { flow: f, node_name: f.node_name ?? nodeName, time: f.time ?? formatTimestamp(e.ns) };
  }
  return { lost_events: e.event.lost_events, node_name: nodeName, time: formatTimestamp(e.ns) };
}
