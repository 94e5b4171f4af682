/**
 * Security identities: a numeric identity per distinct set of security-relevant labels,
 * numbered as Cilium numbers them. Reserved identities are fixed; cluster identities are
 * allocated from 256 (the allocator is an interface: the agent backs it with
 * CiliumIdentity objects so every node agrees); CIDR and FQDN identities are node-local,
 * `1<<24 | n`.
 */
import type { Labels } from '../k8s/selector.js';

export const ReservedIdentity = {
  Unknown: 0,
  Host: 1,
  World: 2,
  Unmanaged: 3,
  Health: 4,
  Init: 5,
  RemoteNode: 6,
  KubeApiserver: 7,
  Ingress: 8,
} as const;

export const RESERVED_NAMES: Record<number, string> = {
  0: 'unknown',
  1: 'host',
  2: 'world',
  3: 'unmanaged',
  4: 'health',
  5: 'init',
  6: 'remote-node',
  7: 'kube-apiserver',
  8: 'ingress',
};

export const MIN_CLUSTER_IDENTITY = 256;
export const LOCAL_IDENTITY_FLAG = 1 << 24;

export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
export const SERVICE_ACCOUNT_LABEL = 'io.cilium.k8s.policy.serviceaccount';
export const CLUSTER_LABEL = 'io.cilium.k8s.policy.cluster';
export const NAMESPACE_LABELS_PREFIX = 'io.cilium.k8s.namespace.labels.';

/** Labels Cilium leaves out of identities by default: they differ between replicas. */
const EXCLUDED_LABELS = [
  /^pod-template-hash$/,
  /^controller-revision-hash$/,
  /^pod-template-generation$/,
  /^statefulset\.kubernetes\.io\/pod-name$/,
  /^apps\.kubernetes\.io\/pod-index$/,
  /^batch\.kubernetes\.io\/(job-completion-index|controller-uid)$/,
  /^job-name$/,
  /^controller-uid$/,
  /^annotation\./,
  /^io\.kubernetes\.pod\.(uid|name)$/,
];

export function isSecurityRelevant(key: string): boolean {
  return !EXCLUDED_LABELS.some((re) => re.test(key));
}

export interface EndpointLabelsInput {
  namespace: string;
  podLabels: Labels;
  namespaceLabels?: Labels;
  serviceAccount?: string;
  cluster?: string;
}

/**
 * The identity labels of a pod, keyed as Cilium keys them (without the `k8s:` source,
 * which every one of them has): the pod's own labels, its namespace, its namespace's
 * labels, its service account and its cluster.
 */
export function endpointLabels(i: EndpointLabelsInput): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(i.podLabels)) if (isSecurityRelevant(k)) out[k] = v;
  out[NAMESPACE_LABEL] = i.namespace;
  for (const [k, v] of Object.entries(i.namespaceLabels ?? { 'kubernetes.io/metadata.name': i.namespace })) {
    out[`${NAMESPACE_LABELS_PREFIX}${k}`] = v;
  }
  out[SERVICE_ACCOUNT_LABEL] = i.serviceAccount ?? 'default';
  out[CLUSTER_LABEL] = i.cluster ?? 'default';
  return out;
}

/** Canonical key of a label set: identical sets share an identity. */
export function labelsKey(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(';');
}

/** `k8s:app=frontend` strings, sorted, as `cilium-dbg identity list` prints them. */
export function formatLabels(labels: Labels, source = 'k8s'): string[] {
  return Object.keys(labels)
    .sort()
    .map((k) => `${source}:${k}=${labels[k]}`);
}

export interface Identity {
  id: number;
  labels: Labels;
}

/** Allocates cluster identities for label sets. */
export interface IdentityAllocator {
  /** The identity of a label set, allocating one if needed. */
  allocate(labels: Labels): Identity;
  /** Drops a reference; an identity with none left may be reused after GC. */
  release(id: number): void;
  lookup(id: number): Identity | undefined;
  all(): Identity[];
}

/** Deterministic allocation in one process: first seen, lowest number. */
export class MemoryAllocator implements IdentityAllocator {
  readonly #byKey = new Map<string, Identity & { refs: number }>();
  readonly #byId = new Map<number, Identity & { refs: number }>();
  #next = MIN_CLUSTER_IDENTITY;

  allocate(labels: Labels): Identity {
    const key = labelsKey(labels);
    let e = this.#byKey.get(key);
    if (!e) {
      while (this.#byId.has(this.#next)) this.#next++;
      e = { id: this.#next++, labels: { ...labels }, refs: 0 };
      this.#byKey.set(key, e);
      this.#byId.set(e.id, e);
    }
    e.refs++;
    return { id: e.id, labels: e.labels };
  }

  release(id: number): void {
    const e = this.#byId.get(id);
    if (!e) return;
    if (--e.refs <= 0) {
      this.#byId.delete(id);
      this.#byKey.delete(labelsKey(e.labels));
    }
  }

  lookup(id: number): Identity | undefined {
    const e = this.#byId.get(id);
    return e && { id: e.id, labels: e.labels };
  }

  all(): Identity[] {
    return [...this.#byId.values()].map((e) => ({ id: e.id, labels: e.labels }));
  }
}

/** Node-local identities for CIDRs and FQDN addresses: `1<<24 | n`, stable per prefix. */
export class LocalIdentities {
  readonly #byPrefix = new Map<string, number>();
  readonly #byId = new Map<number, string>();
  #next = 1;

  forPrefix(prefix: string): number {
    let id = this.#byPrefix.get(prefix);
    if (id === undefined) {
      id = (LOCAL_IDENTITY_FLAG | this.#next++) >>> 0;
      this.#byPrefix.set(prefix, id);
      this.#byId.set(id, prefix);
    }
    return id;
  }

  prefixOf(id: number): string | undefined {
    return this.#byId.get(id);
  }

  entries(): [string, number][] {
    return [...this.#byPrefix.entries()];
  }
}

export function isLocalIdentity(id: number): boolean {
  return (id & LOCAL_IDENTITY_FLAG) !== 0;
}

export function identityName(id: number): string {
  return RESERVED_NAMES[id] ?? String(id);
}
