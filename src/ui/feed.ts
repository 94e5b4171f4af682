/**
 * The UI's flow source: one followed GetFlows call to the relay (Hubble's Observer API),
 * feeding the store. The first call asks for the relay's recent flows too; after a
 * failure the call is made again from the newest stored flow's time (the store drops
 * the overlap by uuid). The gRPC stream's flow control is the backpressure: the store
 * takes each flow synchronously, so the UI never holds more than its ring.
 */
import type { ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import {
  eventFromPB,
  type GetFlowsResponsePB,
  type GetNamespacesResponsePB,
  type ObserverClient,
  observerClient,
} from '../hubble/grpc/index.js';
import { parseTimestamp } from '../hubble/index.js';
import type { FlowStore } from './store.js';

export interface FeedStatus {
  relay: string;
  state: 'connecting' | 'connected' | 'retrying' | 'closed';
  /** Why the last call failed, while retrying. */
  error?: string;
  /** The relay's nodes as its node-status events told them. */
  nodes: { name: string; state: string; message?: string }[];
}

export interface RelayFeedOptions {
  /** How many recent flows the first call asks for (default: the store's capacity). */
  backlog?: number;
  /** Pause before calling again after a failure (doubles up to 8x). */
  retryMs?: number;
  log?: (line: string) => void;
}

export class RelayFeed {
  readonly relay: string;
  readonly #store: FlowStore;
  readonly #client: ObserverClient;
  readonly #backlog: number;
  readonly #retryMs: number;
  readonly #log: (line: string) => void;
  #call: ClientReadableStream<GetFlowsResponsePB> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #state: FeedStatus['state'] = 'connecting';
  #error: string | undefined;
  #failures = 0;
  readonly #nodes = new Map<string, { state: string; message?: string }>();

  constructor(relay: string, store: FlowStore, o: RelayFeedOptions = {}) {
    this.relay = relay;
    this.#store = store;
    this.#backlog = o.backlog ?? store.capacity;
    this.#retryMs = o.retryMs ?? 1000;
    this.#log = o.log ?? (() => {});
    this.#client = observerClient(relay, undefined, {
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    });
  }

  start(): void {
    this.#open();
  }

  #open(): void {
    if (this.#state === 'closed') return;
    const last = this.#store.lastTime;
    const lastNs = last ? parseTimestamp(last) : undefined;
    const call = this.#client.GetFlows({
      follow: true,
      ...(lastNs !== undefined
        ? { since: { seconds: String(lastNs / 1_000_000_000n), nanos: Number(lastNs % 1_000_000_000n) } }
        : { number: String(this.#backlog) }),
    });
    this.#call = call;
    call.on('data', (r: GetFlowsResponsePB) => {
      if (this.#state !== 'connected') {
        this.#state = 'connected';
        this.#error = undefined;
        this.#failures = 0;
      }
      const e = eventFromPB(r);
      if (!e) return;
      if (e.kind === 'flow') this.#store.add(e.flow);
      else if (e.kind === 'lost') this.#store.addLost(Number(e.lost.num_events_lost ?? 0));
      else
        for (const n of e.nodes)
          this.#nodes.set(n, { state: e.state, ...(e.message ? { message: e.message } : {}) });
    });
    const over = (err?: ServiceError) => {
      if (this.#call !== call) return;
      this.#call = undefined;
      if (this.#state === 'closed') return;
      if (err?.code === grpcStatus.CANCELLED) return;
      this.#error = err ? err.details || err.message : 'the relay ended the stream';
      this.#state = 'retrying';
      this.#failures++;
      if (this.#failures === 1) this.#log(`relay ${this.relay}: ${this.#error}; retrying`);
      const delay = this.#retryMs * 2 ** Math.min(this.#failures - 1, 3);
      this.#timer = setTimeout(() => this.#open(), delay);
    };
    call.on('error', (err: ServiceError) => over(err));
    call.on('end', () => over());
  }

  status(): FeedStatus {
    return {
      relay: this.relay,
      state: this.#state,
      ...(this.#error ? { error: this.#error } : {}),
      nodes: [...this.#nodes]
        .map(([name, s]) => ({ name, ...s }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    };
  }

  /** The relay's namespaces (those its agents have seen flows in); [] if it cannot say. */
  namespaces(timeoutMs = 2000): Promise<string[]> {
    return new Promise((resolve) => {
      this.#client.GetNamespaces(
        {},
        { deadline: Date.now() + timeoutMs },
        (err, res?: GetNamespacesResponsePB) => {
          if (err || !res) return resolve([]);
          resolve([...new Set((res.namespaces ?? []).map((n) => n.namespace ?? '').filter(Boolean))].sort());
        },
      );
    });
  }

  close(): void {
    this.#state = 'closed';
    clearTimeout(this.#timer);
    const call = this.#call;
    this.#call = undefined;
    if (call) {
      call.on('error', () => {});
      call.cancel();
    }
    this.#client.close();
  }
}
