/**
 * The UI's JSON API, testable without a socket: `request(method, url)` answers with a
 * status and a JSON body; `stream(url)` makes the Server-Sent Events stream for a query
 * (or a 400). Routes:
 *
 *   GET /api/status                      relay connection, store counters
 *   GET /api/namespaces                  namespaces seen (by the relay and in flows)
 *   GET /api/map?namespace=ns            the service map with its layout
 *   GET /api/flows?namespace=&verdict=&pod=&q=&edge=&node=&limit=&since=   recent flows
 *   GET /api/events?<as /api/flows>      the live stream (see events.ts)
 */
import { ValidationError } from '../errors.js';
import { EventStream, type EventStreamOptions, mapWithLayout, rowOf } from './events.js';
import type { FeedStatus } from './feed.js';
import { parseFlowQuery } from './query.js';
import type { FlowStore } from './store.js';

export interface ApiResponse {
  status: number;
  body: unknown;
}

export interface UiApiOptions {
  store: FlowStore;
  /** The relay connection, when there is one. */
  feed?: { status(): FeedStatus; namespaces(): Promise<string[]> };
  /** Live streams open at once; more get 503 (default 64). */
  maxStreams?: number;
  events?: Omit<EventStreamOptions, 'status' | 'onClose'>;
}

const error = (status: number, message: string): ApiResponse => ({ status, body: { error: message } });

export class UiApi {
  readonly #store: FlowStore;
  readonly #feed: UiApiOptions['feed'];
  readonly #maxStreams: number;
  readonly #events: UiApiOptions['events'];
  readonly #streams = new Set<EventStream>();

  constructor(o: UiApiOptions) {
    this.#store = o.store;
    this.#feed = o.feed;
    this.#maxStreams = o.maxStreams ?? 64;
    this.#events = o.events;
  }

  status(): object {
    return {
      relay: this.#feed?.status() ?? null,
      store: this.#store.stats(),
      streams: this.#streams.size,
    };
  }

  async request(method: string, rawUrl: string): Promise<ApiResponse> {
    let url: URL;
    try {
      url = new URL(rawUrl, 'http://ui.invalid');
    } catch {
      return error(400, `"${rawUrl}" is not a URL`);
    }
    if (method !== 'GET' && method !== 'HEAD') return error(405, `${method} ${url.pathname}: only GET`);
    try {
      switch (url.pathname) {
        case '/api/status':
          noParams(url);
          return { status: 200, body: this.status() };
        case '/api/namespaces': {
          noParams(url);
          const fromRelay = (await this.#feed?.namespaces()) ?? [];
          const seen = this.#store.map('').namespaces;
          return { status: 200, body: { namespaces: [...new Set([...fromRelay, ...seen])].sort() } };
        }
        case '/api/map': {
          for (const k of url.searchParams.keys())
            if (k !== 'namespace')
              throw new ValidationError('query', k, 'unknown parameter (map: namespace)');
          const q = parseFlowQuery(new URLSearchParams(url.searchParams));
          return { status: 200, body: mapWithLayout(this.#store, q.namespace) };
        }
        case '/api/flows': {
          const q = parseFlowQuery(url.searchParams);
          const flows = this.#store.recent((f) => q.matches(f), q.limit);
          return { status: 200, body: { rows: flows.map(rowOf), store: this.#store.stats() } };
        }
        case '/api/events':
          return error(400, '/api/events is a stream: open it with EventSource');
        default:
          return error(404, `${url.pathname}: no such API`);
      }
    } catch (err) {
      if (err instanceof ValidationError) return error(400, err.message);
      throw err;
    }
  }

  /** The live stream for a URL's query, or the error to answer instead. */
  stream(rawUrl: string): EventStream | ApiResponse {
    let q: ReturnType<typeof parseFlowQuery>;
    try {
      q = parseFlowQuery(new URL(rawUrl, 'http://ui.invalid').searchParams);
    } catch (err) {
      if (err instanceof ValidationError) return error(400, err.message);
      if (err instanceof TypeError) return error(400, `"${rawUrl}" is not a URL`);
      throw err;
    }
    if (this.#streams.size >= this.#maxStreams)
      return error(503, `too many live streams open (${this.#maxStreams}); close a UI tab`);
    const s: EventStream = new EventStream(this.#store, q, {
      ...this.#events,
      status: () => this.status(),
      onClose: () => this.#streams.delete(s),
    });
    this.#streams.add(s);
    return s;
  }

  close(): void {
    for (const s of [...this.#streams]) s.close();
  }
}

function noParams(url: URL): void {
  for (const k of url.searchParams.keys())
    throw new ValidationError('query', k, 'this API takes no parameters');
}
