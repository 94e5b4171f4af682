/**
 * Cluster identities as CiliumIdentity objects (no client library here: the agent loads
 * the Kubernetes client only when it watches a cluster).
 */
import { createHash } from 'node:crypto';
import { errorMessage } from '../errors.js';
import { type Identity, type IdentityAllocator, labelsKey, MIN_CLUSTER_IDENTITY } from '../identity/index.js';
import type { Labels } from '../k8s/selector.js';

const CILIUM = { group: 'cilium.io', version: 'v2' };
const MAX_CLUSTER_IDENTITY = 65535;

/** What the allocator needs of a Kubernetes client: creating a cluster-scoped custom object. */
export interface IdentityWriter {
  createClusterCustomObject(req: {
    group: string;
    version: string;
    plural: string;
    body: object;
  }): Promise<unknown>;
}

/**
 * Cluster identities as CiliumIdentity objects. The number for a new label set comes
 * from a hash of the labels, probing past numbers already taken, so two nodes meeting the
 * same pods at once pick the same number and the second create finds it made. A number
 * another label set won in a race is given up and the label set allocated again.
 */
export class CrdIdentityAllocator implements IdentityAllocator {
  readonly #byKey = new Map<string, Identity>();
  readonly #byId = new Map<number, Identity>();
  readonly #pending = new Map<number, Identity>();
  #custom: IdentityWriter | undefined;
  /** Called when a pending identity lost its number: endpoints using it must re-allocate. */
  onConflict: (() => void) | undefined;

  bind(custom: IdentityWriter): void {
    this.#custom = custom;
    for (const id of this.#pending.values()) this.#create(id);
  }

  /** The identities the cluster holds, from the informer. */
  sync(all: Identity[]): void {
    this.#byKey.clear();
    this.#byId.clear();
    for (const id of all) {
      this.#byKey.set(labelsKey(id.labels), id);
      this.#byId.set(id.id, id);
    }
    let lost = false;
    for (const [n, id] of this.#pending) {
      const won = this.#byId.get(n);
      if (!won) continue;
      this.#pending.delete(n);
      if (labelsKey(won.labels) !== labelsKey(id.labels)) lost = true;
    }
    if (lost) this.onConflict?.();
  }

  allocate(labels: Labels): Identity {
    const key = labelsKey(labels);
    const known =
      this.#byKey.get(key) ?? [...this.#pending.values()].find((p) => labelsKey(p.labels) === key);
    if (known) return known;
    const span = MAX_CLUSTER_IDENTITY - MIN_CLUSTER_IDENTITY + 1;
    const start = createHash('sha256').update(key).digest().readUInt32BE(0) % span;
    for (let i = 0; i < span; i++) {
      const n = MIN_CLUSTER_IDENTITY + ((start + i) % span);
      if (this.#byId.has(n) || this.#pending.has(n)) continue;
      const id = { id: n, labels: { ...labels } };
      this.#pending.set(n, id);
      this.#create(id);
      return id;
    }
    throw new Error('no cluster identity left');
  }

  #create(id: Identity): void {
    if (!this.#custom) return;
    const body = {
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumIdentity',
      metadata: {
        name: String(id.id),
        labels: Object.fromEntries(
          Object.entries(id.labels)
            .filter(
              ([k, v]) =>
                k.length <= 63 && v.length <= 63 && /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(v),
            )
            .filter(([k]) => /^([a-z0-9.-]+\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(k)),
        ),
      },
      'security-labels': Object.fromEntries(Object.entries(id.labels).map(([k, v]) => [`k8s:${k}`, v])),
    };
    this.#custom
      .createClusterCustomObject({ ...CILIUM, plural: 'ciliumidentities', body })
      .catch((err: unknown) => {
        // 409: made already, by another node for the same labels or not; the informer tells which.
        if ((err as { code?: number }).code !== 409)
          console.error(`hypha agent: identity ${id.id}: ${errorMessage(err)}`);
      });
  }

  release(): void {
    // Unused identities are garbage-collected cluster-wide (the operator's job), not here.
  }

  lookup(n: number): Identity | undefined {
    return this.#byId.get(n) ?? this.#pending.get(n);
  }

  all(): Identity[] {
    return [...this.#byId.values(), ...this.#pending.values()];
  }
}
