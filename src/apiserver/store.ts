/**
 * The API server's storage: objects by resource, namespace and name, one resourceVersion
 * counter for everything (as etcd's revision), and a bounded log of changes so a watch can
 * resume from a resourceVersion it saw. Persisted as one snapshot file, written atomically
 * a moment after changes settle, so `lab down --keep` and `lab up` resume the cluster.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clone, errors, type KObject } from './object.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';

export interface StoredEvent {
  type: Exclude<WatchEventType, 'BOOKMARK'>;
  rv: number;
  resource: string;
  object: KObject;
}

export interface Watcher {
  resource: string;
  namespace?: string;
  send(ev: StoredEvent): void;
}

const LOG_CAPACITY = 50_000;
const SAVE_DELAY_MS = 150;

const objectKey = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;

export class Store {
  #rv = 0;
  readonly #data = new Map<string, Map<string, KObject>>();
  readonly #log: StoredEvent[] = [];
  readonly #watchers = new Map<string, Set<Watcher>>();
  readonly #file: string | undefined;
  #saveTimer: NodeJS.Timeout | undefined;

  constructor(dataDir?: string) {
    if (!dataDir) return;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    this.#file = join(dataDir, 'objects.json');
    if (existsSync(this.#file)) {
      const saved = JSON.parse(readFileSync(this.#file, 'utf8')) as {
        rv: number;
        objects: { resource: string; object: KObject }[];
      };
      this.#rv = saved.rv;
      for (const { resource, object } of saved.objects) this.#bucket(resource).set(keyOf(object), object);
    }
  }

  get resourceVersion(): number {
    return this.#rv;
  }

  /** The oldest resourceVersion a watch can resume from. */
  get oldestWatchable(): number {
    return this.#log[0] ? this.#log[0].rv - 1 : this.#rv;
  }

  #bucket(resource: string): Map<string, KObject> {
    let b = this.#data.get(resource);
    if (!b) {
      b = new Map();
      this.#data.set(resource, b);
    }
    return b;
  }

  get(resource: string, namespace: string | undefined, name: string): KObject | undefined {
    const o = this.#data.get(resource)?.get(objectKey(namespace, name));
    return o && clone(o);
  }

  /** Objects of a resource (in one namespace if given), sorted by namespace and name. */
  list(resource: string, namespace?: string): KObject[] {
    const out: KObject[] = [];
    for (const o of this.#data.get(resource)?.values() ?? []) {
      if (namespace === undefined || o.metadata.namespace === namespace) out.push(clone(o));
    }
    return out.sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
  }

  /** Every resource holding objects in a namespace (for namespace deletion). */
  resourcesIn(namespace: string): string[] {
    return [...this.#data.entries()]
      .filter(([, b]) => [...b.values()].some((o) => o.metadata.namespace === namespace))
      .map(([r]) => r);
  }

  all(): { resource: string; object: KObject }[] {
    return [...this.#data.entries()].flatMap(([resource, b]) =>
      [...b.values()].map((object) => ({ resource, object })),
    );
  }

  /** Writes an object (create or replace) and tells watchers; returns the stored copy. */
  put(resource: string, object: KObject, type: 'ADDED' | 'MODIFIED'): KObject {
    const stored = clone(object);
    stored.metadata.resourceVersion = String(++this.#rv);
    this.#bucket(resource).set(keyOf(stored), stored);
    this.#emit({ type, rv: this.#rv, resource, object: stored });
    return clone(stored);
  }

  remove(resource: string, namespace: string | undefined, name: string): KObject | undefined {
    const b = this.#data.get(resource);
    const o = b?.get(objectKey(namespace, name));
    if (!b || !o) return undefined;
    b.delete(objectKey(namespace, name));
    const gone = clone(o);
    gone.metadata.resourceVersion = String(++this.#rv);
    this.#emit({ type: 'DELETED', rv: this.#rv, resource, object: gone });
    return clone(gone);
  }

  /** Drops every object of a resource (a CRD's deletion), telling watchers. */
  removeAll(resource: string): void {
    for (const o of this.list(resource)) this.remove(resource, o.metadata.namespace, o.metadata.name!);
    this.#data.delete(resource);
  }

  #emit(ev: StoredEvent): void {
    this.#log.push(ev);
    if (this.#log.length > LOG_CAPACITY) this.#log.splice(0, this.#log.length - LOG_CAPACITY);
    for (const w of this.#watchers.get(ev.resource) ?? []) {
      if (w.namespace === undefined || w.namespace === ev.object.metadata.namespace) w.send(ev);
    }
    this.#scheduleSave();
  }

  /**
   * Subscribes to changes of a resource after `since` (replayed from the log first).
   * A `since` older than the log holds is 410 Gone, as etcd compaction makes it.
   */
  watch(w: Watcher, since: number): () => void {
    if (since < this.oldestWatchable)
      throw errors.gone(`too old resource version: ${since} (${this.oldestWatchable})`);
    for (const ev of this.#log) {
      if (ev.rv > since && ev.resource === w.resource) {
        if (w.namespace === undefined || w.namespace === ev.object.metadata.namespace) w.send(ev);
      }
    }
    let set = this.#watchers.get(w.resource);
    if (!set) {
      set = new Set();
      this.#watchers.set(w.resource, set);
    }
    set.add(w);
    return () => set.delete(w);
  }

  #scheduleSave(): void {
    if (!this.#file || this.#saveTimer) return;
    this.#saveTimer = setTimeout(() => this.flush(), SAVE_DELAY_MS);
    this.#saveTimer.unref();
  }

  /** Writes the snapshot now (also on shutdown). */
  flush(): void {
    if (this.#saveTimer) clearTimeout(this.#saveTimer);
    this.#saveTimer = undefined;
    if (!this.#file) return;
    const tmp = `${this.#file}.tmp`;
    writeFileSync(tmp, JSON.stringify({ rv: this.#rv, objects: this.all() }), { mode: 0o600 });
    renameSync(tmp, this.#file);
  }
}

function keyOf(o: KObject): string {
  return objectKey(o.metadata.namespace, o.metadata.name ?? '');
}
