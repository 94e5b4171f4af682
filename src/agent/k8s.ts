/**
 * The agent's view of a Kubernetes cluster, through @kubernetes/client-node informers:
 * the same code against the lab's API server or a real one. It records what the cluster
 * wants (namespaces and pods for labels, policies, identities, other nodes' endpoints)
 * and hands the agent whole snapshots, debounced, through the same interface the manifest
 * directory uses. Identities are allocated cluster-wide as CiliumIdentity objects, and
 * each local endpoint is published as a CiliumEndpoint, which is how other nodes learn
 * which identity stands behind a remote pod IP.
 */

import { isIP } from 'node:net';
import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
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
import { type Policy, parsePolicy, type ServiceInfo } from '../policy/index.js';
import type { CrdIdentityAllocator } from './identities.js';
import {
  desiredFrontends,
  type EndpointSliceObject,
  type ServiceFrontend,
  type ServiceObject,
  type ServiceProblem,
} from './services.js';

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
  /** The pod behind it (the CiliumEndpoint's name and namespace). */
  namespace?: string;
  podName?: string;
}

/** A Node and its addresses. */
export interface ClusterNode {
  name: string;
  ips: string[];
}

/** What the watcher needs from the agent. */
export interface ClusterSink {
  setClusterState(state: ClusterState): void;
  setIdentities(ids: Identity[]): void;
  setRemoteEndpoints(eps: RemoteEndpoint[]): void;
  /** The cluster's nodes and their addresses (the Nodes' status.addresses IPs). */
  setNodes(nodes: ClusterNode[]): void;
  /** Services whose frontends changed, by `namespace/name` (an empty list: the service is gone). */
  updateServices(changes: Map<string, ServiceFrontend[]>): ServiceProblem[];
  /** What `toServices` policy rules select: a service's labels and selector (undefined: gone). */
  updateServicePeers(changes: Map<string, ServiceInfo | undefined>): void;
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
  /** The node's address: NodePort frontends listen on it. */
  nodeIp?: string;
  /** Backend selection for services without the lb-algorithm annotation. */
  lbAlgorithm?: 'random' | 'maglev';
  log?: (msg: string) => void;
}

export class KubernetesWatcher {
  readonly #kc = new KubeConfig();
  readonly #o: KubernetesWatcherOptions;
  readonly #informers: Informer<Obj>[] = [];
  readonly #core: CoreV1Api;
  readonly #net: NetworkingV1Api;
  readonly #custom: CustomObjectsApi;
  readonly #discovery: DiscoveryV1Api;
  readonly #cache = new Map<string, Map<string, Obj>>();
  #timer: NodeJS.Timeout | undefined;
  #synced = false;
  #flushed = false;
  #dirtyKinds = new Set<string>();
  #dirtyServices = new Set<string>();
  readonly #slicesBySvc = new Map<string, Set<string>>();
  readonly #published = new Map<string, string>();

  constructor(o: KubernetesWatcherOptions) {
    this.#o = o;
    this.#kc.loadFromFile(o.kubeconfig);
    this.#core = this.#kc.makeApiClient(CoreV1Api);
    this.#net = this.#kc.makeApiClient(NetworkingV1Api);
    this.#custom = this.#kc.makeApiClient(CustomObjectsApi);
    this.#discovery = this.#kc.makeApiClient(DiscoveryV1Api);
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
      ['nodes', '/api/v1/nodes', () => this.#core.listNode() as never],
      ['services', '/api/v1/services', () => this.#core.listServiceForAllNamespaces() as never],
      [
        'endpointslices',
        '/apis/discovery.k8s.io/v1/endpointslices',
        () => this.#discovery.listEndpointSliceForAllNamespaces() as never,
      ],
    ];
    for (const [name, path, list] of sources) {
      const cache = new Map<string, Obj>();
      this.#cache.set(name, cache);
      const inf = makeInformer<Obj>(this.#kc, path, list as never);
      const key = (o: Obj) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
      const note = (o: Obj, gone: boolean) => {
        const k = key(o);
        if (gone) cache.delete(k);
        else cache.set(k, o);
        this.#changed(name, o, k, gone);
      };
      inf.on('add', (o) => note(o, false));
      inf.on('update', (o) => note(o, false));
      inf.on('delete', (o) => note(o, true));
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

  /**
   * Records what changed, so a flush recomputes only that: policy state, identities,
   * remote endpoints, or the services touched (one service's change costs that service).
   */
  #changed(kind: string, o: Obj, key: string, gone: boolean): void {
    if (kind === 'services') this.#dirtyServices.add(key);
    else if (kind === 'endpointslices') {
      const svc = `${o.metadata?.namespace ?? ''}/${o.metadata?.labels?.['kubernetes.io/service-name'] ?? ''}`;
      const slices = this.#slicesBySvc.get(svc) ?? new Set<string>();
      if (gone) slices.delete(key);
      else slices.add(key);
      if (slices.size) this.#slicesBySvc.set(svc, slices);
      else this.#slicesBySvc.delete(svc);
      this.#dirtyServices.add(svc);
    } else this.#dirtyKinds.add(kind);
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
    const dirty = this.#dirtyKinds;
    this.#dirtyKinds = new Set();
    const all = !this.#flushed;
    this.#flushed = true;
    if (all || dirty.has('ciliumidentities')) {
      const ids = this.#items('ciliumidentities').map((o) => ({
        id: Number(o.metadata?.name),
        labels: labelsFromSecurity(o['security-labels']),
      }));
      allocator.sync(ids.filter((i) => Number.isInteger(i.id)));
      sink.setIdentities(allocator.all());
    }
    if (
      all ||
      [
        'namespaces',
        'pods',
        'networkpolicies',
        'ciliumnetworkpolicies',
        'ciliumclusterwidenetworkpolicies',
      ].some((k) => dirty.has(k))
    )
      sink.setClusterState(this.#clusterState());
    if (all || dirty.has('ciliumendpoints')) sink.setRemoteEndpoints(this.#remoteEndpoints());
    if (all || dirty.has('nodes')) {
      sink.setNodes(this.#nodes());
      // A pod CIDR that came or went changes which externalIPs are refused.
      const cidrs = this.#podCidrs();
      if (cidrs.join(',') !== this.#cidrs.join(','))
        for (const k of this.#allServiceKeys()) this.#dirtyServices.add(k);
      this.#cidrs = cidrs;
    }
    if (all || this.#dirtyServices.size) {
      const keys = all ? this.#allServiceKeys() : this.#dirtyServices;
      const changes = new Map<string, ServiceFrontend[]>();
      const peers = new Map<string, ServiceInfo | undefined>();
      for (const key of keys) {
        changes.set(key, this.#frontendsOf(key));
        peers.set(key, this.#serviceInfo(key));
      }
      this.#dirtyServices = new Set();
      const problems = sink.updateServices(changes);
      void this.#reportServiceProblems(changes, problems);
      sink.updateServicePeers(peers);
    }
  }

  /** The cluster's pod CIDRs as of the last flush (recomputed when Nodes change, not per service). */
  #cidrs: string[] = [];

  /** Every node's pod CIDRs (spec.podCIDRs, as IPAM in kubernetes mode hands them out). */
  #podCidrs(): string[] {
    const out = new Set<string>();
    for (const n of this.#items('nodes')) {
      const spec = (n as { spec?: { podCIDR?: string; podCIDRs?: string[] } }).spec;
      for (const c of [...(spec?.podCIDRs ?? []), ...(spec?.podCIDR ? [spec.podCIDR] : [])]) out.add(c);
    }
    return [...out].sort();
  }

  /** Every Node's name and IP addresses (InternalIP and ExternalIP). */
  #nodes(): ClusterNode[] {
    return this.#items('nodes').map((n) => {
      const o = n as { status?: { addresses?: { type?: string; address?: string }[] } };
      const ips = (o.status?.addresses ?? [])
        .filter((a) => (a.type === 'InternalIP' || a.type === 'ExternalIP') && a.address && isIP(a.address))
        .map((a) => a.address!);
      return { name: n.metadata?.name ?? '', ips: [...new Set(ips)] };
    });
  }

  /** Problems already posted as Events, by service: each distinct one is posted once. */
  readonly #reported = new Map<string, Set<string>>();

  /**
   * A service frontend the agent refused or doubts becomes a Warning Event on the Service,
   * so `kubectl describe service` says why it does not work (as well as `hypha status`).
   */
  async #reportServiceProblems(changes: Map<string, unknown>, problems: ServiceProblem[]): Promise<void> {
    const now = new Date();
    for (const key of changes.keys()) {
      const mine = problems.filter((p) => p.service === key);
      const seen = this.#reported.get(key) ?? new Set<string>();
      const current = new Set(mine.map((p) => `${p.frontend}: ${p.message}`));
      for (const m of seen) if (!current.has(m)) seen.delete(m);
      const svc = this.#cache.get('services')?.get(key);
      for (const p of mine) {
        const message = `${p.frontend}: ${p.message}`;
        if (seen.has(message) || !svc) continue;
        seen.add(message);
        const [namespace, name] = key.split('/') as [string, string];
        const body = {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { generateName: `${name}.`, namespace },
          involvedObject: {
            apiVersion: 'v1',
            kind: 'Service',
            namespace,
            name,
            uid: svc.metadata?.uid,
            resourceVersion: svc.metadata?.resourceVersion,
          },
          type: 'Warning',
          reason: p.severity === 'error' ? 'FrontendNotProgrammed' : 'FrontendWarning',
          message,
          source: { component: 'cilium-agent', host: this.#o.node },
          reportingComponent: 'cilium-agent',
          reportingInstance: this.#o.node,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        };
        try {
          await this.#core.createNamespacedEvent({ namespace, body: body as never });
        } catch (err) {
          this.#o.log?.(`event for service ${key}: ${errorMessage(err)}`);
        }
      }
      if (seen.size) this.#reported.set(key, seen);
      else this.#reported.delete(key);
    }
  }

  #allServiceKeys(): Set<string> {
    return new Set([...(this.#cache.get('services')?.keys() ?? []), ...this.#slicesBySvc.keys()]);
  }

  /** One service's frontends from its object and its EndpointSlices (none when it is gone). */
  #frontendsOf(key: string): ServiceFrontend[] {
    const svc = this.#cache.get('services')?.get(key);
    if (!svc) return [];
    const sliceCache = this.#cache.get('endpointslices');
    const slices = [...(this.#slicesBySvc.get(key) ?? [])]
      .map((k) => sliceCache?.get(k))
      .filter((x): x is Obj => x !== undefined);
    return [
      ...desiredFrontends([svc as unknown as ServiceObject], slices as unknown as EndpointSliceObject[], {
        nodeName: this.#o.node,
        ...(this.#o.nodeIp ? { nodeIp: this.#o.nodeIp } : {}),
        defaultAlgorithm: this.#o.lbAlgorithm ?? 'random',
        podCidrs: this.#cidrs,
      }).values(),
    ];
  }

  /** A service as toServices rules see it: by selector, or by its endpoints' IPs when it has none. */
  #serviceInfo(key: string): ServiceInfo | undefined {
    const svc = this.#cache.get('services')?.get(key) as unknown as ServiceObject | undefined;
    if (!svc) return undefined;
    const labels = (svc.metadata as { labels?: Record<string, string> }).labels ?? {};
    const base = { namespace: svc.metadata.namespace, name: svc.metadata.name, labels };
    if (svc.spec.selector) return { ...base, selector: svc.spec.selector };
    const sliceCache = this.#cache.get('endpointslices');
    const ips = [...(this.#slicesBySvc.get(key) ?? [])].flatMap((k) =>
      ((sliceCache?.get(k) as unknown as EndpointSliceObject | undefined)?.endpoints ?? []).flatMap(
        (e) => e.addresses ?? [],
      ),
    );
    return { ...base, ips };
  }

  #clusterState(): ClusterState {
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
    return { podLabels, nsLabels, policies, errors };
  }

  #remoteEndpoints(): RemoteEndpoint[] {
    const remote: RemoteEndpoint[] = [];
    for (const cep of this.#items('ciliumendpoints')) {
      const status = (cep.status ?? {}) as {
        identity?: { id?: number };
        networking?: { node?: string; addressing?: { ipv4?: string }[] };
      };
      const node = cep.metadata?.labels?.['hypha.io/node'] ?? '';
      const ip = status.networking?.addressing?.[0]?.ipv4;
      const identity = status.identity?.id;
      if (node !== this.#o.node && ip && identity)
        remote.push({
          ip,
          identity,
          node,
          namespace: cep.metadata?.namespace ?? '',
          podName: cep.metadata?.name ?? '',
        });
    }
    return remote;
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
