/**
 * Kubernetes Events (core v1), as client-go's EventRecorder writes them: one Event per
 * object, reason and message, whose `count` and `lastTimestamp` go up when it recurs, so
 * `kubectl describe` and `kubectl get events` show what the controllers did.
 */
import type { Api, KObject, ResourceType } from '../../../apiserver/index.js';
import { timestamp } from './objects.js';

export type EventType = 'Normal' | 'Warning';

/** How many recent events are remembered to bump instead of duplicating (client-go's LRU). */
const REMEMBERED = 4096;

interface Seen {
  namespace: string;
  name: string;
  count: number;
}

export class EventRecorder {
  readonly #events: ResourceType;
  readonly #seen = new Map<string, Seen>();
  #sequence = 0;

  constructor(
    readonly api: Api,
    readonly component: string,
    readonly onError: (err: unknown) => void,
  ) {
    const r = api.resource('', 'events');
    if (!r) throw new Error('the API serves no events');
    this.#events = r;
  }

  /** Records an event about `o`. Failing to record is reported, never thrown: events are best effort. */
  event(o: KObject, type: EventType, reason: string, message: string): void {
    try {
      this.#record(o, type, reason, message);
    } catch (err) {
      this.onError(err);
    }
  }

  #record(o: KObject, type: EventType, reason: string, message: string): void {
    const namespace = o.metadata.namespace ?? 'default';
    const key = [o.kind, namespace, o.metadata.name, o.metadata.uid, type, reason, message].join('\0');
    const now = timestamp();
    const seen = this.#seen.get(key);
    if (seen && this.api.tryGet(this.#events, seen.namespace, seen.name)) {
      seen.count++;
      this.api.patch(this.#events, seen.namespace, seen.name, 'merge', {
        count: seen.count,
        lastTimestamp: now,
      });
      this.#remember(key, seen);
      return;
    }
    // Named as client-go names them: the object's name and a hex timestamp in nanoseconds.
    const nanos = BigInt(Date.now()) * 1_000_000n + BigInt(this.#sequence++ % 1_000_000);
    const { object } = this.api.create(this.#events, namespace, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${o.metadata.name}.${nanos.toString(16)}`, namespace },
      involvedObject: {
        apiVersion: o.apiVersion,
        kind: o.kind,
        ...(o.metadata.namespace ? { namespace: o.metadata.namespace } : {}),
        name: o.metadata.name,
        uid: o.metadata.uid,
        resourceVersion: o.metadata.resourceVersion,
      },
      reason,
      message,
      source: { component: this.component },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      type,
      eventTime: null,
      reportingComponent: this.component,
      reportingInstance: '',
    });
    this.#remember(key, { namespace, name: object.metadata.name ?? '', count: 1 });
  }

  #remember(key: string, seen: Seen): void {
    this.#seen.delete(key);
    this.#seen.set(key, seen);
    if (this.#seen.size > REMEMBERED) {
      const oldest = this.#seen.keys().next();
      if (!oldest.done) this.#seen.delete(oldest.value);
    }
  }
}
