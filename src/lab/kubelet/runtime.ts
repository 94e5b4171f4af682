/**
 * `PodRuntime`: what a kubelet and its container runtime do for one lab node. A pod gets a
 * network namespace wired by the CNI plugin (called exactly as a kubelet calls it), a
 * sandbox holding its mount and UTS namespaces, and its containers as processes of this
 * machine; the runtime reports PodStatus as the kubelet would and tells listeners when it
 * changes, so the caller can write it to the API server.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage, KeyNotFoundError } from '../../errors.js';
import { execFile } from '../net/exec.js';
import { type ExecResult, NetNs, uniqueName } from '../net/index.js';
import { type CniCall, cniAdd, cniDel } from './cni.js';
import { ContainerRunner } from './container.js';
import { leftovers } from './leftovers.js';
import { type PodDef, parsePod } from './pod.js';
import { Sandbox } from './sandbox.js';
import {
  type PodCondition,
  type PodConditionType,
  type PodPhase,
  type PodStatus,
  timestamp,
} from './status.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from dist/src/lab/kubelet). */
const repoRoot = join(here, '../../../..');

export const DEFAULT_CNI_BIN = join(repoRoot, 'bin/hypha-cni');

/** The cluster DNS written into pods' resolv.conf (dnsPolicy ClusterFirst). */
export interface ClusterDns {
  readonly nameserver: string;
  /** Searched after the cluster's own domains. */
  readonly searches?: readonly string[];
  /** The cluster domain, e.g. `cluster.local`: adds `<ns>.svc.<domain> svc.<domain> <domain>` first. */
  readonly domain?: string;
}

export interface PodRuntimeOptions {
  readonly nodeName: string;
  /** The node's network namespace, by name under /var/run/netns. */
  readonly nodeNetns: string;
  /** The node's address, reported as hostIP. */
  readonly hostIp?: string;
  /** The CNI network configuration, sent on the plugin's stdin. */
  readonly cniConf: Readonly<Record<string, unknown>>;
  /** Default: the repository's bin/hypha-cni. */
  readonly cniBin?: string;
  /** Container logs go to `<logDir>/<namespace>_<pod>_<container>.log`. */
  readonly logDir: string;
  /** Per-pod files (resolv.conf, hosts). Default: a temporary directory, removed by close(). */
  readonly runDir?: string;
  readonly clusterDns?: ClusterDns;
  /** Restart back-off: `baseMs` (10 s) doubling to `maxMs` (300 s), as the kubelet does. */
  readonly backoff?: { readonly baseMs?: number; readonly maxMs?: number };
  /** SIGTERM-to-SIGKILL grace for pods without terminationGracePeriodSeconds (30 s). */
  readonly gracePeriodMs?: number;
  /** The node binary for the built-in server. Default: the repository's pinned node. */
  readonly nodeBin?: string;
  /** A cgroup v2 directory every pod process joins (the node's: its agent's socket hooks act there). */
  readonly cgroup?: string;
}

export interface PodExecOptions {
  /** Whose environment the command gets (default: the first container's). */
  readonly container?: string;
  readonly input?: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Killed with SIGKILL after this long. */
  readonly timeoutMs?: number;
  readonly workingDir?: string;
  readonly signal?: AbortSignal;
}

export type PodStatusListener = (podKey: string, status: PodStatus) => void;

interface PodRecord {
  def: PodDef;
  readonly startTime: Date;
  readonly containers: ContainerRunner[];
  /** The network namespace the pod runs in, once it has one: its own, or the node's (hostNetwork). */
  netns: string | undefined;
  /** `netns` is the pod's own, made by this runtime. */
  ownsNetns: boolean;
  /** The pod's directory under the run directory (resolv.conf, hosts). */
  dir: string | undefined;
  /** CNI ADD was called (and DEL is owed). */
  cniAdded: boolean;
  ip: string | undefined;
  sandbox: Sandbox | undefined;
  /** Why the sandbox could not be created, until it is. */
  problem: string | undefined;
  readonly transitions: Map<PodConditionType, { status: 'True' | 'False'; at: Date }>;
  emitted: string | undefined;
  emitQueued: boolean;
}

const IFNAME = 'eth0';

export class PodRuntime {
  readonly #o: PodRuntimeOptions;
  readonly #pods = new Map<string, PodRecord>();
  /** Per pod: the tail of its queue of operations, so sync and remove never interleave. */
  readonly #queues = new Map<string, Promise<void>>();
  readonly #listeners = new Set<PodStatusListener>();
  #runDir: Promise<string> | undefined;
  #closed = false;

  #clusterDns: ClusterDns | undefined;

  constructor(options: PodRuntimeOptions) {
    this.#o = options;
    this.#clusterDns = options.clusterDns;
  }

  /**
   * Where cluster DNS is now. Running ClusterFirst pods get their resolv.conf rewritten in
   * place (it is bind-mounted, so the pod sees the new content); new pods get it at start.
   */
  async setClusterDns(dns: ClusterDns): Promise<void> {
    this.#clusterDns = dns;
    for (const rec of this.#pods.values()) {
      if (rec.def.dnsPolicy !== 'ClusterFirst' || rec.dir === undefined || rec.sandbox === undefined)
        continue;
      const text = resolvConfFor(rec.def, dns);
      if (text !== undefined) await writeFile(join(await this.#podDir(rec.dir), 'resolv.conf'), text);
    }
  }

  /** Keys (`namespace/name`) of the pods this runtime has. */
  pods(): string[] {
    return [...this.#pods.keys()];
  }

  /**
   * Makes the pod run: creates its network namespace, calls CNI ADD, starts its sandbox and
   * containers. A pod already running is left alone; one with the same name but another
   * uid is replaced. Throws ValidationError for a bad pod, CniError when the plugin fails
   * (the pod stays Pending, undone, and the next sync tries again).
   */
  async sync(pod: unknown): Promise<PodStatus> {
    this.#checkOpen();
    const def = parsePod(pod);
    return this.#serial(def.key, async () => {
      this.#checkOpen();
      let rec = this.#pods.get(def.key);
      if (rec !== undefined && rec.def.uid !== def.uid) {
        await this.#teardown(rec, false);
        rec = undefined;
      }
      if (rec?.sandbox !== undefined) return this.#status(rec);
      if (rec === undefined) {
        rec = this.#record(def);
        this.#pods.set(def.key, rec);
      }
      await this.#startSandbox(rec);
      return this.#status(rec);
    });
  }

  /** The PodStatus to report. Throws KeyNotFoundError for a pod this runtime does not have. */
  status(podKey: string): PodStatus {
    return this.#status(this.#get(podKey));
  }

  /** Calls `listener` whenever a pod's status changes (coalesced, and only real changes). */
  onChange(listener: PodStatusListener): Disposable & { dispose(): void } {
    this.#listeners.add(listener);
    const dispose = () => void this.#listeners.delete(listener);
    return { dispose, [Symbol.dispose]: dispose };
  }

  /**
   * Stops the pod's containers (SIGTERM, SIGKILL after the grace period), calls CNI DEL and
   * deletes its namespace. Unknown pods are fine. If DEL fails the error is thrown and the
   * pod kept, so that a later remove can try again.
   */
  async remove(podKey: string): Promise<void> {
    await this.#serial(podKey, async () => {
      const rec = this.#pods.get(podKey);
      if (rec !== undefined) await this.#teardown(rec, false);
    });
  }

  /** Removes every pod, even when CNI DEL fails (then it throws once all is gone), and its own files. */
  async close(): Promise<void> {
    this.#closed = true;
    const errors: unknown[] = [];
    await Promise.all(
      [...this.#pods.keys()].map((key) =>
        this.#serial(key, async () => {
          const rec = this.#pods.get(key);
          if (rec !== undefined) await this.#teardown(rec, true);
        }).catch((e: unknown) => errors.push(e)),
      ),
    );
    if (this.#o.runDir === undefined && this.#runDir !== undefined) {
      await rm(await this.#runDir, { recursive: true, force: true });
    }
    this.#listeners.clear();
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `closing the pods of ${this.#o.nodeName} failed`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Runs a command inside the pod, like `kubectl exec`. A non-zero exit is returned, not thrown. */
  async exec(podKey: string, argv: readonly string[], opts: PodExecOptions = {}): Promise<ExecResult> {
    const rec = this.#get(podKey);
    if (rec.sandbox === undefined || !rec.sandbox.alive) {
      throw new KeyNotFoundError(`pod ${podKey} has no running sandbox`);
    }
    const c = opts.container === undefined ? rec.containers[0] : this.#container(rec, opts.container);
    return execFile(rec.sandbox.enter(argv, opts.workingDir ?? c?.def.workingDir), {
      env: { ...c?.env(), ...opts.env },
      ...(opts.input === undefined ? {} : { input: opts.input }),
      ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      ...(opts.signal === undefined ? {} : { signal: opts.signal }),
    });
  }

  /**
   * The command line and environment that run `argv` inside the pod, for a caller that
   * spawns it itself with its own stdio (an interactive `kubectl exec`).
   */
  enterCommand(
    podKey: string,
    argv: readonly string[],
    container?: string,
  ): { argv: string[]; env: Record<string, string> } {
    const rec = this.#get(podKey);
    if (rec.sandbox === undefined || !rec.sandbox.alive) {
      throw new KeyNotFoundError(`pod ${podKey} has no running sandbox`);
    }
    const c = container === undefined ? rec.containers[0] : this.#container(rec, container);
    return { argv: rec.sandbox.enter(argv, c?.def.workingDir), env: { ...c?.env() } };
  }

  /** What the container wrote to stdout and stderr, across restarts. */
  async logs(podKey: string, container: string): Promise<string> {
    const rec = this.#get(podKey);
    this.#container(rec, container);
    try {
      return await readFile(this.#logFile(rec.def, container), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw e;
    }
  }

  /** The network namespace the pod runs in (name under /var/run/netns): its own, or the node's for hostNetwork. */
  netns(podKey: string): string | undefined {
    return this.#get(podKey).netns;
  }

  /** Where the container's log is. */
  logPath(podKey: string, container: string): string {
    const rec = this.#get(podKey);
    this.#container(rec, container);
    return this.#logFile(rec.def, container);
  }

  // --- pod lifecycle

  #record(pod: PodDef): PodRecord {
    // A pod on the host's network has the node's name, as on a real node.
    const def = pod.hostNetwork ? { ...pod, hostname: this.#o.nodeName } : pod;
    const rec: PodRecord = {
      def,
      startTime: new Date(),
      containers: [],
      netns: undefined,
      ownsNetns: false,
      dir: undefined,
      cniAdded: false,
      ip: undefined,
      sandbox: undefined,
      problem: undefined,
      transitions: new Map(),
      emitted: undefined,
      emitQueued: false,
    };
    const { baseMs = 10_000, maxMs = 300_000 } = this.#o.backoff ?? {};
    for (const c of def.containers) {
      rec.containers.push(
        new ContainerRunner(c, {
          pod: def,
          nodeName: this.#o.nodeName,
          hostIp: this.#o.hostIp,
          logFile: this.#logFile(def, c.name),
          builtin: {
            node: this.#o.nodeBin ?? join(repoRoot, 'node_modules/.bin/node'),
            script: join(here, 'serve.js'),
          },
          backoff: { baseMs, maxMs },
          changed: () => this.#changed(rec),
        }),
      );
    }
    this.#changed(rec);
    return rec;
  }

  async #startSandbox(rec: PodRecord): Promise<void> {
    const def = rec.def;
    try {
      await mkdir(this.#o.logDir, { recursive: true });
      // Unique per attempt: the pod's namespace, and its directory.
      const name = podNetnsName(def);
      if (def.hostNetwork) {
        rec.netns = this.#o.nodeNetns;
        rec.ip = this.#o.hostIp;
      } else {
        const ns = await NetNs.create(name);
        rec.netns = name;
        rec.ownsNetns = true;
        leftovers.addNetns(name);
        // The cluster is IPv4-only: no IPv6 on the pod's interfaces, before CNI makes eth0
        // (else its router solicitations and MLD reports are the datapath's first drops).
        await ns.sysctl('net.ipv6.conf.default.disable_ipv6', 1).catch(() => {});
        await ns.sysctl('net.ipv6.conf.all.disable_ipv6', 1).catch(() => {});
        rec.cniAdded = true;
        rec.ip = (await cniAdd(this.#cniCall(rec, name))).ip;
      }
      rec.dir = name;
      const dir = await this.#podDir(name);
      const hostsFile = join(dir, 'hosts');
      await writeFile(hostsFile, hostsFor(def, rec.ip ?? '127.0.0.1'));
      // A ClusterFirst pod always gets its own file, so setClusterDns can rewrite it later.
      const resolv =
        resolvConfFor(def, this.#clusterDns) ??
        (def.dnsPolicy === 'ClusterFirst' ? '# cluster DNS is not up yet\noptions ndots:5\n' : undefined);
      let resolvConfFile: string | undefined;
      if (resolv !== undefined) {
        resolvConfFile = join(dir, 'resolv.conf');
        await writeFile(resolvConfFile, resolv);
      }
      rec.sandbox = await Sandbox.start({
        netnsPath: netnsPath(rec.netns),
        hostname: def.hostname,
        hostsFile,
        resolvConfFile,
        cgroup: this.#o.cgroup,
      });
    } catch (err) {
      rec.problem = `failed to create the pod sandbox: ${errorMessage(err)}`;
      for (const c of rec.containers) c.creationProblem = rec.problem;
      // As a kubelet does after a failed ADD: DEL, and start from scratch next time.
      await this.#teardownSandbox(rec, true).catch(() => {});
      this.#changed(rec);
      throw err;
    }
    rec.problem = undefined;
    for (const c of rec.containers) {
      c.creationProblem = undefined;
      c.run(rec.sandbox, rec.ip ?? '127.0.0.1');
    }
    this.#changed(rec);
  }

  /** Stops everything of the pod and forgets it; with `force`, even when CNI DEL fails. */
  async #teardown(rec: PodRecord, force: boolean): Promise<void> {
    const grace = rec.def.gracePeriodMs ?? this.#o.gracePeriodMs ?? 30_000;
    await Promise.all(rec.containers.map((c) => c.stop(grace)));
    await this.#teardownSandbox(rec, force);
    if (this.#pods.get(rec.def.key) === rec) this.#pods.delete(rec.def.key);
  }

  async #teardownSandbox(rec: PodRecord, force: boolean): Promise<void> {
    await rec.sandbox?.stop();
    rec.sandbox = undefined;
    if (rec.dir !== undefined && this.#runDir !== undefined) {
      await rm(join(await this.#runDir, rec.dir), { recursive: true, force: true });
    }
    rec.dir = undefined;
    const netns = rec.netns;
    if (!rec.ownsNetns || netns === undefined) {
      rec.netns = undefined;
      rec.ip = undefined;
      return;
    }
    let delError: unknown;
    if (rec.cniAdded) {
      try {
        await cniDel(this.#cniCall(rec, netns));
        rec.cniAdded = false;
      } catch (err) {
        if (!force) throw err;
        delError = err;
      }
    }
    if (await NetNs.exists(netns)) await NetNs.delete(netns);
    leftovers.deleteNetns(netns);
    rec.netns = undefined;
    rec.ownsNetns = false;
    rec.ip = undefined;
    if (delError !== undefined) throw delError;
  }

  #cniCall(rec: PodRecord, netns: string): CniCall {
    return {
      bin: this.#o.cniBin ?? DEFAULT_CNI_BIN,
      nodeNetns: this.#o.nodeNetns,
      conf: this.#o.cniConf,
      containerId: rec.def.uid,
      netns: netnsPath(netns),
      ifname: IFNAME,
      podNamespace: rec.def.namespace,
      podName: rec.def.name,
    };
  }

  // --- status

  #status(rec: PodRecord): PodStatus {
    const containers = rec.containers;
    const unready = containers.filter((c) => !c.ready).map((c) => c.name);
    let phase: PodPhase = 'Running';
    if (rec.sandbox === undefined || containers.some((c) => !c.started)) phase = 'Pending';
    else if (containers.every((c) => c.finished !== undefined)) {
      phase = containers.every((c) => c.finished?.exitCode === 0) ? 'Succeeded' : 'Failed';
    }
    const notReady =
      phase === 'Succeeded' || phase === 'Failed'
        ? { reason: 'PodCompleted' }
        : { reason: 'ContainersNotReady', message: `containers with unready status: [${unready.join(' ')}]` };
    const condition = (type: PodConditionType, ok: boolean, why: object = {}): PodCondition => {
      const status = ok ? 'True' : 'False';
      const prev = rec.transitions.get(type);
      const at = prev?.status === status ? prev.at : new Date();
      rec.transitions.set(type, { status, at });
      return { type, status, lastProbeTime: null, lastTransitionTime: timestamp(at), ...(ok ? {} : why) };
    };
    const ip = rec.ip;
    const hostIp = this.#o.hostIp;
    return {
      phase,
      conditions: [
        condition('Initialized', true),
        condition('Ready', unready.length === 0, notReady),
        condition('ContainersReady', unready.length === 0, notReady),
        condition('PodScheduled', true),
      ],
      ...(rec.problem === undefined ? {} : { message: rec.problem }),
      ...(hostIp === undefined ? {} : { hostIP: hostIp, hostIPs: [{ ip: hostIp }] }),
      ...(ip === undefined ? {} : { podIP: ip, podIPs: [{ ip }] }),
      startTime: timestamp(rec.startTime),
      containerStatuses: containers.map((c) => c.status()),
      qosClass: 'BestEffort',
    };
  }

  /** Emits the pod's status on the next microtask, once for a burst of changes, if it differs. */
  #changed(rec: PodRecord): void {
    if (rec.emitQueued) return;
    rec.emitQueued = true;
    queueMicrotask(() => {
      rec.emitQueued = false;
      if (this.#pods.get(rec.def.key) !== rec) return;
      const status = this.#status(rec);
      const text = JSON.stringify(status);
      if (text === rec.emitted) return;
      rec.emitted = text;
      for (const listener of this.#listeners) listener(rec.def.key, status);
    });
  }

  // --- helpers

  #get(podKey: string): PodRecord {
    const rec = this.#pods.get(podKey);
    if (rec === undefined) throw new KeyNotFoundError(`no pod ${podKey} on node ${this.#o.nodeName}`);
    return rec;
  }

  #container(rec: PodRecord, name: string): ContainerRunner {
    const c = rec.containers.find((x) => x.name === name);
    if (c === undefined) throw new KeyNotFoundError(`pod ${rec.def.key} has no container ${name}`);
    return c;
  }

  #logFile(def: PodDef, container: string): string {
    return join(this.#o.logDir, `${def.namespace}_${def.name}_${container}.log`);
  }

  async #podDir(name: string): Promise<string> {
    this.#runDir ??=
      this.#o.runDir === undefined
        ? mkdtemp(join(tmpdir(), 'hypha-kubelet-'))
        : mkdir(this.#o.runDir, { recursive: true }).then(() => this.#o.runDir as string);
    const dir = join(await this.#runDir, name);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.#queues.get(key) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#queues.set(key, tail);
    void tail.then(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    return run;
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error(`PodRuntime for ${this.#o.nodeName} is closed`);
  }
}

function netnsPath(name: string): string {
  return `/var/run/netns/${name}`;
}

/** `hyp<unique>-<namespace>-<name>`: unique, recognisable in `ip netns`, at most 64 characters. */
function podNetnsName(def: PodDef): string {
  return `${uniqueName('p')}-${def.namespace}-${def.name}`.slice(0, 64).replace(/[-.]+$/, '');
}

function hostsFor(def: PodDef, ip: string): string {
  return [
    '# Kubernetes-managed hosts file.',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'fe00::0\tip6-mcastprefix',
    'fe00::1\tip6-allnodes',
    'fe00::2\tip6-allrouters',
    `${ip}\t${def.hostname}`,
    '',
  ].join('\n');
}

/**
 * The pod's resolv.conf, or undefined for the node's own: dnsPolicy Default, no cluster DNS,
 * or ClusterFirst on the host's network (which, as in Kubernetes, falls back to Default).
 */
function resolvConfFor(def: PodDef, dns: ClusterDns | undefined): string | undefined {
  const extra = def.dnsConfig;
  let nameservers: string[];
  let searches: string[];
  let options: string[];
  if (def.dnsPolicy === 'None') {
    nameservers = [...extra.nameservers];
    searches = [...extra.searches];
    options = [...extra.options];
  } else if (
    dns !== undefined &&
    (def.dnsPolicy === 'ClusterFirstWithHostNet' || (def.dnsPolicy === 'ClusterFirst' && !def.hostNetwork))
  ) {
    const d = dns.domain;
    const cluster = d === undefined ? [] : [`${def.namespace}.svc.${d}`, `svc.${d}`, d];
    nameservers = [dns.nameserver, ...extra.nameservers];
    searches = [...cluster, ...(dns.searches ?? []), ...extra.searches];
    options = ['ndots:5', ...extra.options];
  } else return undefined;
  const lines = [
    ...(searches.length === 0 ? [] : [`search ${[...new Set(searches)].join(' ')}`]),
    ...[...new Set(nameservers)].slice(0, 3).map((n) => `nameserver ${n}`),
    ...(options.length === 0 ? [] : [`options ${[...new Set(options)].join(' ')}`]),
  ];
  return `${lines.join('\n')}\n`;
}
