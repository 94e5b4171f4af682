/**
 * The lab: a Kubernetes-shaped cluster on this machine. One process (this one) holds the
 * API server, the controllers and each node's kubelet; every node runs a real `hypha
 * agent` in its own network namespace, and pods are network namespaces wired by
 * `hypha-cni`. Cluster DNS is a pod (the `kube-dns` label, so the tutorial's DNS rule
 * selects it) serving a zone this process writes from Services; the world is a namespace
 * of documentation-range hosts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  renameSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { Api, ExecRequest, ExecTarget, KObject } from '../apiserver/index.js';
import { cgroup2Root } from '../bpf/index.js';
import { errorMessage } from '../errors.js';
import { createTopology, destroyTopology, planTopology, type Topology } from './cluster/topology.js';
import { type ControlPlane, startApiServer } from './control-plane/apiserver.js';
import { startControllers } from './control-plane/controllers/index.js';
import { startDaemonSets } from './daemonsets.js';
import type { ZoneData } from './dns/zone.js';
import { NetNs } from './net/index.js';
import { NodeKubelet } from './node.js';
import type { Values } from './values.js';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '../../..');
export const HYPHA_BIN = join(repoRoot, 'bin/hypha');
export const CLUSTER_DOMAIN = 'cluster.local';
export const POD_CIDR = '10.244.0.0/16';
export const SERVICE_CIDR = '10.96.0.0/16';
export const DNS_SERVICE_IP = '10.96.0.10';

export interface LabConfig {
  name: string;
  nodes: number;
  dataDir: string;
  values: Values;
  /** API server port on 127.0.0.1 (6443, like kind's, when free; 0 for any). */
  port?: number;
  /** Third octet of the underlay 10.x.0.0/24 (default 240); two labs need two. */
  underlayOctet?: number;
  /** The relay's port on 127.0.0.1 (default 4245; 0 for any). */
  relayPort?: number;
  /** The Hubble UI's port on 127.0.0.1 when hubble.ui.enabled (default 12000; 0 for any). */
  uiPort?: number;
}

/** What `lab up` and `lab status` read about a running lab. */
export interface LabState {
  name: string;
  pid: number;
  dataDir: string;
  kubeconfig: string;
  server: string;
  nodes: { name: string; role: string; ip: string; podCidr: string; netns: string; agentSocket: string }[];
  world: { netns: string; hosts: { name: string; ip: string }[] };
  /** Prometheus file_sd targets: every agent's Hubble metrics (:9965), when hubble.metrics.enabled. */
  metricsTargets?: string;
  /** The Hubble UI's URL when hubble.ui.enabled, or why it did not start. */
  ui?: { url: string } | { error: string };
  /** Hubble Relay's address (host:port on 127.0.0.1), when it started. */
  relay?: string;
  startedAt: string;
}

export const labDir = (name: string) => `/var/lib/hypha/lab/${name}`;
/** Each node's cgroup: its pods' processes live there, and its agent's socket hooks attach there. */
export const labCgroup = (name: string, node?: string) => join(cgroup2Root(), `hylab.${name}`, node ?? '');
export const agentPinDir = (node: string) => `/sys/fs/bpf/hypha/${node}`;

interface Supervised {
  name: string;
  child?: ChildProcess;
  stopping: boolean;
  restarts: number;
}

export class Lab {
  readonly config: LabConfig;
  readonly topology: Topology;
  #cp: ControlPlane | undefined;
  #controllers: { close(): void } | undefined;
  #daemonSets: { close(): void } | undefined;
  #relay: { addresses: readonly string[]; close(): Promise<void> } | undefined;
  #ui: { url: string; close(): Promise<void> } | undefined;
  #down = false;
  readonly #kubelets = new Map<string, NodeKubelet>();
  readonly #procs: Supervised[] = [];
  #zoneTimer: NodeJS.Timeout | undefined;
  #stopZone: (() => void)[] = [];
  readonly #log: (line: string) => void;

  constructor(config: LabConfig, log: (line: string) => void) {
    this.config = config;
    this.topology = planTopology({
      cluster: config.name,
      nodes: config.nodes,
      ...(config.underlayOctet ? { underlayOctet: config.underlayOctet } : {}),
    });
    this.#log = log;
  }

  get api(): Api {
    if (!this.#cp) throw new Error('the lab is not up');
    return this.#cp.api;
  }

  get controlPlane(): ControlPlane | undefined {
    return this.#cp;
  }

  kubelet(node: string): NodeKubelet | undefined {
    return this.#kubelets.get(node);
  }

  #path(...p: string[]): string {
    return join(this.config.dataDir, ...p);
  }

  async up(): Promise<LabState> {
    const t = this.topology;
    const d = this.config.dataDir;
    for (const sub of ['logs', 'nodes', 'dns', 'run'])
      mkdirSync(this.#path(sub), { recursive: true, mode: 0o700 });
    // Leftovers of a lab that did not shut down cleanly: its namespaces and pins go first.
    await destroyTopology(t);
    for (const n of t.nodes) rmSync(agentPinDir(n.name), { recursive: true, force: true });
    await createTopology(t);
    for (const n of t.nodes) await this.#masquerade(n.netns);

    this.#cp = await this.#startApiServer(t);
    const agentKubeconfig = this.#writeAgentKubeconfig(this.#cp);
    this.#controllers = startControllers(this.#cp.api, {
      onError: (controller, key, err) => this.#log(`controller ${controller} ${key}: ${errorMessage(err)}`),
    });
    this.#watchZone();
    this.#supervise('world', [
      'nsenter',
      `--net=/var/run/netns/${t.world.netns}`,
      '--',
      HYPHA_BIN,
      'lab',
      'world-server',
      '--data-dir',
      d,
      ...t.world.hosts.flatMap((h) => ['--host', `${h.name}=${h.ip}`]),
    ]);
    this.#daemonSets = startDaemonSets(this.#cp.api, this.#log);
    this.#bootstrapAgents(agentKubeconfig);
    for (const n of t.nodes) {
      const dir = this.#path('nodes', n.name);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      mkdirSync(labCgroup(this.config.name, n.name), { recursive: true });
      const kubelet = new NodeKubelet({
        api: this.#cp.api,
        node: n,
        cgroup: labCgroup(this.config.name, n.name),
        agentSocket: join(dir, 'agent.sock'),
        logDir: this.#path('logs', 'pods'),
        runDir: this.#path('run', n.name),
        translate: (pod) => this.#translate(pod),
        // As kubelet's --cluster-dns: the kube-dns Service's ClusterIP, translated by the agents.
        clusterDns: { nameserver: DNS_SERVICE_IP, domain: CLUSTER_DOMAIN },
        log: this.#log,
      });
      this.#kubelets.set(n.name, kubelet);
      await kubelet.start();
    }
    this.#bootstrapClusterDns();
    await this.#nodesReady(60_000);
    // hubble-relay, as the tutorial enables it: every node's Observer merged on 127.0.0.1:4245.
    const { startRelay } = await import('../hubble/relay.js');
    this.#relay = await startRelay({
      listen: [`127.0.0.1:${this.config.relayPort ?? 4245}`],
      peers: t.nodes.map((n) => ({
        name: n.name,
        address: `unix://${join(this.#path('nodes', n.name), 'hubble.sock')}`,
      })),
    }).catch((err: unknown) => {
      this.#log(`hubble relay: ${errorMessage(err)}`);
      return undefined;
    });
    const ui = await this.#startUi();
    const metricsTargets = this.#writeMetricsTargets(t);
    const state: LabState = {
      name: this.config.name,
      pid: process.pid,
      dataDir: d,
      kubeconfig: this.#cp.kubeconfigPath,
      server: this.#cp.urls[0]!,
      ...(this.#relay?.addresses[0] ? { relay: this.#relay.addresses[0] } : {}),
      nodes: t.nodes.map((n) => ({
        name: n.name,
        role: n.role,
        ip: n.ip,
        podCidr: n.podCidr,
        netns: n.netns,
        agentSocket: join(this.#path('nodes', n.name), 'agent.sock'),
      })),
      world: { netns: t.world.netns, hosts: t.world.hosts },
      ...(ui ? { ui } : {}),
      ...(metricsTargets ? { metricsTargets } : {}),
      startedAt: new Date().toISOString(),
    };
    writeFileSync(this.#path('lab.json'), JSON.stringify(state, null, 2));
    return state;
  }

  /** hubble-ui when the values enable it: the service map on 127.0.0.1:12000, through the relay. */
  async #startUi(): Promise<LabState['ui']> {
    const hubble = this.config.values.hubble as { ui?: { enabled?: unknown } } | undefined;
    if (hubble?.ui?.enabled !== true) return undefined;
    const port = this.config.uiPort ?? 12000;
    const fail = (why: string) => {
      this.#log(`hubble ui: not started: ${why}`);
      return { error: why };
    };
    if (!this.#relay) return fail('the relay is not running');
    try {
      const { startUiServer } = await import('../ui/index.js');
      this.#ui = await startUiServer({
        relay: this.#relay.addresses[0]!,
        address: '127.0.0.1',
        port,
        log: (line) => this.#log(`hubble ui: ${line}`),
      });
      return { url: this.#ui.url };
    } catch (err) {
      return fail(errorMessage(err));
    }
  }

  async #startApiServer(t: Topology): Promise<ControlPlane> {
    const base = {
      dataDir: this.config.dataDir,
      cluster: this.config.name,
      hosts: ['127.0.0.1', t.hostIp],
      serviceCidr: SERVICE_CIDR,
      podCidrs: [POD_CIDR],
      podLog: async (ns: string, pod: string, container: string | undefined) =>
        this.#podLog(ns, pod, container),
      podExec: async (r: ExecRequest) => this.podExec(r),
    };
    try {
      return await startApiServer({ ...base, port: this.config.port ?? 6443 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || this.config.port !== undefined) throw err;
      return startApiServer({ ...base, port: 0 });
    }
  }

  async #podLog(ns: string, pod: string, container: string | undefined): Promise<string> {
    const p = this.api.get(this.api.resource('', 'pods')!, ns, pod);
    const node = (p.spec as { nodeName?: string }).nodeName;
    const k = node ? this.#kubelets.get(node) : undefined;
    if (!k) return '';
    const name = container ?? (p.spec as { containers: { name: string }[] }).containers[0]?.name ?? '';
    return k.runtime.logs(`${ns}/${pod}`, name);
  }

  /** Waits until every node reports Ready (its agent is up), as `kind create cluster --wait` does. */
  async #nodesReady(timeoutMs: number): Promise<void> {
    const nodes = this.api.resource('', 'nodes')!;
    const end = Date.now() + timeoutMs;
    for (;;) {
      const notReady = this.api
        .list(nodes, undefined)
        .items.filter(
          (n) =>
            !(
              (n.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []
            ).some((c) => c.type === 'Ready' && c.status === 'True'),
        )
        .map((n) => n.metadata.name);
      if (notReady.length === 0) return;
      if (Date.now() > end)
        throw new Error(
          `nodes not Ready after ${timeoutMs / 1000} s: ${notReady.join(', ')} (see the agent logs in ${this.#path('logs', 'pods')})`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** What `kubectl exec` runs: the command inside the pod, entered through its sandbox. */
  async podExec(r: ExecRequest): Promise<ExecTarget> {
    const p = this.api.get(this.api.resource('', 'pods')!, r.namespace, r.pod);
    const node = (p.spec as { nodeName?: string }).nodeName;
    const k = node ? this.#kubelets.get(node) : undefined;
    if (!k) throw new Error(`pod ${r.namespace}/${r.pod} is not running on a node`);
    return k.runtime.enterCommand(`${r.namespace}/${r.pod}`, r.command, r.container);
  }

  /** Agents reach the API server over the underlay, with the same CA and token. */
  #writeAgentKubeconfig(cp: ControlPlane): string {
    const path = this.#path('agent.kubeconfig');
    const server = cp.urls[1] ?? cp.urls[0]!;
    const ctx = `hypha-${this.config.name}`;
    writeFileSync(
      path,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: ctx, cluster: { server, 'certificate-authority': cp.caPath } }],
        users: [{ name: ctx, user: { token: cp.token } }],
        contexts: [{ name: ctx, context: { cluster: ctx, user: ctx } }],
        'current-context': ctx,
      }),
      { mode: 0o600 },
    );
    return path;
  }

  /**
   * Pod traffic leaving the cluster leaves with the node's address, as Cilium masquerades
   * it; the world has no routes to pod CIDRs.
   */
  async #masquerade(netns: string): Promise<void> {
    const rules = [
      'table ip hypha_nat {',
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      `    oifname "eth0" ip saddr ${POD_CIDR} ip daddr != ${POD_CIDR} ip daddr != 10.0.0.0/8 masquerade`,
      '  }',
      '}',
    ].join('\n');
    await new NetNs(netns).exec('nft', ['-f', '-'], { input: rules });
  }

  #supervise(name: string, argv: string[]): void {
    const s: Supervised = { name, stopping: false, restarts: 0 };
    this.#procs.push(s);
    const start = () => {
      const log = openSync(this.#path('logs', `${name}.log`), 'a');
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log] });
      closeSync(log);
      s.child = child;
      child.on('exit', (code, signal) => {
        if (s.stopping) return;
        s.restarts++;
        const delay = Math.min(30_000, 500 * 2 ** Math.min(s.restarts, 6));
        this.#log(`${name} exited (${signal ?? code}); restarting in ${delay} ms`);
        setTimeout(() => {
          if (!s.stopping) start();
        }, delay).unref();
      });
    };
    start();
  }

  /**
   * The agents, as Cilium's run: the `cilium` DaemonSet in kube-system, one host-network pod
   * per node running `hypha agent` (it reads its pod CIDR from its Node, as with
   * ipam.mode=kubernetes). `cilium` and `cilium-dbg` in those pods are Hypha's CLI, so
   * `kubectl exec -n kube-system ds/cilium -- cilium endpoint list` works as in the tutorial.
   */
  #bootstrapAgents(kubeconfig: string): void {
    const bin = this.#path('bin');
    mkdirSync(bin, { recursive: true });
    for (const name of ['cilium', 'cilium-dbg', 'hypha'])
      writeFileSync(join(bin, name), `#!/bin/sh\nexec ${HYPHA_BIN} "$@"\n`, { mode: 0o755 });
    const api = this.api;
    const ds = api.resource('apps', 'daemonsets')!;
    if (api.tryGet(ds, 'kube-system', 'cilium')) return;
    const nodeDir = `${this.#path('nodes')}/$(NODE_NAME)`;
    api.create(ds, 'kube-system', {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: {
        name: 'cilium',
        namespace: 'kube-system',
        labels: { 'k8s-app': 'cilium', 'app.kubernetes.io/part-of': 'hypha' },
      },
      spec: {
        selector: { matchLabels: { 'k8s-app': 'cilium' } },
        template: {
          metadata: { labels: { 'k8s-app': 'cilium', 'app.kubernetes.io/name': 'cilium-agent' } },
          spec: {
            hostNetwork: true,
            dnsPolicy: 'Default',
            terminationGracePeriodSeconds: 5,
            tolerations: [{ operator: 'Exists' }],
            containers: [
              {
                name: 'cilium-agent',
                image: 'hypha/agent',
                command: [
                  HYPHA_BIN,
                  'agent',
                  '--node',
                  '$(NODE_NAME)',
                  '--kubeconfig',
                  kubeconfig,
                  '--state-dir',
                  nodeDir,
                  '--socket',
                  `${nodeDir}/agent.sock`,
                  '--pin-dir',
                  '/sys/fs/bpf/hypha/$(NODE_NAME)',
                  '--cgroup-root',
                  labCgroup(this.config.name, '$(NODE_NAME)'),
                  '--devices',
                  'eth0',
                  ...this.#hubbleMetricsFlag(),
                  ...this.#proxyFlags(),
                ],
                env: [
                  { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  { name: 'HYPHA_AGENT_SOCKET', value: `${nodeDir}/agent.sock` },
                  { name: 'HYPHA_NODE', value: '$(NODE_NAME)' },
                  {
                    name: 'PATH',
                    value: `${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
                  },
                ],
              },
            ],
          },
        },
      },
    });
  }

  /**
   * Where Prometheus finds the agents' metrics: each serves :9965 on its node's address,
   * which this machine reaches over the underlay link. Written as a file_sd target file
   * (one group per node) so a Prometheus on this machine can scrape the lab as it is.
   */
  #writeMetricsTargets(t: Topology): string | undefined {
    if (this.#hubbleMetricsFlag().length === 0) return undefined;
    const path = this.#path('prometheus-targets.json');
    const groups = t.nodes.map((n) => ({
      targets: [`${n.ip}:9965`],
      labels: { cluster: this.config.name, node: n.name, k8s_app: 'hubble' },
    }));
    writeFileSync(path, `${JSON.stringify(groups, null, 2)}\n`);
    return path;
  }

  /** hubble.metrics.enabled from the install values, as the agents' flag. */
  #hubbleMetricsFlag(): string[] {
    const hubble = this.config.values.hubble as { metrics?: { enabled?: unknown } } | undefined;
    const list = hubble?.metrics?.enabled;
    return Array.isArray(list) && list.length ? ['--hubble-metrics', list.map(String).join(',')] : [];
  }

  /** dnsProxy.minTtl and httpProxy.workers/engine from the install values, as the agents' flags. */
  #proxyFlags(): string[] {
    const minTtl = (this.config.values.dnsProxy as { minTtl?: unknown } | undefined)?.minTtl;
    const http = this.config.values.httpProxy as { workers?: unknown; engine?: unknown } | undefined;
    return [
      ...(typeof minTtl === 'number' ? ['--tofqdns-min-ttl', String(minTtl)] : []),
      ...(typeof http?.workers === 'number' ? ['--http-proxy-workers', String(http.workers)] : []),
      ...(typeof http?.engine === 'string' ? ['--http-proxy-engine', http.engine] : []),
    ];
  }

  /** Cluster DNS as a real cluster has it: the coredns Deployment and the kube-dns Service. */
  #bootstrapClusterDns(): void {
    const api = this.api;
    const deploys = api.resource('apps', 'deployments')!;
    const services = api.resource('', 'services')!;
    if (!api.tryGet(deploys, 'kube-system', 'coredns')) {
      api.create(deploys, 'kube-system', {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'coredns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
        spec: {
          replicas: 1,
          selector: { matchLabels: { 'k8s-app': 'kube-dns' } },
          template: {
            metadata: { labels: { 'k8s-app': 'kube-dns' } },
            spec: {
              dnsPolicy: 'Default',
              tolerations: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }],
              containers: [
                {
                  name: 'coredns',
                  image: 'hypha/cluster-dns',
                  ports: [
                    { name: 'dns', containerPort: 53, protocol: 'UDP' },
                    { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
                  ],
                },
              ],
            },
          },
        },
      });
    }
    if (!api.tryGet(services, 'kube-system', 'kube-dns')) {
      api.create(services, 'kube-system', {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
        spec: {
          clusterIP: DNS_SERVICE_IP,
          selector: { 'k8s-app': 'kube-dns' },
          ports: [
            { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
            { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
          ],
        },
      });
    }
  }

  /** The lab's images (the cluster DNS server), and every pod trusts the lab CA. */
  #translate(pod: KObject): KObject {
    const p = structuredClone(pod);
    const spec = p.spec as {
      containers: { image?: string; command?: string[]; env?: { name: string; value?: string }[] }[];
    };
    const ca = join(this.config.dataDir, 'pki', 'ca.crt');
    for (const c of spec.containers) {
      if (c.image?.startsWith('hypha/cluster-dns') && !c.command)
        c.command = [
          HYPHA_BIN,
          'lab',
          'dns-server',
          '--zone-file',
          this.#path('dns', 'zone.json'),
          '--port',
          '53',
        ];
      c.env = [
        ...(c.env ?? []),
        { name: 'SSL_CERT_FILE', value: ca },
        { name: 'CURL_CA_BUNDLE', value: ca },
        { name: 'NODE_EXTRA_CA_CERTS', value: ca },
      ];
    }
    return p;
  }

  /** Rewrites the DNS zone file whenever Services or EndpointSlices change. */
  #watchZone(): void {
    const api = this.api;
    const services = api.resource('', 'services')!;
    const slices = api.resource('discovery.k8s.io', 'endpointslices')!;
    const write = () => {
      this.#zoneTimer = undefined;
      const data: ZoneData = {
        domain: CLUSTER_DOMAIN,
        ttl: 30,
        hosts: this.topology.world.hosts,
        services: api.list(services, undefined).items.map((s) => {
          const spec = s.spec as { clusterIP?: string };
          const ns = s.metadata.namespace!;
          const name = s.metadata.name!;
          const headless = spec.clusterIP === 'None';
          const headlessIPs = headless
            ? api
                .list(slices, ns, { labelSelector: `kubernetes.io/service-name=${name}` })
                .items.flatMap(
                  (sl) =>
                    (sl as { endpoints?: { addresses?: string[]; conditions?: { ready?: boolean } }[] })
                      .endpoints ?? [],
                )
                .filter((e) => e.conditions?.ready !== false)
                .flatMap((e) => e.addresses ?? [])
            : [];
          return {
            name,
            namespace: ns,
            ...(spec.clusterIP ? { clusterIP: spec.clusterIP } : {}),
            headlessIPs,
          };
        }),
      };
      const path = this.#path('dns', 'zone.json');
      writeFileSync(`${path}.tmp`, JSON.stringify(data));
      renameSync(`${path}.tmp`, path);
    };
    const schedule = () => {
      this.#zoneTimer ??= setTimeout(write, 50);
    };
    this.#stopZone.push(
      api.watch(services, undefined, {}, schedule),
      api.watch(slices, undefined, {}, schedule),
    );
    write();
  }

  /** Stops everything it started and removes what it made; `keep` leaves the API's data for the next `up`. */
  async down(keep: boolean): Promise<void> {
    if (this.#down) return;
    this.#down = true;
    for (const stop of this.#stopZone) stop();
    clearTimeout(this.#zoneTimer);
    this.#controllers?.close();
    this.#daemonSets?.close();
    await this.#ui?.close();
    await this.#relay?.close();
    // Workload pods first, while the agents still answer CNI DEL; then the agents.
    await Promise.allSettled([...this.#kubelets.values()].map((k) => k.drain()));
    await Promise.allSettled(
      [...this.#kubelets.values()].map((k) =>
        k.close().catch((err) => this.#log(`kubelet: ${errorMessage(err)}`)),
      ),
    );
    await Promise.all(
      this.#procs.map(async (s) => {
        s.stopping = true;
        const c = s.child;
        if (!c || c.exitCode !== null || c.signalCode !== null) return;
        c.kill('SIGTERM');
        const exited = await Promise.race([
          new Promise<boolean>((r) => c.once('exit', () => r(true))),
          new Promise<boolean>((r) => setTimeout(() => r(false), 5000).unref()),
        ]);
        if (!exited) c.kill('SIGKILL');
      }),
    );
    await this.#cp?.close();
    await removeCgroups(
      labCgroup(this.config.name),
      this.topology.nodes.map((n) => n.name),
    );
    for (const n of this.topology.nodes) rmSync(agentPinDir(n.name), { recursive: true, force: true });
    await destroyTopology(this.topology);
    rmSync(this.#path('lab.json'), { force: true });
    if (!keep) rmSync(this.config.dataDir, { recursive: true, force: true });
    else for (const sub of ['nodes', 'run', 'dns']) rmSync(this.#path(sub), { recursive: true, force: true });
  }
}

/** Removes the node cgroups (empty once their processes are gone; a moment after a kill). */
async function removeCgroups(root: string, nodes: string[]): Promise<void> {
  for (const dir of [...nodes.map((n) => join(root, n)), root]) {
    for (let i = 0; i < 150 && existsSync(dir); i++) {
      try {
        rmdirSync(dir);
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
