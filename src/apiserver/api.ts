/**
 * The API's verbs over the store, with Kubernetes semantics: metadata bookkeeping (uid,
 * resourceVersion, generation, timestamps, generateName), optimistic concurrency,
 * admission, status subresources, finalizers and graceful pod deletion, owner-reference
 * garbage collection, namespace cascade, watches filtered by selectors, and
 * CustomResourceDefinitions that add resources while the server runs. The HTTP layer and
 * in-process controllers both go through here, so both get the same checks.
 */
import { randomInt, randomUUID } from 'node:crypto';
import { type AdmissionContext, admit } from './admission.js';
import {
  ApiError,
  clone,
  errors,
  field,
  isObject,
  type JsonObject,
  type KObject,
  type StatusCause,
} from './object.js';
import { jsonPatch, mergePatch, strategicMergePatch } from './patch.js';
import {
  apiVersionOf,
  BUILTIN_RESOURCES,
  type ResourceType,
  resourceFromCrd,
  resourceKey,
} from './resources.js';
import { fieldsMatch, labelsMatch, parseFieldSelector, parseLabelSelector } from './selectors.js';
import type { Store, StoredEvent } from './store.js';

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

export interface WriteOptions {
  dryRun?: boolean;
  fieldValidation?: FieldValidation;
  fieldManager?: string;
  subresource?: 'status';
}

export interface DeleteOptions {
  dryRun?: boolean;
  propagationPolicy?: 'Orphan' | 'Background' | 'Foreground';
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
}

export interface Selectors {
  labelSelector?: string;
  fieldSelector?: string;
}

export interface WatchOptions extends Selectors {
  resourceVersion?: string;
  /** Send ADDED events for what exists first (watch without a resourceVersion). */
  sendInitialEvents?: boolean;
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: KObject | JsonObject;
}

/** Checks a custom resource against its CRD's schema: field causes, and unknown field paths. */
export type SchemaCheck = (crd: KObject, obj: KObject) => { causes: StatusCause[]; unknown: string[] };

export type PatchType = 'json' | 'merge' | 'strategic' | 'apply';

export interface ApiOptions {
  store: Store;
  /** Service ClusterIP range (an IPv4 /12 to /24); the first address is the `kubernetes` service's. */
  serviceCidr?: string;
  nodePortRange?: [number, number];
  podCidrs?: string[];
  schemaCheck?: SchemaCheck;
}

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const SUFFIX_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
export const randomSuffix = (n = 5) =>
  Array.from({ length: n }, () => SUFFIX_CHARS[randomInt(SUFFIX_CHARS.length)]).join('');

function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}
function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}
function cidrRange(cidr: string): [number, number] {
  const [ip, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  const base = Math.floor(ipToInt(ip!) / size) * size;
  return [base, base + size - 1];
}

/** JSON with sorted keys: equal objects give equal strings whatever order their keys came in. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_, x: unknown) =>
    isObject(x)
      ? Object.fromEntries(
          Object.keys(x)
            .sort()
            .map((k) => [k, x[k]]),
        )
      : x,
  );
}

/** Everything but metadata and status: what bumps `generation` when it changes. */
function specOf(o: KObject): string {
  const { metadata: _m, status: _s, ...rest } = o;
  return canonical(rest);
}

export class Api {
  readonly store: Store;
  readonly #types = new Map<string, ResourceType>();
  readonly #serviceRange: [number, number];
  readonly #nodePorts: [number, number];
  readonly #podRanges: [number, number][];
  readonly #schemaCheck: SchemaCheck | undefined;
  /** Listeners for resources appearing or disappearing (CRDs), e.g. to refresh discovery caches. */
  readonly #onTypes = new Set<() => void>();

  constructor(o: ApiOptions) {
    this.store = o.store;
    this.#serviceRange = cidrRange(o.serviceCidr ?? '10.96.0.0/16');
    this.#nodePorts = o.nodePortRange ?? [30000, 32767];
    this.#podRanges = (o.podCidrs ?? ['10.244.0.0/16']).map(cidrRange);
    this.#schemaCheck = o.schemaCheck;
    for (const r of BUILTIN_RESOURCES) this.#types.set(resourceKey(r), r);
    for (const crd of this.store.list('apiextensions.k8s.io/customresourcedefinitions'))
      this.#registerCrd(crd);
  }

  // ------------------------------------------------------------------ registry

  resources(): ResourceType[] {
    return [...this.#types.values()];
  }

  resource(group: string, plural: string): ResourceType | undefined {
    return this.#types.get(`${group}/${plural}`);
  }

  /** The resource serving `apiVersion`+`kind`, as in a manifest. */
  resourceFor(apiVersion: string, kind: string): ResourceType | undefined {
    return this.resources().find((r) => apiVersionOf(r) === apiVersion && r.kind === kind);
  }

  onTypesChanged(fn: () => void): () => void {
    this.#onTypes.add(fn);
    return () => this.#onTypes.delete(fn);
  }

  #registerCrd(crd: KObject): void {
    const r = resourceFromCrd(crd);
    if (!r) return;
    this.#types.set(resourceKey(r), r);
    for (const fn of this.#onTypes) fn();
  }

  #crdOf(r: ResourceType): KObject | undefined {
    return r.crd
      ? this.store.get('apiextensions.k8s.io/customresourcedefinitions', undefined, r.crd)
      : undefined;
  }

  // ------------------------------------------------------------------- reading

  get(r: ResourceType, namespace: string | undefined, name: string): KObject {
    const o = this.store.get(resourceKey(r), r.namespaced ? namespace : undefined, name);
    if (!o) throw errors.notFound(r, name);
    return o;
  }

  tryGet(r: ResourceType, namespace: string | undefined, name: string): KObject | undefined {
    return this.store.get(resourceKey(r), r.namespaced ? namespace : undefined, name);
  }

  #matcher(s: Selectors): (o: KObject) => boolean {
    const labels = s.labelSelector ? parseLabelSelector(s.labelSelector) : [];
    const fields = s.fieldSelector ? parseFieldSelector(s.fieldSelector) : [];
    return (o) => labelsMatch(labels, o.metadata.labels ?? {}) && fieldsMatch(fields, o);
  }

  list(
    r: ResourceType,
    namespace: string | undefined,
    s: Selectors = {},
  ): { items: KObject[]; resourceVersion: string } {
    const match = this.#matcher(s);
    const items = this.store.list(resourceKey(r), r.namespaced ? namespace : undefined).filter(match);
    return { items, resourceVersion: String(this.store.resourceVersion) };
  }

  // ------------------------------------------------------------------- writing

  #context(): AdmissionContext {
    return {
      allocateClusterIp: (requested, path) => this.#allocateClusterIp(requested, path),
      allocateNodePort: (requested, path) => this.#allocateNodePort(requested, path),
      inPodCidr: (ip) => this.#podRanges.some(([a, b]) => ipToInt(ip) >= a && ipToInt(ip) <= b),
    };
  }

  #usedClusterIps(): Set<string> {
    return new Set(
      this.store
        .list('/services')
        .map((s) => (isObject(s.spec) ? String(s.spec.clusterIP ?? '') : ''))
        .filter(Boolean),
    );
  }

  #allocateClusterIp(requested: string | undefined, path: string): string {
    const [lo, hi] = this.#serviceRange;
    const used = this.#usedClusterIps();
    if (requested) {
      const n = /^(\d{1,3}\.){3}\d{1,3}$/.test(requested) ? ipToInt(requested) : -1;
      if (n <= lo || n >= hi)
        throw field.invalid(
          path,
          requested,
          `provided IP is not in the valid range. The range of valid IPs is ${intToIp(lo)}/${32 - Math.log2(hi - lo + 1)}`,
        );
      if (used.has(requested)) throw field.invalid(path, requested, 'provided IP is already allocated');
      return requested;
    }
    const size = hi - lo - 1;
    const start = randomInt(size);
    for (let i = 0; i < size; i++) {
      const ip = intToIp(lo + 1 + ((start + i) % size));
      if (ip !== intToIp(lo + 1) && !used.has(ip)) return ip;
    }
    throw field.invalid(path, '', 'no free addresses in the service range');
  }

  #allocateNodePort(requested: number | undefined, path: string): number {
    const [lo, hi] = this.#nodePorts;
    const used = new Set<number>();
    for (const s of this.store.list('/services'))
      for (const p of isObject(s.spec) && Array.isArray(s.spec.ports) ? s.spec.ports : [])
        if (isObject(p) && typeof p.nodePort === 'number') used.add(p.nodePort);
    if (requested !== undefined) {
      if (!Number.isInteger(requested) || requested < lo || requested > hi)
        throw field.invalid(
          path,
          requested,
          `provided port is not in the valid range. The range of valid ports is ${lo}-${hi}`,
        );
      return requested;
    }
    const size = hi - lo + 1;
    const start = randomInt(size);
    for (let i = 0; i < size; i++) {
      const p = lo + ((start + i) % size);
      if (!used.has(p)) return p;
    }
    throw field.invalid(path, '', 'no free node ports');
  }

  /** Identity, schema and admission; returns warnings. Throws 422/400 on bad input. */
  #check(r: ResourceType, o: KObject, old: KObject | undefined, opts: WriteOptions): string[] {
    const name = o.metadata.name ?? o.metadata.generateName ?? '';
    const warnings: string[] = [];
    const expected = apiVersionOf(r);
    if (o.apiVersion !== expected || o.kind !== r.kind)
      throw errors.badRequest(
        `the API version in the data (${o.apiVersion}) does not match the expected API version (${expected}) or kind ${o.kind} is not ${r.kind}`,
      );
    const crd = this.#crdOf(r);
    if (crd && this.#schemaCheck) {
      // Unknown fields first: a strict decoder refuses them before any schema is checked.
      const { causes, unknown } = this.#schemaCheck(crd, o);
      if (unknown.length) {
        const mode = opts.fieldValidation ?? 'Warn';
        if (mode === 'Strict')
          throw errors.badRequest(
            `strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(', ')}`,
          );
        if (mode === 'Warn') warnings.push(...unknown.map((u) => `unknown field "${u}"`));
      }
      if (causes.length) throw errors.invalid(r, name, causes);
    }
    const causes = admit(r, o, old, this.#context());
    if (causes.length) throw errors.invalid(r, name, causes);
    return warnings;
  }

  create(
    r: ResourceType,
    namespace: string | undefined,
    body: unknown,
    opts: WriteOptions = {},
  ): { object: KObject; warnings: string[] } {
    const o = this.#asObject(r, body);
    const meta = o.metadata;
    if (r.namespaced) {
      if (meta.namespace && namespace && meta.namespace !== namespace)
        throw errors.badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      meta.namespace = namespace ?? meta.namespace ?? 'default';
      const ns = this.store.get('/namespaces', undefined, meta.namespace);
      if (!ns)
        throw new ApiError(404, 'NotFound', `namespaces "${meta.namespace}" not found`, {
          name: meta.namespace,
          kind: 'namespaces',
        });
      if (ns.metadata.deletionTimestamp)
        throw new ApiError(
          403,
          'Forbidden',
          `${r.plural} "${meta.name ?? ''}" is forbidden: unable to create new content in namespace ${meta.namespace} because it is being terminated`,
        );
    } else delete meta.namespace;
    if (!meta.name) {
      if (!meta.generateName)
        throw errors.invalid(r, '', [field.required('metadata.name', 'name or generateName is required')]);
      do meta.name = `${meta.generateName}${randomSuffix()}`;
      while (this.tryGet(r, meta.namespace, meta.name));
    }
    if (this.tryGet(r, meta.namespace, meta.name)) throw errors.alreadyExists(r, meta.name);
    const warnings = this.#check(r, o, undefined, opts);
    meta.uid = randomUUID();
    meta.creationTimestamp = now();
    meta.generation = 1;
    delete meta.resourceVersion;
    delete meta.deletionTimestamp;
    if (r.statusSubresource && r.crd) delete o.status;
    if (r.kind === 'CustomResourceDefinition') this.#crdStatus(o);
    if (opts.dryRun) return { object: o, warnings };
    const stored = this.store.put(resourceKey(r), o, 'ADDED');
    if (r.kind === 'CustomResourceDefinition') this.#registerCrd(stored);
    return { object: stored, warnings };
  }

  #asObject(r: ResourceType, body: unknown): KObject {
    if (!isObject(body)) throw errors.badRequest(`the body of a ${r.kind} must be a JSON object`);
    const o = clone(body) as KObject;
    if (!isObject(o.metadata)) o.metadata = {};
    o.apiVersion ??= apiVersionOf(r);
    o.kind ??= r.kind;
    return o;
  }

  #crdStatus(o: KObject): void {
    const spec = isObject(o.spec) ? o.spec : {};
    const t = now();
    o.status = {
      acceptedNames: spec.names ?? {},
      storedVersions: Array.isArray(spec.versions)
        ? spec.versions
            .filter(isObject)
            .filter((v) => v.storage)
            .map((v) => v.name)
        : [],
      conditions: [
        {
          type: 'NamesAccepted',
          status: 'True',
          reason: 'NoConflicts',
          message: 'no conflicts found',
          lastTransitionTime: t,
        },
        {
          type: 'Established',
          status: 'True',
          reason: 'InitialNamesAccepted',
          message: 'the initial names have been accepted',
          lastTransitionTime: t,
        },
      ],
    };
  }

  update(
    r: ResourceType,
    namespace: string | undefined,
    name: string,
    body: unknown,
    opts: WriteOptions = {},
  ): { object: KObject; warnings: string[] } {
    const o = this.#asObject(r, body);
    const ns = r.namespaced ? namespace : undefined;
    if (o.metadata.name && o.metadata.name !== name)
      throw errors.badRequest(
        `the name of the object (${o.metadata.name}) does not match the name on the URL (${name})`,
      );
    const old = this.tryGet(r, ns, name);
    if (!old) {
      if (opts.subresource) throw errors.notFound(r, name);
      // PUT on a missing object creates it, as kube-apiserver allows for most kinds.
      return this.create(r, ns, { ...o, metadata: { ...o.metadata, name } }, opts);
    }
    const rv = o.metadata.resourceVersion;
    if (rv && rv !== old.metadata.resourceVersion)
      throw errors.conflict(
        r,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    let next: KObject;
    if (opts.subresource === 'status') {
      next = { ...old, status: o.status };
    } else {
      next = o;
      // Immutable bookkeeping stays the server's.
      for (const k of [
        'uid',
        'creationTimestamp',
        'deletionTimestamp',
        'deletionGracePeriodSeconds',
        'generation',
      ] as const) {
        if (old.metadata[k] === undefined) delete next.metadata[k];
        else (next.metadata as Record<string, unknown>)[k] = old.metadata[k];
      }
      next.metadata.namespace = old.metadata.namespace;
      if (!r.namespaced) delete next.metadata.namespace;
      next.metadata.name = name;
      if (r.statusSubresource) {
        if (old.status === undefined) delete next.status;
        else next.status = old.status;
      }
    }
    const warnings = this.#check(r, next, old, opts);
    if (specOf(next) !== specOf(old)) next.metadata.generation = (old.metadata.generation ?? 1) + 1;
    if (r.kind === 'CustomResourceDefinition') this.#crdStatus(next);
    if (opts.dryRun) return { object: next, warnings };
    // A write that changes nothing is not a write: no new resourceVersion, no watch event.
    next.metadata.resourceVersion = old.metadata.resourceVersion;
    if (canonical(next) === canonical(old)) return { object: old, warnings };
    if (next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      return { object: this.#remove(r, next), warnings };
    }
    const stored = this.store.put(resourceKey(r), next, 'MODIFIED');
    if (r.kind === 'CustomResourceDefinition') this.#registerCrd(stored);
    return { object: stored, warnings };
  }

  patch(
    r: ResourceType,
    namespace: string | undefined,
    name: string,
    type: PatchType,
    patch: unknown,
    opts: WriteOptions = {},
  ): { object: KObject; warnings: string[] } {
    const ns = r.namespaced ? namespace : undefined;
    const old = this.tryGet(r, ns, name);
    if (!old) {
      if (type === 'apply' && !opts.subresource) return this.create(r, ns, patch, opts);
      throw errors.notFound(r, name);
    }
    let next: unknown;
    switch (type) {
      case 'json':
        next = jsonPatch(old, patch);
        break;
      case 'merge':
        next = mergePatch(old, patch);
        break;
      case 'strategic':
      case 'apply':
        // Custom resources have no patch strategies: strategic merge is a merge patch for them.
        next = r.crd && type === 'strategic' ? mergePatch(old, patch) : strategicMergePatch(old, patch);
        break;
    }
    if (!isObject(next)) throw errors.badRequest('the patch did not produce an object');
    const meta = isObject(next.metadata) ? next.metadata : {};
    // A patch that names a resourceVersion is a precondition; otherwise it applies to the latest.
    if (!isObject(patch) || !isObject(patch.metadata) || patch.metadata.resourceVersion === undefined)
      meta.resourceVersion = old.metadata.resourceVersion;
    return this.update(r, ns, name, next, opts);
  }

  delete(r: ResourceType, namespace: string | undefined, name: string, opts: DeleteOptions = {}): KObject {
    const ns = r.namespaced ? namespace : undefined;
    const o = this.get(r, ns, name);
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== o.metadata.uid)
      throw errors.conflict(
        r,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${o.metadata.uid}`,
      );
    if (pre?.resourceVersion && pre.resourceVersion !== o.metadata.resourceVersion)
      throw errors.conflict(
        r,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${o.metadata.resourceVersion}`,
      );
    if (opts.dryRun) return o;
    const grace =
      opts.gracePeriodSeconds ?? (isObject(o.spec) ? Number(o.spec.terminationGracePeriodSeconds ?? 30) : 30);
    const bound =
      r.kind === 'Pod' && isObject(o.spec) && typeof o.spec.nodeName === 'string' && o.spec.nodeName;
    const finalizers = o.metadata.finalizers ?? [];
    if (opts.propagationPolicy === 'Orphan') this.#orphan(o);
    if (r.kind === 'Namespace') return this.#deleteNamespace(o);
    // A pod on a node terminates there first: its kubelet deletes it once its processes stop.
    if (finalizers.length || (bound && grace > 0)) {
      if (o.metadata.deletionTimestamp) return o;
      o.metadata.deletionTimestamp = now();
      o.metadata.deletionGracePeriodSeconds = bound ? grace : 0;
      return this.store.put(resourceKey(r), o, 'MODIFIED');
    }
    return this.#remove(r, o);
  }

  deleteCollection(
    r: ResourceType,
    namespace: string | undefined,
    s: Selectors,
    opts: DeleteOptions = {},
  ): KObject[] {
    return this.list(r, namespace, s).items.map((o) =>
      this.delete(r, o.metadata.namespace, o.metadata.name!, opts),
    );
  }

  #remove(r: ResourceType, o: KObject): KObject {
    const gone = this.store.remove(resourceKey(r), o.metadata.namespace, o.metadata.name!) ?? o;
    if (r.kind === 'CustomResourceDefinition') {
      const served = resourceFromCrd(o);
      if (served) {
        this.store.removeAll(resourceKey(served));
        this.#types.delete(resourceKey(served));
        for (const fn of this.#onTypes) fn();
      }
    }
    this.#collectDependents(o.metadata.uid);
    return gone;
  }

  /** Owner-reference garbage collection (background propagation). */
  #collectDependents(uid: string | undefined): void {
    if (!uid) return;
    for (const { resource, object } of this.store.all()) {
      if (!(object.metadata.ownerReferences ?? []).some((ref) => ref.uid === uid)) continue;
      const [group, plural] = resource.split('/') as [string, string];
      const r = this.resource(group, plural);
      if (r && this.tryGet(r, object.metadata.namespace, object.metadata.name!))
        this.delete(r, object.metadata.namespace, object.metadata.name!, { propagationPolicy: 'Background' });
    }
  }

  #orphan(owner: KObject): void {
    for (const { resource, object } of this.store.all()) {
      const refs = object.metadata.ownerReferences ?? [];
      if (!refs.some((ref) => ref.uid === owner.metadata.uid)) continue;
      object.metadata.ownerReferences = refs.filter((ref) => ref.uid !== owner.metadata.uid);
      this.store.put(resource, object, 'MODIFIED');
    }
  }

  /** Terminating, then everything in it goes, then the namespace itself. */
  #deleteNamespace(o: KObject): KObject {
    const name = o.metadata.name!;
    if (!o.metadata.deletionTimestamp) {
      o.metadata.deletionTimestamp = now();
      o.status = { phase: 'Terminating' };
      o = this.store.put('/namespaces', o, 'MODIFIED');
    }
    const sweep = () => {
      for (const resource of this.store.resourcesIn(name)) {
        const [group, plural] = resource.split('/') as [string, string];
        const r = this.resource(group, plural);
        if (!r) continue;
        for (const x of this.store.list(resource, name)) {
          if (this.tryGet(r, name, x.metadata.name!)) this.delete(r, name, x.metadata.name!, {});
        }
      }
      if (this.store.resourcesIn(name).length === 0) {
        const ns = this.store.get('/namespaces', undefined, name);
        if (ns) this.#remove(this.resource('', 'namespaces')!, ns);
      } else setTimeout(sweep, 200).unref();
    };
    setImmediate(sweep);
    return o;
  }

  // --------------------------------------------------------------------- watch

  /**
   * Streams changes to `send`. Selectors are applied as kube-apiserver applies them: an
   * object that stops matching is DELETED for this watcher, one that starts is ADDED.
   */
  watch(
    r: ResourceType,
    namespace: string | undefined,
    opts: WatchOptions,
    send: (ev: WatchEvent) => void,
  ): () => void {
    const match = this.#matcher(opts);
    const filtered = Boolean(opts.labelSelector || opts.fieldSelector);
    const ns = r.namespaced ? namespace : undefined;
    const key = resourceKey(r);
    const visible = new Set<string>();
    const id = (o: KObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const rv = opts.resourceVersion;
    let since: number;
    if (!rv || rv === '0' || opts.sendInitialEvents) {
      for (const o of this.store.list(key, ns).filter(match)) {
        visible.add(id(o));
        send({ type: 'ADDED', object: o });
      }
      since = this.store.resourceVersion;
      if (opts.sendInitialEvents)
        send({
          type: 'BOOKMARK',
          object: {
            kind: r.kind,
            apiVersion: apiVersionOf(r),
            metadata: {
              resourceVersion: String(since),
              annotations: { 'k8s.io/initial-events-end': 'true' },
            },
          },
        });
    } else {
      since = Number(rv);
      if (!Number.isInteger(since)) throw errors.badRequest(`invalid resource version: ${rv}`);
      // Objects visible at `since` are unknown here; treat every current match as visible.
      for (const o of this.store.list(key, ns).filter(match)) visible.add(id(o));
    }
    return this.store.watch(
      {
        resource: key,
        ...(ns !== undefined ? { namespace: ns } : {}),
        send: (ev: StoredEvent) => {
          if (!filtered) {
            send({ type: ev.type, object: clone(ev.object) });
            return;
          }
          const k = id(ev.object);
          const was = visible.has(k);
          const is = ev.type !== 'DELETED' && match(ev.object);
          if (is) visible.add(k);
          else visible.delete(k);
          if (is) send({ type: was ? 'MODIFIED' : 'ADDED', object: clone(ev.object) });
          else if (was) send({ type: 'DELETED', object: clone(ev.object) });
        },
      },
      since,
    );
  }
}
