/**
 * A small client-go: shared informers that mirror a resource from the API's watch, a
 * de-duplicating work queue of object keys with per-key backoff, and a controller that
 * drains its queue through a reconcile function.
 *
 * The API delivers watch events synchronously, inside the write that caused them, so an
 * informer's cache is never behind the store, and a handler must do no more than enqueue.
 * Reconcilers are synchronous too (the API is), and each runs to completion before the
 * next key is taken, so one controller never reconciles the same key twice at once.
 */
import {
  type Api,
  ApiError,
  type KObject,
  type ResourceType,
  type WatchEvent,
} from '../../../apiserver/index.js';

/** `namespace/name` for namespaced objects, `name` otherwise, as client-go's MetaNamespaceKeyFunc. */
export function keyOf(o: Pick<KObject, 'metadata'>): string {
  const { namespace, name = '' } = o.metadata;
  return namespace ? `${namespace}/${name}` : name;
}

export function splitKey(key: string): { namespace: string | undefined; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { namespace: undefined, name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

// ------------------------------------------------------------------- informers

export interface Change<T extends KObject> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: T;
  /** The cached object before a MODIFIED (and the last known one for DELETED). */
  old: T | undefined;
}

export type ChangeHandler<T extends KObject> = (change: Change<T>) => void;

/**
 * A resource's objects as the API holds them, kept by a watch. Cached objects are shared:
 * callers copy before changing one.
 */
export class Informer<T extends KObject> {
  readonly #byNamespace = new Map<string, Map<string, T>>();
  readonly #handlers: ChangeHandler<T>[] = [];
  #stop: (() => void) | undefined;

  constructor(
    readonly api: Api,
    readonly resource: ResourceType,
    readonly onError: (err: unknown) => void,
  ) {}

  /** Registers a handler; one added after start sees the current objects as ADDED. */
  on(handler: ChangeHandler<T>): void {
    this.#handlers.push(handler);
    if (this.#stop)
      for (const object of this.list()) this.#call(handler, { type: 'ADDED', object, old: undefined });
  }

  start(): void {
    if (this.#stop) return;
    this.#stop = this.api.watch(this.resource, undefined, {}, (ev) => this.#receive(ev));
  }

  close(): void {
    this.#stop?.();
    this.#stop = undefined;
    this.#byNamespace.clear();
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.#byNamespace.get(namespace ?? '')?.get(name);
  }

  /** Objects in a namespace, or everywhere, sorted by namespace and name. */
  list(namespace?: string): T[] {
    const buckets =
      namespace === undefined
        ? [...this.#byNamespace.values()]
        : [this.#byNamespace.get(namespace) ?? new Map()];
    return buckets.flatMap((b) => [...b.values()]).sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
  }

  #receive(ev: WatchEvent): void {
    if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED') return;
    const object = ev.object as T;
    const ns = object.metadata.namespace ?? '';
    const name = object.metadata.name ?? '';
    let bucket = this.#byNamespace.get(ns);
    const old = bucket?.get(name);
    if (ev.type === 'DELETED') {
      bucket?.delete(name);
      if (bucket?.size === 0) this.#byNamespace.delete(ns);
    } else {
      if (!bucket) {
        bucket = new Map();
        this.#byNamespace.set(ns, bucket);
      }
      bucket.set(name, object);
    }
    const change: Change<T> = { type: ev.type, object, old };
    for (const h of this.#handlers) this.#call(h, change);
  }

  // Handlers run inside someone else's API write: a throw must not fail that write.
  #call(handler: ChangeHandler<T>, change: Change<T>): void {
    try {
      handler(change);
    } catch (err) {
      this.onError(err);
    }
  }
}

/** One informer per resource, shared by every controller that reads it. */
export class Informers {
  readonly #informers = new Map<string, Informer<KObject>>();

  constructor(
    readonly api: Api,
    readonly onError: (err: unknown) => void,
  ) {}

  for<T extends KObject>(group: string, plural: string): Informer<T> {
    const key = `${group}/${plural}`;
    let inf = this.#informers.get(key);
    if (!inf) {
      const r = this.api.resource(group, plural);
      if (!r) throw new Error(`the API serves no ${key}`);
      inf = new Informer<KObject>(this.api, r, this.onError);
      this.#informers.set(key, inf);
    }
    return inf as unknown as Informer<T>;
  }

  start(): void {
    for (const inf of this.#informers.values()) inf.start();
  }

  close(): void {
    for (const inf of this.#informers.values()) inf.close();
  }
}

// ------------------------------------------------------------------ work queue

const BACKOFF_BASE_MS = 5;
const BACKOFF_MAX_MS = 30_000;

/**
 * Keys to reconcile, as client-go's workqueue: a key waiting is queued once however often
 * it is added; a key added while being processed is queued again when it is done; failed
 * keys come back after an exponential per-key delay until forgotten.
 */
export class WorkQueue {
  readonly #queue: string[] = [];
  readonly #dirty = new Set<string>();
  readonly #processing = new Set<string>();
  readonly #timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  readonly #failures = new Map<string, number>();
  #shutDown = false;

  /** `ready` is told whenever a key becomes available to `get`. */
  constructor(readonly ready: () => void) {}

  get length(): number {
    return this.#queue.length;
  }

  /** Nothing queued and nothing being processed (delayed keys do not count). */
  get idle(): boolean {
    return this.#queue.length === 0 && this.#processing.size === 0;
  }

  add(key: string): void {
    if (this.#shutDown || this.#dirty.has(key)) return;
    this.#dirty.add(key);
    if (this.#processing.has(key)) return;
    this.#queue.push(key);
    this.ready();
  }

  /** Adds `key` after `ms`; an earlier pending time for the same key wins. */
  addAfter(key: string, ms: number): void {
    if (this.#shutDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + ms;
    const pending = this.#timers.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.#timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.#timers.set(key, { at, timer });
  }

  /** Adds `key` after its backoff, which doubles with each failure since it was last forgotten. */
  addRateLimited(key: string): void {
    const n = this.#failures.get(key) ?? 0;
    this.#failures.set(key, n + 1);
    this.addAfter(key, Math.min(BACKOFF_BASE_MS * 2 ** n, BACKOFF_MAX_MS));
  }

  forget(key: string): void {
    this.#failures.delete(key);
  }

  get(): string | undefined {
    const key = this.#queue.shift();
    if (key === undefined) return undefined;
    this.#processing.add(key);
    this.#dirty.delete(key);
    return key;
  }

  done(key: string): void {
    this.#processing.delete(key);
    if (this.#dirty.has(key)) {
      this.#queue.push(key);
      this.ready();
    }
  }

  shutDown(): void {
    this.#shutDown = true;
    for (const { timer } of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    this.#queue.length = 0;
    this.#dirty.clear();
  }
}

// ----------------------------------------------------------------- controllers

/** What a reconcile may ask for besides "done": to look again after a while. */
export type Outcome = undefined | { requeueAfterMs: number };

export type ErrorReporter = (controller: string, key: string, err: unknown) => void;

/** Keys handled per turn of the event loop, so a long queue does not starve I/O. */
const BATCH = 64;

export interface ControllerOptions {
  name: string;
  reconcile(key: string): Outcome;
  /** Every key the controller looks after, enqueued again on each resync. */
  keys(): string[];
  onError: ErrorReporter;
}

/**
 * Drains a work queue through `reconcile`. A reconcile that throws is retried with backoff:
 * conflicts and races with other writers are expected and repaired by the next run.
 */
export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  readonly #o: ControllerOptions;
  #scheduled = false;
  #closed = false;

  constructor(o: ControllerOptions) {
    this.name = o.name;
    this.#o = o;
    this.queue = new WorkQueue(() => this.#kick());
  }

  enqueue(key: string): void {
    this.queue.add(key);
  }

  enqueueAfter(key: string, ms: number): void {
    this.queue.addAfter(key, ms);
  }

  /** Enqueues every key, so drift that no event announced is repaired. */
  resync(): void {
    for (const key of this.#o.keys()) this.queue.add(key);
  }

  get idle(): boolean {
    return this.queue.idle;
  }

  close(): void {
    this.#closed = true;
    this.queue.shutDown();
  }

  #kick(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#drain();
    });
  }

  #drain(): void {
    for (let n = 0; n < BATCH && !this.#closed; n++) {
      const key = this.queue.get();
      if (key === undefined) return;
      try {
        const outcome = this.#o.reconcile(key);
        this.queue.forget(key);
        if (outcome) this.queue.addAfter(key, outcome.requeueAfterMs);
      } catch (err) {
        this.#o.onError(this.name, key, err);
        this.queue.addRateLimited(key);
      } finally {
        this.queue.done(key);
      }
    }
    if (this.queue.length > 0) this.#kick();
  }
}

/** Conflicts, and objects gone or already there, are the ordinary races of a controller. */
export function isExpectedRace(err: unknown): boolean {
  return err instanceof ApiError && (err.code === 409 || err.code === 404);
}
