/**
 * One lab node's kubelet: registers the Node object and keeps its Ready condition true
 * while the node's agent answers, runs the pods bound to the node through the pod
 * runtime, reports their status, and finishes their deletion. Like a kubelet it
 * reconciles: every pod event or resync makes the runtime match what the API says.
 */
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { type Api, ApiError, type KObject, type ResourceType } from '../apiserver/index.js';
import { errorMessage } from '../errors.js';
import type { LabNode } from './cluster/topology.js';
import { type ClusterDns, PodRuntime, type PodStatus } from './kubelet/index.js';

export interface NodeKubeletOptions {
  api: Api;
  node: LabNode;
  agentSocket: string;
  /** The node's cgroup: every pod process joins it. */
  cgroup?: string;
  logDir: string;
  runDir: string;
  /** Rewrites a pod before it runs (the lab's built-in images). */
  translate?: (pod: KObject) => KObject;
  /** Cluster DNS for ClusterFirst pods (kubelet's --cluster-dns and --cluster-domain). */
  clusterDns?: ClusterDns;
  log: (line: string) => void;
}

const RESYNC_MS = 10_000;
const HEARTBEAT_MS = 5_000;

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

export class NodeKubelet {
  readonly #o: NodeKubeletOptions;
  readonly #pods: ResourceType;
  readonly #nodes: ResourceType;
  #runtime: PodRuntime | undefined;
  readonly #queue = new Map<string, Promise<void>>();
  readonly #retry = new Map<string, NodeJS.Timeout>();
  #stopWatch: (() => void) | undefined;
  #timers: NodeJS.Timeout[] = [];
  #closed = false;
  #ready = false;

  constructor(o: NodeKubeletOptions) {
    this.#o = o;
    this.#clusterDns = o.clusterDns;
    this.#pods = o.api.resource('', 'pods')!;
    this.#nodes = o.api.resource('', 'nodes')!;
  }

  get runtime(): PodRuntime {
    this.#runtime ??= this.#makeRuntime();
    return this.#runtime;
  }

  #clusterDns: ClusterDns | undefined;

  /** Cluster DNS moved (or came up): pods resolve through it from now on. */
  async setClusterDns(dns: ClusterDns): Promise<void> {
    this.#clusterDns = dns;
    await this.#runtime?.setClusterDns(dns);
  }

  #makeRuntime(): PodRuntime {
    const { node } = this.#o;
    const rt = new PodRuntime({
      nodeName: node.name,
      nodeNetns: node.netns,
      hostIp: node.ip,
      cniConf: { cniVersion: '1.0.0', name: 'hypha', type: 'hypha-cni', agentSocket: this.#o.agentSocket },
      logDir: this.#o.logDir,
      runDir: this.#o.runDir,
      ...(this.#o.cgroup ? { cgroup: this.#o.cgroup } : {}),
      ...(this.#clusterDns ? { clusterDns: this.#clusterDns } : {}),
    });
    rt.onChange((key, status) => this.#report(key, status));
    return rt;
  }

  async start(): Promise<void> {
    this.#register();
    this.#stopWatch = this.#o.api.watch(
      this.#pods,
      undefined,
      { fieldSelector: `spec.nodeName=${this.#o.node.name}` },
      (ev) => {
        const pod = ev.object as KObject;
        this.#enqueue(pod, ev.type === 'DELETED');
      },
    );
    // Until the agent answers, look often: pods wait on it. Then a heartbeat every few seconds.
    this.#timers.push(setInterval(() => this.#ready || this.#heartbeat(), 200));
    this.#timers.push(setInterval(() => this.#heartbeat(), HEARTBEAT_MS));
    this.#timers.push(setInterval(() => this.#resync(), RESYNC_MS));
    for (const t of this.#timers) t.unref();
    this.#heartbeat();
  }

  #register(): void {
    const { node, api } = this.#o;
    const cp = node.role === 'control-plane';
    const body: KObject = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: node.name,
        labels: {
          'kubernetes.io/hostname': node.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': 'amd64',
          'beta.kubernetes.io/os': 'linux',
          'beta.kubernetes.io/arch': 'amd64',
          ...(cp ? { 'node-role.kubernetes.io/control-plane': '' } : {}),
        },
      },
      spec: {
        podCIDR: node.podCidr,
        podCIDRs: [node.podCidr],
        ...(cp ? { taints: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }] } : {}),
      },
    };
    const existing = api.tryGet(this.#nodes, undefined, node.name);
    if (!existing) api.create(this.#nodes, undefined, body);
    this.#setReady(
      false,
      'KubeletNotReady',
      'container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: hypha agent not ready',
    );
  }

  #setReady(ready: boolean, reason: string, message: string): void {
    const { node, api } = this.#o;
    const changed = ready !== this.#ready;
    this.#ready = ready;
    const t = now();
    const old = api.tryGet(this.#nodes, undefined, node.name);
    const prev = (
      old?.status as { conditions?: { type: string; lastTransitionTime?: string }[] } | undefined
    )?.conditions?.find((c) => c.type === 'Ready');
    const status = {
      addresses: [
        { type: 'InternalIP', address: node.ip },
        { type: 'Hostname', address: node.name },
      ],
      conditions: [
        {
          type: 'Ready',
          status: ready ? 'True' : 'False',
          reason,
          message,
          lastHeartbeatTime: t,
          lastTransitionTime: changed || !prev?.lastTransitionTime ? t : prev.lastTransitionTime,
        },
      ],
      capacity: { cpu: '2', memory: '24Gi', pods: '110' },
      allocatable: { cpu: '2', memory: '24Gi', pods: '110' },
      nodeInfo: {
        kubeletVersion: 'v1.32.0-hypha',
        kubeProxyVersion: '',
        containerRuntimeVersion: 'hypha://lab',
        kernelVersion: release(),
        osImage: 'Hypha lab node',
        operatingSystem: 'linux',
        architecture: 'amd64',
        machineID: '',
        systemUUID: '',
        bootID: '',
      },
    };
    try {
      api.patch(this.#nodes, undefined, node.name, 'merge', { status }, { subresource: 'status' });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }

  /** Ready while the agent's socket is there (the CNI plugin needs it). */
  #heartbeat(): void {
    if (this.#closed) return;
    const up = existsSync(this.#o.agentSocket);
    this.#setReady(
      up,
      up ? 'KubeletReady' : 'KubeletNotReady',
      up ? 'kubelet is posting ready status' : 'container runtime network not ready: hypha agent not ready',
    );
    if (up && this.#retry.size) this.#resync();
  }

  #resync(): void {
    for (const pod of this.#o.api.list(this.#pods, undefined, {
      fieldSelector: `spec.nodeName=${this.#o.node.name}`,
    }).items)
      this.#enqueue(pod, false);
  }

  #enqueue(pod: KObject, deleted: boolean): void {
    if (this.#closed) return;
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    const prev = this.#queue.get(key) ?? Promise.resolve();
    const next = prev
      .then(() => this.#reconcile(key, pod, deleted))
      .catch((err: unknown) => this.#failed(key, err));
    this.#queue.set(key, next);
    void next.finally(() => {
      if (this.#queue.get(key) === next) this.#queue.delete(key);
    });
  }

  async #reconcile(key: string, pod: KObject, deleted: boolean): Promise<void> {
    if (this.#closed) return;
    clearTimeout(this.#retry.get(key));
    this.#retry.delete(key);
    const [ns, name] = key.split('/') as [string, string];
    const current = deleted ? undefined : this.#o.api.tryGet(this.#pods, ns, name);
    if (!current || current.metadata.uid !== pod.metadata.uid) {
      if (!current) await this.runtime.remove(key);
      return;
    }
    if (current.metadata.deletionTimestamp) {
      await this.runtime.remove(key);
      try {
        this.#o.api.delete(this.#pods, ns, name, {
          gracePeriodSeconds: 0,
          preconditions: { uid: current.metadata.uid! },
        });
      } catch (err) {
        if (!(err instanceof ApiError && (err.code === 404 || err.code === 409))) throw err;
      }
      return;
    }
    const hostNetwork = (current.spec as { hostNetwork?: boolean }).hostNetwork === true;
    if (!this.#ready && !hostNetwork)
      throw new Error('network not ready: the hypha agent of this node is not up yet');
    const pod2 = this.#o.translate ? this.#o.translate(current) : current;
    const status = await this.runtime.sync(pod2);
    this.#report(key, status);
  }

  #failed(key: string, err: unknown): void {
    if (this.#closed) return;
    const [ns, name] = key.split('/') as [string, string];
    const msg = errorMessage(err);
    this.#o.log(`${this.#o.node.name}: pod ${key}: ${msg}`);
    const pod = this.#o.api.tryGet(this.#pods, ns, name);
    if (pod && !pod.metadata.deletionTimestamp) {
      const containers = (
        (pod.spec as { containers?: { name: string; image?: string }[] }).containers ?? []
      ).map((c) => ({
        name: c.name,
        image: c.image ?? '',
        imageID: '',
        ready: false,
        restartCount: 0,
        started: false,
        state: { waiting: { reason: 'ContainerCreating', message: msg } },
      }));
      this.#patchStatus(ns, name, {
        phase: 'Pending',
        hostIP: this.#o.node.ip,
        containerStatuses: containers,
      });
    }
    clearTimeout(this.#retry.get(key));
    const t = setTimeout(() => {
      this.#retry.delete(key);
      const p = this.#o.api.tryGet(this.#pods, ns, name);
      if (p) this.#enqueue(p, false);
    }, 2000);
    t.unref();
    this.#retry.set(key, t);
  }

  #report(key: string, status: PodStatus): void {
    const [ns, name] = key.split('/') as [string, string];
    this.#patchStatus(ns, name, status as unknown as Record<string, unknown>);
  }

  #patchStatus(ns: string, name: string, status: Record<string, unknown>): void {
    try {
      this.#o.api.patch(this.#pods, ns, name, 'merge', { status }, { subresource: 'status' });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404))
        this.#o.log(`status of ${ns}/${name}: ${errorMessage(err)}`);
    }
  }

  /** Pods of this node (runtime keys). */
  pods(): string[] {
    return this.#runtime?.pods() ?? [];
  }

  /** Stops the pods that use the pod network (host-network pods such as the agent stay). */
  async drain(): Promise<void> {
    this.#stopWatch?.();
    this.#stopWatch = undefined;
    const rt = this.#runtime;
    if (!rt) return;
    const hostNet = new Set(
      this.#o.api
        .list(this.#pods, undefined, { fieldSelector: `spec.nodeName=${this.#o.node.name}` })
        .items.filter((p) => (p.spec as { hostNetwork?: boolean }).hostNetwork)
        .map((p) => `${p.metadata.namespace}/${p.metadata.name}`),
    );
    await Promise.allSettled(
      rt
        .pods()
        .filter((k) => !hostNet.has(k))
        .map((k) => rt.remove(k)),
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#stopWatch?.();
    for (const t of this.#timers) clearInterval(t);
    for (const t of this.#retry.values()) clearTimeout(t);
    await Promise.allSettled(this.#queue.values());
    await this.#runtime?.close();
  }
}
