/**
 * The agent for one node: IPAM, endpoints, identities, policy and the datapath, driven by
 * its API (endpoints from the CNI plugin) and a directory of manifests (policies,
 * namespaces and pods' labels). Watchers record what is wanted; `#sync` computes policy
 * diffs and writes only those to the maps. Everything the agent must not forget is on
 * disk before a request is answered, and the maps are pinned: a restarted agent adopts
 * both and traffic keeps flowing.
 */
import { EventEmitter } from 'node:events';
import { existsSync, watch, writeFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { cgroup2Root, withNetns } from '../bpf/index.js';
import { HostDatapath } from '../datapath/host.js';
import { Datapath, type DatapathEvent, decodeEvents, EventType } from '../datapath/index.js';
import { ServiceMaps } from '../datapath/lb.js';
import { errorMessage, ValidationError } from '../errors.js';
import { AgentMetrics, cachedMapUsage, type MapUsage } from '../hubble/agent-metrics.js';
import {
  endpointLabels,
  type Identity,
  type IdentityAllocator,
  labelsKey,
  MIN_CLUSTER_IDENTITY,
  ReservedIdentity,
} from '../identity/index.js';
import { loadManifests } from '../k8s/manifests.js';
import type { Labels } from '../k8s/selector.js';
import {
  type EndpointDiff,
  POLICY_KINDS,
  type Policy,
  PolicyRepository,
  parsePolicy,
  policyKey,
  type ServiceInfo,
} from '../policy/index.js';
import { AgentFlows } from './flows.js';
import { DEFAULT_DNS_PROXY_PORT, type DnsProxyStatus, dnsProxyAddress, FqdnManager } from './fqdn.js';
import { CrdIdentityAllocator } from './identities.js';
import { HostScopeIpam } from './ipam.js';
import type { ClusterNode, ClusterState, KubernetesWatcher, RemoteEndpoint } from './k8s.js';
import { type HttpProxyEngine, HttpProxyManager, type HttpProxyStatus } from './l7.js';
import {
  applyServiceChanges,
  frontendKey,
  type ServiceFrontend,
  type ServiceProblem,
  type ServiceRecord,
} from './services.js';
import { readJson, writeJsonAtomic } from './state.js';

export interface AgentConfig {
  node: string;
  podCidr: string;
  stateDir: string;
  socket: string;
  pinDir: string;
  /** Files or folders of manifests: policies, namespaces, pods (for their labels). */
  manifests: string[];
  /** Watch this cluster (a kubeconfig) for namespaces, pods, policies and identities. */
  kubeconfig?: string;
  /** The node's address, published in its CiliumEndpoints; NodePorts listen on it. */
  nodeIp?: string;
  /** The cgroup v2 directory whose processes get service translation at connect() (default: the root). */
  cgroupRoot?: string;
  /** Backend selection for services without Cilium's lb-algorithm annotation (default random). */
  lbAlgorithm?: 'random' | 'maglev';
  /** The node's external devices (Cilium's --devices): NodePorts and externalIPs are translated there. */
  devices?: string[];
  /** Hubble metrics to serve (hubble.metrics.enabled: dns, drop, tcp, flow, port-distribution, icmp, http). */
  hubbleMetrics?: string[];
  /** The DNS proxy's port (Cilium's --tofqdns-proxy-port); 0: no DNS proxy. Default 10053. */
  dnsProxyPort?: number;
  /** Seconds learned DNS IPs live at least (Cilium's --tofqdns-min-ttl); default 0: the answer's TTL. */
  toFqdnsMinTtl?: number;
  /** L7 HTTP proxy processes sharing its ports (default: one per CPU, at most 4). */
  httpProxyWorkers?: number;
  /** What the HTTP proxy workers run: native (default) or node. */
  httpProxyEngine?: HttpProxyEngine;
}

/** What the CNI plugin tells the agent about a pod it wired. */
export interface EndpointRequest {
  containerId: string;
  ifname: string;
  netns: string;
  podNamespace: string;
  podName: string;
  ip: string;
  hostIfname: string;
  hostIfindex: number;
}

/** An endpoint as the agent keeps it. */
export interface EndpointRecord extends EndpointRequest {
  id: number;
  labels: Labels;
  identity: number;
  state: 'ready' | 'regenerating' | 'not-ready';
  lastError?: string;
  policyRevision: number;
}

/**
 * Pods get IPv4 only (the datapath drops IPv6 with 139): turn IPv6 off in the pod, or
 * its router solicitations would show up as drops. /proc/sys/net is the namespace of
 * the thread that opens it, so this needs no process.
 */
function disableIpv6(netns: string): void {
  try {
    withNetns(netns, () => writeFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', '1'));
  } catch {
    // A kernel without IPv6 has nothing to turn off.
  }
}

/** Cluster identities that survive restarts: one per label set, from 256 up. */
class PersistentAllocator implements IdentityAllocator {
  readonly #byKey: Map<string, number>;
  readonly #labels = new Map<number, Labels>();
  constructor(readonly file: string) {
    this.#byKey = new Map(Object.entries(readJson<Record<string, number>>(file, {})));
  }
  allocate(labels: Labels): Identity {
    const key = labelsKey(labels);
    let id = this.#byKey.get(key);
    if (id === undefined) {
      id = Math.max(MIN_CLUSTER_IDENTITY - 1, ...this.#byKey.values()) + 1;
      this.#byKey.set(key, id);
      writeJsonAtomic(this.file, Object.fromEntries(this.#byKey));
    }
    this.#labels.set(id, labels);
    return { id, labels };
  }
  release(): void {
    // Identities are kept until garbage collection (the operator's job in a cluster).
  }
  lookup(id: number): Identity | undefined {
    const labels = this.#labels.get(id);
    return labels && { id, labels };
  }
  all(): Identity[] {
    return [...this.#labels].map(([id, labels]) => ({ id, labels }));
  }
}

export interface AgentStatus {
  node: string;
  podCidr: string;
  ipam: { used: number; capacity: number };
  endpoints: { total: number; ready: number; notReady: number };
  policies: number;
  identities: number;
  manifests: { errors: string[]; loadedAt?: string };
  datapath: { pinDir: string; ok: boolean; error?: string };
  events: { seen: number; dropped: number };
  services: { frontends: number; errors: string[]; cgroup?: string };
  httpProxy?: HttpProxyStatus;
  dnsProxy?: DnsProxyStatus;
}

export type { ServiceRecord } from './services.js';

export class Agent {
  readonly config: AgentConfig;
  readonly ipam: HostScopeIpam;
  readonly repo = new PolicyRepository();
  readonly #alloc: IdentityAllocator;
  #kube: KubernetesWatcher | undefined;
  #lb: ServiceMaps | undefined;
  readonly #hosts: HostDatapath[] = [];
  #lbCgroup: string | undefined;
  readonly #services = new Map<string, ServiceRecord[]>();
  /** `ip:port` of every frontend to its service, for naming services in flows. */
  readonly #serviceAt = new Map<string, { namespace: string; name: string }>();
  #remote = new Map<string, RemoteEndpoint>();
  /** Node addresses in the ipcache and their identities (host or remote-node). */
  #nodeIps = new Map<string, number>();
  #knownIdentities = new Set<number>();
  readonly #endpoints = new Map<string, EndpointRecord>();
  #datapath: Datapath;
  #manifestErrors: string[] = [];
  #manifestsLoadedAt: string | undefined;
  #podLabels = new Map<string, Labels>();
  #nsLabels = new Map<string, Labels>();
  #policyKeys = new Set<string>();
  #revision = 0;
  #watchers: ReturnType<typeof watch>[] = [];
  readonly #events = new EventEmitter();
  /** Flows from the datapath's events, for `hypha observe`. */
  readonly flows: AgentFlows;
  /** toFQDNs and the DNS proxy. */
  readonly fqdn: FqdnManager;
  /** The L7 HTTP proxy child and its rules. */
  readonly #http: HttpProxyManager;
  #eventsAbort = new AbortController();
  #eventCounts = { seen: 0, dropped: 0 };

  constructor(config: AgentConfig) {
    this.config = config;
    this.ipam = new HostScopeIpam(config.podCidr, join(config.stateDir, 'ipam.json'));
    const dnsPort = config.dnsProxyPort ?? DEFAULT_DNS_PROXY_PORT;
    const dnsIp = dnsPort ? dnsProxyAddress(config.nodeIp) : undefined;
    const dnsProxy = dnsIp ? { ip: dnsIp, port: dnsPort } : undefined;
    this.#datapath = Datapath.open({ pinDir: config.pinDir, ...(dnsProxy ? { dnsProxy } : {}) });
    this.flows = new AgentFlows({
      nodeName: config.node,
      repo: this.repo,
      endpoints: () => [...this.#endpoints.values()],
      remote: (ip) => this.#remote.get(ip),
      service: (ip, port) => this.#serviceAt.get(`${ip}:${port}`),
    });
    this.fqdn = new FqdnManager({
      repo: this.repo,
      datapath: this.#datapath,
      apply: (d) => this.#apply(d),
      endpoints: () => [...this.#endpoints.values()],
      addL7: (e) => this.flows.addL7(e),
      proxy: dnsProxy,
      pinDir: config.pinDir,
      minTtl: config.toFqdnsMinTtl ?? 0,
      stateFile: join(config.stateDir, 'fqdn.json'),
      log: (m) => console.error(`hypha agent: ${m}`),
    });
    this.#http = new HttpProxyManager({
      pinDir: config.pinDir,
      podCidr: config.podCidr,
      datapath: this.#datapath,
      repo: this.repo,
      ...(config.httpProxyWorkers ? { workers: config.httpProxyWorkers } : {}),
      ...(config.httpProxyEngine ? { engine: config.httpProxyEngine } : {}),
      runDir: config.stateDir,
      onPacked: (p) => this.flows.addPacked(p),
      log: (m) => console.error(`hypha agent: ${m}`),
    });
    if (config.kubeconfig) {
      const alloc = new CrdIdentityAllocator();
      alloc.onConflict = () => this.#apply(this.repo.bulk(() => this.#relabelAll()));
      this.#alloc = alloc;
    } else {
      this.#alloc = new PersistentAllocator(join(config.stateDir, 'identities.json'));
    }
  }

  /** Starts watching the cluster, if configured; resolves once the first lists are in. */
  async startWatching(): Promise<void> {
    const { kubeconfig } = this.config;
    if (!kubeconfig || !(this.#alloc instanceof CrdIdentityAllocator)) return;
    // The Kubernetes client is loaded only here: other commands start without it.
    const { KubernetesWatcher } = await import('./k8s.js');
    this.#kube = new KubernetesWatcher({
      kubeconfig,
      node: this.config.node,
      sink: this,
      allocator: this.#alloc,
      ...(this.config.nodeIp ? { nodeIp: this.config.nodeIp } : {}),
      ...(this.config.lbAlgorithm ? { lbAlgorithm: this.config.lbAlgorithm } : {}),
      log: (m) => console.error(`hypha agent: ${m}`),
    });
    this.#lb = ServiceMaps.open({ pinDir: this.config.pinDir });
    this.#lbCgroup = this.config.cgroupRoot ?? cgroup2Root();
    this.#lb.attach(this.#lbCgroup);
    // Traffic from outside reaches NodePorts and externalIPs on the node's devices, where no
    // socket hook runs: those packets are translated one by one.
    if (this.config.nodeIp)
      for (const device of this.config.devices ?? []) {
        const host = HostDatapath.load({ pinDir: this.config.pinDir, device, nodeIp: this.config.nodeIp });
        host.attach({ replace: true });
        this.#hosts.push(host);
      }
    await this.#kube.start();
    this.#publish();
  }

  get datapath(): Datapath {
    return this.#datapath;
  }

  /** Loads manifests and adopts the endpoints a previous run left (re-attaching in place). */
  start(): void {
    this.setNodes([]);
    this.reloadManifests();
    for (const rec of readJson<EndpointRecord[]>(join(this.config.stateDir, 'endpoints.json'), [])) {
      this.#endpoints.set(rec.containerId, rec);
      this.repo.upsertEndpoint({
        id: rec.id,
        namespace: rec.podNamespace,
        identity: rec.identity,
        labels: rec.labels,
      });
    }
    for (const rec of this.#endpoints.values()) {
      try {
        this.#attach(rec);
      } catch (err) {
        rec.state = 'not-ready';
        rec.lastError = `adopting after restart: ${errorMessage(err)}`;
      }
    }
    for (const path of this.config.manifests) {
      if (!existsSync(path)) continue;
      let timer: NodeJS.Timeout | undefined;
      this.#watchers.push(
        watch(path, { recursive: false }, () => {
          clearTimeout(timer);
          timer = setTimeout(() => this.reloadManifests(), 100);
        }),
      );
    }
    this.fqdn.start();
    this.#http.sync(this.endpoints());
    this.#http.start();
  }

  stop(): void {
    this.#kube?.stop();
    // The programs stay attached and the maps pinned: services keep working without the agent.
    this.#lb?.close();
    for (const h of this.#hosts) h.close();
    for (const w of this.#watchers) w.close();
    this.#eventsAbort.abort();
    void this.fqdn.close();
    void this.#http.close();
    this.#datapath.close();
  }

  /** Drains the datapath's events and hands them to subscribers (monitor, flows). */
  async drainEvents(): Promise<void> {
    using reader = this.#datapath.eventReader();
    // Losses before the agent started are not this run's: count from what the map holds now.
    let lostSeen = this.#datapath.eventsLost();
    for await (const batch of reader.batches(this.#eventsAbort.signal)) {
      for (const ev of decodeEvents(batch)) {
        this.#eventCounts.seen++;
        if (ev.type === EventType.Drop) this.#eventCounts.dropped++;
        this.flows.add(ev);
        this.#events.emit('event', ev);
      }
      // The ring was full at some point: say so in the flows, as Hubble's PERF_EVENT_RING_BUFFER losses.
      const lost = this.#datapath.eventsLost();
      if (lost > lostSeen) this.flows.ring.reportLost('PERF_EVENT_RING_BUFFER', lost - lostSeen);
      lostSeen = lost;
    }
  }

  /** Calls fn for each datapath event until the signal aborts. */
  subscribe(fn: (ev: DatapathEvent) => void, signal: AbortSignal): void {
    this.#events.on('event', fn);
    signal.addEventListener('abort', () => this.#events.off('event', fn), { once: true });
  }

  get eventCounts(): { seen: number; dropped: number } {
    return { ...this.#eventCounts };
  }

  /** Rereads the manifests. A bad document is reported and skipped; the others apply. */
  reloadManifests(): void {
    const m = loadManifests(this.config.manifests.filter((p) => existsSync(p)));
    const errors = m.errors.map((e) => `${e.file}[${e.index}]: ${e.message}`);
    const podLabels = new Map<string, Labels>();
    const nsLabels = new Map<string, Labels>();
    const policies: Policy[] = [];
    for (const d of m.docs) {
      const meta = (d.object.metadata ?? {}) as { labels?: Labels };
      if (d.kind === 'Namespace')
        nsLabels.set(d.name, { ...meta.labels, 'kubernetes.io/metadata.name': d.name });
      else if (d.kind === 'Pod') podLabels.set(`${d.namespace ?? 'default'}/${d.name}`, meta.labels ?? {});
      else if (POLICY_KINDS.includes(d.kind as never)) {
        try {
          policies.push(...parsePolicy(d.object).policies);
        } catch (err) {
          if (!(err instanceof ValidationError)) throw err;
          errors.push(`${d.file}[${d.index}]: ${err.message}`);
        }
      }
    }
    this.setClusterState({ podLabels, nsLabels, policies, errors });
  }

  /**
   * What the cluster wants, from the manifests or the Kubernetes watcher: labels of pods
   * and namespaces, and the policies. Only the resulting differences reach the maps.
   */
  setClusterState(state: ClusterState): void {
    this.#podLabels = state.podLabels;
    this.#nsLabels = state.nsLabels;
    this.#manifestErrors = state.errors;
    this.#manifestsLoadedAt = new Date().toISOString();
    const { policies } = state;
    const diffs = this.repo.bulk(() => {
      const wanted = new Set(policies.map((p) => policyKey(p.origin)));
      for (const p of this.repo.policies())
        if (!wanted.has(policyKey(p.origin))) this.repo.deletePolicy(p.origin);
      for (const p of policies) this.repo.upsertPolicy(p);
      this.#policyKeys = wanted;
      // Labels may have changed: endpoints follow.
      this.#relabelAll();
    });
    this.#apply(diffs);
  }

  /** Every identity in the cluster, so selectors match pods on other nodes too. */
  setIdentities(ids: Identity[]): void {
    const diffs = this.repo.bulk(() => {
      const now = new Set(ids.map((i) => i.id));
      for (const id of this.#knownIdentities) if (!now.has(id)) this.repo.deleteIdentity(id);
      for (const i of ids) this.repo.upsertIdentity(i.id, i.labels);
      this.#knownIdentities = now;
    });
    this.#apply(diffs);
  }

  /**
   * Node addresses into the ipcache, as Cilium has them: this node's as reserved:host (so
   * the node's own traffic to its pods passes, by the allow-localhost entry, and flows say
   * `host`), the other nodes' as reserved:remote-node. Before this, a node's address read
   * as the world.
   */
  setNodes(nodes: ClusterNode[]): void {
    const next = new Map<string, number>();
    if (this.config.nodeIp && isIPv4(this.config.nodeIp)) next.set(this.config.nodeIp, ReservedIdentity.Host);
    for (const n of nodes)
      for (const ip of n.ips)
        if (isIPv4(ip) && !next.has(ip))
          next.set(ip, n.name === this.config.node ? ReservedIdentity.Host : ReservedIdentity.RemoteNode);
    try {
      for (const ip of this.#nodeIps.keys()) if (!next.has(ip)) this.#datapath.deleteIpcache(`${ip}/32`);
      for (const [ip, id] of next)
        if (this.#nodeIps.get(ip) !== id) this.#datapath.upsertIpcache(`${ip}/32`, id);
      this.#nodeIps = next;
    } catch (err) {
      // The next Node change tries again (from what was written).
      console.error(`hypha agent: node addresses into the ipcache: ${errorMessage(err)}`);
    }
  }

  /** Pod IPs on other nodes and their identities, into the ipcache. */
  setRemoteEndpoints(eps: RemoteEndpoint[]): void {
    const next = new Map(eps.map((e) => [e.ip, e]));
    const local = new Set([...this.#endpoints.values()].map((r) => r.ip));
    for (const ip of this.#remote.keys()) {
      if (!next.has(ip) && !local.has(ip)) this.#datapath.deleteIpcache(`${ip}/32`);
    }
    for (const [ip, e] of next) {
      if (local.has(ip) || this.#remote.get(ip)?.identity === e.identity) continue;
      this.#datapath.upsertIpcache(`${ip}/32`, e.identity);
    }
    this.#remote = next;
  }

  #relabelAll(): void {
    for (const rec of this.#endpoints.values()) this.#relabel(rec);
  }

  #publish(): void {
    if (!this.#kube) return;
    void this.#kube.publish(
      this.endpoints().map((e) => ({
        id: e.id,
        podNamespace: e.podNamespace,
        podName: e.podName,
        ip: e.ip,
        identity: e.identity,
        labels: e.labels,
        state: e.state,
      })),
      this.config.nodeIp ?? '',
    );
  }

  #labelsFor(ns: string, pod: string): Labels {
    return endpointLabels({
      namespace: ns,
      podLabels: this.#podLabels.get(`${ns}/${pod}`) ?? {},
      namespaceLabels: this.#nsLabels.get(ns) ?? { 'kubernetes.io/metadata.name': ns },
    });
  }

  #relabel(rec: EndpointRecord): void {
    const labels = this.#labelsFor(rec.podNamespace, rec.podName);
    const identity = this.#alloc.allocate(labels).id;
    if (identity !== rec.identity) {
      rec.identity = identity;
      rec.labels = labels;
      this.#datapath.upsertIpcache(`${rec.ip}/32`, identity);
      try {
        this.#datapath.updateEndpoint(rec.hostIfindex, { identity });
      } catch {
        // Not attached (yet): #attach writes it.
      }
    }
    this.repo.upsertEndpoint({
      id: rec.id,
      namespace: rec.podNamespace,
      identity: rec.identity,
      labels: rec.labels,
    });
  }

  #apply(diffs: EndpointDiff[], save = true): void {
    if (diffs.length === 0) return;
    this.fqdn.policyChanged(); // the DNS proxy learns new dns rules before the maps send it traffic
    this.#http.sync(
      this.endpoints(),
      diffs.map((d) => d.endpoint),
    );
    const started = performance.now();
    this.#revision++;
    const byId = new Map([...this.#endpoints.values()].map((r) => [r.id, r]));
    for (const d of diffs) {
      const rec = byId.get(d.endpoint);
      if (!rec) continue;
      try {
        if (d.enforced)
          this.#datapath.updateEndpoint(rec.hostIfindex, {
            enforceIngress: d.enforced.ingress,
            enforceEgress: d.enforced.egress,
          });
        this.#datapath.applyPolicy(rec.id, d);
        rec.state = 'ready';
        delete rec.lastError;
        rec.policyRevision = this.#revision;
      } catch (err) {
        rec.state = 'not-ready';
        rec.lastError = `policy: ${errorMessage(err)}`;
      }
    }
    this.#metrics.observeRegeneration((performance.now() - started) / 1000);
    if (save) this.#save();
  }

  #attach(rec: EndpointRecord): void {
    const pol = this.repo.endpointPolicy(rec.id);
    this.fqdn?.policyChanged();
    disableIpv6(rec.netns);
    this.#datapath.upsertIpcache(`${rec.ip}/32`, rec.identity);
    this.#datapath.attachEndpoint({
      id: rec.id,
      ip4: rec.ip,
      identity: rec.identity,
      hostIfname: rec.hostIfname,
      hostIfindex: rec.hostIfindex,
      enforceIngress: pol?.ingress.enforced ?? false,
      enforceEgress: pol?.egress.enforced ?? false,
    });
    // The full entry set (idempotent): a restart or a re-add converges on it.
    const entries = pol ? [...pol.ingress.entries.values(), ...pol.egress.entries.values()] : [];
    this.#datapath.applyPolicy(rec.id, { added: entries, removed: [] });
    rec.state = 'ready';
    rec.policyRevision = this.#revision;
  }

  #nextId(): number {
    const used = new Set([...this.#endpoints.values()].map((r) => r.id));
    for (let id = 1; id < 65535; id++) if (!used.has(id)) return id;
    throw new Error('no endpoint id left');
  }

  /** Registers (or re-registers) an endpoint the CNI plugin created. */
  addEndpoint(req: EndpointRequest): EndpointRecord {
    const existing = this.#endpoints.get(req.containerId);
    const labels = this.#labelsFor(req.podNamespace, req.podName);
    const rec: EndpointRecord = {
      ...req,
      id: existing?.id ?? this.#nextId(),
      labels,
      identity: this.#alloc.allocate(labels).id,
      state: 'regenerating',
      policyRevision: 0,
    };
    this.#endpoints.set(req.containerId, rec);
    const diffs = this.repo.upsertEndpoint({
      id: rec.id,
      namespace: rec.podNamespace,
      identity: rec.identity,
      labels,
    });
    try {
      this.#attach(rec);
      this.#apply(
        diffs.filter((d) => d.endpoint !== rec.id),
        false,
      );
    } catch (err) {
      rec.state = 'not-ready';
      rec.lastError = errorMessage(err);
      this.#save();
      throw err;
    }
    this.#http.sync(this.endpoints(), [rec.id]);
    this.#save();
    return rec;
  }

  removeEndpoint(containerId: string): EndpointRecord | undefined {
    const rec = this.#endpoints.get(containerId);
    if (!rec) return undefined;
    try {
      this.#datapath.detachEndpoint(rec.id, rec.hostIfindex);
    } catch {
      // The veth is gone already: nothing to detach.
    }
    this.#datapath.deleteIpcache(`${rec.ip}/32`);
    this.repo.deleteEndpoint(rec.id);
    this.#endpoints.delete(containerId);
    this.#http.sync(this.endpoints(), [rec.id]);
    this.#save();
    return rec;
  }

  endpoints(): EndpointRecord[] {
    return [...this.#endpoints.values()].sort((a, b) => a.id - b.id);
  }

  endpoint(ref: string): EndpointRecord | undefined {
    return this.#endpoints.get(ref) ?? this.endpoints().find((e) => String(e.id) === ref);
  }

  status(): AgentStatus {
    const eps = this.endpoints();
    return {
      node: this.config.node,
      podCidr: this.ipam.cidr,
      ipam: { used: this.ipam.allocations().length, capacity: this.ipam.capacity },
      endpoints: {
        total: eps.length,
        ready: eps.filter((e) => e.state === 'ready').length,
        notReady: eps.filter((e) => e.state !== 'ready').length,
      },
      policies: this.#policyKeys.size,
      identities: this.repo.identities().length,
      manifests: {
        errors: this.#manifestErrors,
        ...(this.#manifestsLoadedAt ? { loadedAt: this.#manifestsLoadedAt } : {}),
      },
      datapath: { pinDir: this.config.pinDir, ok: true },
      events: this.eventCounts,
      services: {
        frontends: [...this.#services.values()].reduce((n, fs) => n + fs.length, 0),
        errors: [...this.#services.values()]
          .flat()
          .flatMap((f) =>
            f.error
              ? [`${f.service} ${frontendKey(f.frontend)}: ${f.error}`]
              : f.warning
                ? [`${f.service} ${frontendKey(f.frontend)}: warning: ${f.warning}`]
                : [],
          ),
        ...(this.#lb ? { cgroup: this.#lbCgroup } : {}),
      },
      httpProxy: this.#http.status(),
      dnsProxy: this.fqdn.status(),
    };
  }

  readonly #metrics = new AgentMetrics();
  #mapUsage: (() => MapUsage[]) | undefined;

  /** The agent's own metrics (Cilium's names), in Prometheus text, after Hubble's. */
  metricsText(): string {
    this.#mapUsage ??= cachedMapUsage(this.config.pinDir);
    const st = this.status();
    return this.#metrics.render({
      endpointStates: this.endpoints().map((e) => e.state),
      policies: st.policies,
      identities: this.repo.identities().map(([id]) => id),
      serviceFrontends: st.services.frontends,
      datapathEvents: st.events.seen,
      flowBuildErrors: this.flows.errors,
      l7Errors: this.flows.l7Errors,
      maps: this.#mapUsage(),
    });
  }

  /** Every service frontend the agent applied, with its errors. */
  services(): ServiceRecord[] {
    return [...this.#services.values()].flat().sort((a, b) => (a.revNatIndex ?? 0) - (b.revNatIndex ?? 0));
  }

  /** Services as toServices rules select them. */
  updateServicePeers(changes: Map<string, ServiceInfo | undefined>): void {
    const diffs = this.repo.bulk(() => {
      for (const [key, info] of changes) {
        const [ns, name] = key.split('/') as [string, string];
        if (info) this.repo.upsertService(info);
        else this.repo.deleteService(ns, name);
      }
    });
    this.#apply(diffs);
  }

  /**
   * Services changed: their frontends go to the socket load balancer. Each service stands
   * alone: one that cannot be written (a bad port, more backends than the maps hold) is
   * reported on itself and in status, and the others apply.
   */
  updateServices(changes: Map<string, ServiceFrontend[]>): ServiceProblem[] {
    if (!this.#lb) return [];
    return applyServiceChanges(this.#lb, { records: this.#services, at: this.#serviceAt }, changes);
  }

  #save(): void {
    writeJsonAtomic(join(this.config.stateDir, 'endpoints.json'), this.endpoints());
    this.#publish();
  }
}
