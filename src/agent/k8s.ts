/**
 * The agent's view of a Kubernetes cluster, through @kubernetes/client-node informers:
 * the same code against the lab's API server or a real one. It records what the cluster
 * wants (namespaces and pods for labels, policies, identities, other nodes' endpoints)
 * and hands the agent whole snapshots, debounced, through the same interface the manifest
 * directory uses. Identities are allocated cluster-wide as CiliumIdentity objects, and
 * each local endpoint is published as a CiliumEndpoint, which is how other nodes learn
 * which identity stands behind a remote pod IP.
 */

import {
  CoreV1Api,
  CustomObjectsApi,
  type Informer,
  KubeConfig,
  type KubernetesObject,
  makeInformer,
  NetworkingV1Api,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { errorMessage, ValidationError } from '../errors.js';
import { formatLabels, type Identity } from '../identity/index.js';
import type { Labels } from '../k8s/selector.js';
import { type Policy, parsePolicy } from '../policy/index.js';
import type { CrdIdentityAllocator } from './identities.js';

export interface ClusterState {
  podLabels: Map<string, Labels>;
  nsLabels: Map<string, Labels>;
  policies: Policy[];
  errors: string[];
}

/** A pod IP on another node and the identity behind it. */
export interface RemoteEndpoint {
  ip: string;
  identity: number;
  node: string;
}

/** What the watcher needs from the agent. */
export interface ClusterSink {
  setClusterState(state: ClusterState): void;
  setIdentities(ids: Identity[]): void;
  setRemoteEndpoints(eps: RemoteEndpoint[]): void;
}

/** The local endpoint facts a CiliumEndpoint publishes. */
export interface PublishedEndpoint {
  id: number;
  podNamespace: string;
  podName: string;
  ip: string;
  identity: number;
  labels: Labels;
  state: string;
}

const CILIUM = { group: 'cilium.io', version: 'v2' };
const DEBOUNCE_MS = 15;
const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

type Obj = KubernetesObject & Record<string, unknown>;

function labelsFromSecurity(raw: unknown): Labels {
  const out: Record<string, string> = {};
  if (raw && typeof raw === 'object')
    for (const [k, v] of Object.entries(raw as Record<string, unknown>))
      out[k.replace(/^k8s:/, '')] = String(v);
  return out;
}

export interface KubernetesWatcherOptions {
  kubeconfig: string;
  node: string;
  sink: ClusterSink;
  allocator: CrdIdentityAllocator;
  log?: (msg: string) => void;
}

export class KubernetesWatcher {
  readonly #kc = new KubeConfig();
  readonly #o: KubernetesWatcherOptions;
  readonly #informers: Informer<Obj>[] = [];
  readonly #core: CoreV1Api;
  readonly #net: NetworkingV1Api;
  readonly #custom: CustomObjectsApi;
  readonly #cache = new Map<string, Map<string, Obj>>();
  #timer: NodeJS.Timeout | undefined;
  #synced = false;
  readonly #published = new Map<string, string>();

  constructor(o: KubernetesWatcherOptions) {
    this.#o = o;
    this.#kc.loadFromFile(o.kubeconfig);
    this.#core = this.#kc.makeApiClient(CoreV1Api);
    this.#net = this.#kc.makeApiClient(NetworkingV1Api);
    this.#custom = this.#kc.makeApiClient(CustomObjectsApi);
  }

  async start(): Promise<void> {
    const custom = (plural: string) => () =>
      this.#custom.listClusterCustomObject({ ...CILIUM, plural }) as Promise<{
        items: Obj[];
        metadata?: { resourceVersion?: string };
      }>;
    const sources: [string, string, () => Promise<{ items: Obj[] }>][] = [
      ['namespaces', '/api/v1/namespaces', () => this.#core.listNamespace() as never],
      ['pods', '/api/v1/pods', () => this.#core.listPodForAllNamespaces() as never],
      [
        'networkpolicies',
        '/apis/networking.k8s.io/v1/networkpolicies',
        () => this.#net.listNetworkPolicyForAllNamespaces() as never,
      ],
      ['ciliumnetworkpolicies', '/apis/cilium.io/v2/ciliumnetworkpolicies', custom('ciliumnetworkpolicies')],
      [
        'ciliumclusterwidenetworkpolicies',
        '/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies',
        custom('ciliumclusterwidenetworkpolicies'),
      ],
      ['ciliumidentities', '/apis/cilium.io/v2/ciliumidentities', custom('ciliumidentities')],
      ['ciliumendpoints', '/apis/cilium.io/v2/ciliumendpoints', custom('ciliumendpoints')],
    ];
    for (const [name, path, list] of sources) {
      const cache = new Map<string, Obj>();
      this.#cache.set(name, cache);
      const inf = makeInformer<Obj>(this.#kc, path, list as never);
      const key = (o: Obj) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
      inf.on('add', (o) => this.#changed(cache.set(key(o), o)));
      inf.on('update', (o) => this.#changed(cache.set(key(o), o)));
      inf.on('delete', (o) => this.#changed(cache.delete(key(o))));
      inf.on('error', (err) => {
        this.#o.log?.(`watch ${path}: ${errorMessage(err)}; retrying`);
        setTimeout(() => void inf.start().catch(() => {}), 1000).unref();
      });
      this.#informers.push(inf);
    }
    await Promise.all(this.#informers.map((i) => i.start()));
    this.#synced = true;
    this.#o.allocator.bind(this.#custom);
    this.#flush();
  }

  stop(): void {
    clearTimeout(this.#timer);
    for (const i of this.#informers) void i.stop();
  }

  #changed(_: unknown): void {
    if (!this.#synced || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, DEBOUNCE_MS);
  }

  #items(name: string): Obj[] {
    return [...(this.#cache.get(name)?.values() ?? [])];
  }

  #flush(): void {
    const { sink, allocator } = this.#o;
    const ids = this.#items('ciliumidentities').map((o) => ({
      id: Number(o.metadata?.name),
      labels: labelsFromSecurity(o['security-labels']),
    }));
    allocator.sync(ids.filter((i) => Number.isInteger(i.id)));
    sink.setIdentities(allocator.all());
    const nsLabels = new Map<string, Labels>();
    for (const ns of this.#items('namespaces')) nsLabels.set(ns.metadata!.name!, ns.metadata?.labels ?? {});
    const podLabels = new Map<string, Labels>();
    for (const p of this.#items('pods'))
      podLabels.set(`${p.metadata?.namespace}/${p.metadata?.name}`, p.metadata?.labels ?? {});
    const policies: Policy[] = [];
    const errors: string[] = [];
    for (const [name, kind, apiVersion] of [
      ['networkpolicies', 'NetworkPolicy', 'networking.k8s.io/v1'],
      ['ciliumnetworkpolicies', 'CiliumNetworkPolicy', 'cilium.io/v2'],
      ['ciliumclusterwidenetworkpolicies', 'CiliumClusterwideNetworkPolicy', 'cilium.io/v2'],
    ] as const) {
      for (const o of this.#items(name)) {
        try {
          policies.push(...parsePolicy({ ...o, kind, apiVersion } as Record<string, unknown>).policies);
        } catch (err) {
          if (!(err instanceof ValidationError)) throw err;
          errors.push(err.message);
        }
      }
    }
    sink.setClusterState({ podLabels, nsLabels, policies, errors });
    const remote: RemoteEndpoint[] = [];
    for (const cep of this.#items('ciliumendpoints')) {
      const status = (cep.status ?? {}) as {
        identity?: { id?: number };
        networking?: { node?: string; addressing?: { ipv4?: string }[] };
      };
      const node = cep.metadata?.labels?.['hypha.io/node'] ?? '';
      const ip = status.networking?.addressing?.[0]?.ipv4;
      const identity = status.identity?.id;
      if (node !== this.#o.node && ip && identity) remote.push({ ip, identity, node });
    }
    sink.setRemoteEndpoints(remote);
  }

  #publishing: Promise<void> | undefined;
  #next: { endpoints: PublishedEndpoint[]; nodeIp: string } | undefined;

  /**
   * Makes the CiliumEndpoint objects match the local endpoints; writes only what changed.
   * Calls while one runs collapse into one more run with the latest endpoints.
   */
  publish(endpoints: PublishedEndpoint[], nodeIp: string): Promise<void> {
    this.#next = { endpoints, nodeIp };
    this.#publishing ??= (async () => {
      while (this.#next) {
        const n = this.#next;
        this.#next = undefined;
        await this.#publishOnce(n.endpoints, n.nodeIp);
      }
      this.#publishing = undefined;
    })();
    return this.#publishing;
  }

  async #publishOnce(endpoints: PublishedEndpoint[], nodeIp: string): Promise<void> {
    if (!this.#synced) return;
    const wanted = new Map(endpoints.map((e) => [`${e.podNamespace}/${e.podName}`, e]));
    for (const [key, e] of wanted) {
      const status = {
        id: e.id,
        identity: { id: e.identity, labels: formatLabels(e.labels) },
        networking: { addressing: [{ ipv4: e.ip }], node: nodeIp },
        state: e.state,
      };
      const digest = JSON.stringify(status);
      if (this.#published.get(key) === digest) continue;
      const body = {
        apiVersion: 'cilium.io/v2',
        kind: 'CiliumEndpoint',
        metadata: { name: e.podName, namespace: e.podNamespace, labels: { 'hypha.io/node': this.#o.node } },
        status,
      };
      const ref = { ...CILIUM, plural: 'ciliumendpoints', namespace: e.podNamespace, name: e.podName };
      try {
        // CiliumEndpoint has no status subresource: status is written with the object.
        const existing = this.#cache.get('ciliumendpoints')?.get(key);
        if (existing) {
          await this.#custom.patchNamespacedCustomObject(
            { ...ref, body: { metadata: body.metadata, status } },
            MERGE,
          );
        } else {
          await this.#custom.createNamespacedCustomObject({ ...ref, body });
        }
        this.#published.set(key, digest);
      } catch (err) {
        this.#o.log?.(`CiliumEndpoint ${key}: ${errorMessage(err)}`);
      }
    }
    for (const cep of this.#items('ciliumendpoints')) {
      const key = `${cep.metadata?.namespace}/${cep.metadata?.name}`;
      if (cep.metadata?.labels?.['hypha.io/node'] !== this.#o.node || wanted.has(key)) continue;
      this.#published.delete(key);
      await this.#custom
        .deleteNamespacedCustomObject({
          ...CILIUM,
          plural: 'ciliumendpoints',
          namespace: cep.metadata!.namespace!,
          name: cep.metadata!.name!,
        })
        .catch((err: unknown) => this.#o.log?.(`CiliumEndpoint ${key}: ${errorMessage(err)}`));
    }
  }
}
