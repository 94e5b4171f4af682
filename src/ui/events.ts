/**
 * Live updates to a browser as Server-Sent Events. One stream per page, for one query:
 *
 *   event: flows   {"rows":[...], "reset":true}  the recent matching flows, then new ones in batches
 *                  (table rows; /api/flows?uuid= gives a flow's every field)
 *   event: map     the namespace's service map with its layout, when it changed
 *   event: status  the relay connection and the store's counters
 *   event: skipped {"flows":n}  rows left out because the browser was not reading fast enough
 *
 * A slow browser never makes the server buffer without bound: while the socket is full
 * (write() returned false) new rows wait in a queue of at most `maxPending` (the oldest
 * are dropped and counted), and at most one map and one status wait, each replaced by a
 * newer one.
 */
import type { Writable } from 'node:stream';
import type { Flow } from '../hubble/index.js';
import { layoutMap } from './layout.js';
import type { FlowRow } from './map.js';
import { type FlowQuery, rowFor } from './query.js';
import type { FlowStore } from './store.js';

export interface EventStreamOptions {
  /** How often new rows are sent, in a batch (ms). */
  flushMs?: number;
  /** How often a changed map and the status are sent (ms). */
  mapMs?: number;
  /** Rows that may wait for a slow browser. */
  maxPending?: number;
  heartbeatMs?: number;
  status?: () => object;
  onClose?: () => void;
}

export interface RowWithFlow extends FlowRow {
  flow: Flow;
}

export function rowOf(f: Flow): RowWithFlow {
  return { ...rowFor(f), flow: f };
}

/** The map of a namespace with its layout: what /api/map and the map event carry. */
export function mapWithLayout(store: FlowStore, namespace: string) {
  const map = store.map(namespace);
  return { ...map, layout: layoutMap(map), generation: store.generation };
}

export class EventStream {
  readonly #store: FlowStore;
  readonly #query: FlowQuery;
  readonly #o: Required<Omit<EventStreamOptions, 'status' | 'onClose'>> &
    Pick<EventStreamOptions, 'status' | 'onClose'>;
  #out: Writable | undefined;
  #pending: FlowRow[] = [];
  #skipped = 0;
  #blocked = false;
  #mapGeneration = -1;
  #mapDue = false;
  #statusDue = false;
  #lastStatus = '';
  #unsubscribe: (() => void) | undefined;
  readonly #timers: NodeJS.Timeout[] = [];
  #closed = false;
  /** Bytes written, for tests and the status. */
  written = 0;

  constructor(store: FlowStore, query: FlowQuery, o: EventStreamOptions = {}) {
    this.#store = store;
    this.#query = query;
    this.#o = {
      flushMs: o.flushMs ?? 250,
      mapMs: o.mapMs ?? 1000,
      maxPending: o.maxPending ?? 500,
      heartbeatMs: o.heartbeatMs ?? 15_000,
      ...(o.status ? { status: o.status } : {}),
      ...(o.onClose ? { onClose: o.onClose } : {}),
    };
  }

  get pending(): number {
    return this.#pending.length;
  }

  get skipped(): number {
    return this.#skipped;
  }

  /** Starts writing events to `out` (headers already sent); stops when it closes. */
  start(out: Writable): void {
    this.#out = out;
    out.on('close', () => this.close());
    out.on('error', () => this.close());
    const q = this.#query;
    this.#write('retry: 2000\n\n');
    this.#sendStatus();
    this.#sendMap();
    const rows = this.#store.recent((f) => q.matches(f), q.limit).map(rowFor);
    this.#event('flows', { rows, reset: true });
    this.#unsubscribe = this.#store.subscribe((f) => {
      const row = rowFor(f);
      if (!q.matchesRow(f, row)) return;
      this.#pending.push(row);
      if (this.#pending.length > this.#o.maxPending) {
        this.#skipped += this.#pending.length - this.#o.maxPending;
        this.#pending.splice(0, this.#pending.length - this.#o.maxPending);
      }
    });
    this.#timers.push(
      setInterval(() => this.#flush(), this.#o.flushMs),
      setInterval(() => {
        this.#mapDue = true;
        this.#statusDue = true;
        this.#flush();
      }, this.#o.mapMs),
      setInterval(() => {
        if (!this.#blocked) this.#write(': ping\n\n');
      }, this.#o.heartbeatMs),
    );
  }

  #flush(): void {
    if (this.#closed || this.#blocked) return;
    if (this.#skipped > 0) {
      this.#event('skipped', { flows: this.#skipped });
      this.#skipped = 0;
    }
    if (this.#pending.length > 0) {
      const rows = this.#pending;
      this.#pending = [];
      this.#event('flows', { rows, reset: false });
    }
    if (this.#mapDue && !this.#blocked) {
      this.#mapDue = false;
      this.#sendMap();
    }
    if (this.#statusDue && !this.#blocked) {
      this.#statusDue = false;
      this.#sendStatus();
    }
  }

  #sendMap(): void {
    const generation = this.#store.generation;
    if (generation === this.#mapGeneration) return;
    this.#mapGeneration = generation;
    this.#event('map', mapWithLayout(this.#store, this.#query.namespace));
  }

  #sendStatus(): void {
    const s = JSON.stringify({ ...this.#o.status?.(), store: this.#store.stats() });
    if (s === this.#lastStatus) return;
    this.#lastStatus = s;
    this.#write(`event: status\ndata: ${s}\n\n`);
  }

  #event(name: string, data: unknown): void {
    this.#write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  #write(chunk: string): void {
    const out = this.#out;
    if (!out || this.#closed || out.destroyed) return;
    this.written += Buffer.byteLength(chunk);
    if (out.write(chunk)) return;
    this.#blocked = true;
    out.once('drain', () => {
      this.#blocked = false;
      this.#flush();
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe?.();
    for (const t of this.#timers) clearInterval(t);
    this.#pending = [];
    this.#o.onClose?.();
  }
}
