import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { Agent, type AgentConfig, type AgentStatus, type EndpointRecord } from '../../agent/agent.js';
import { serveApi } from '../../agent/api.js';
import { callAgent, defaultSocket, streamAgent } from '../../agent/client.js';
import type { DnsProxyStatus } from '../../agent/fqdn.js';
import {
  DEFAULT_MAX_WORKERS,
  HTTP_PROXY_ENGINES,
  type HttpProxyEngine,
  type HttpProxyStatus,
  MAX_WORKERS,
} from '../../agent/l7.js';
import { dropReasonName, summarizePacket } from '../../datapath/index.js';
import { errorMessage, UsageError } from '../../errors.js';
import { HubbleMetrics, parseMetricsConfig, splitMetricsFlag } from '../../hubble/metrics.js';
import { formatLabels } from '../../identity/index.js';
import { KubeClient, loadKubeconfig } from '../../k8s/client.js';
import { protoName } from '../../policy/index.js';
import { type Command, formatTable, OUTPUT_OPTION, SOCKET_OPTION, wantsJson } from '../command.js';
import { clusterStatus, formatClusterStatus } from './cluster-status.js';
import { runningLab } from './lab.js';

function lbAlgorithm(v: string): 'random' | 'maglev' {
  if (v !== 'random' && v !== 'maglev')
    throw new UsageError(`--lb-algorithm: "${v}" is not random or maglev`);
  return v;
}

function wholeNumber(flag: string, v: unknown, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(String(v)) || n > max)
    throw new UsageError(`--${flag}: "${String(v)}" is not a whole number up to ${max}`);
  return n;
}

function proxyWorkers(v: unknown): number {
  const n = wholeNumber('http-proxy-workers', v, MAX_WORKERS);
  if (n < 1)
    throw new UsageError(
      `--http-proxy-workers: "${String(v)}" is not a whole number from 1 to ${MAX_WORKERS}`,
    );
  return n;
}

function proxyEngine(v: unknown): HttpProxyEngine {
  const e = String(v) as HttpProxyEngine;
  if (!HTTP_PROXY_ENGINES.includes(e))
    throw new UsageError(`--http-proxy-engine: "${String(v)}" is not ${HTTP_PROXY_ENGINES.join(' or ')}`);
  return e;
}

/** `hypha status`'s proxy lines, as `cilium status` has its Proxy Status. */
function httpProxyLine(p: HttpProxyStatus): string {
  const up = p.workers.filter((w) => w.ready).length;
  const state = !p.routing.ok ? `Failure (routing: ${p.routing.error})` : up ? 'Ok' : 'Down';
  const h2 = p.http2 ? `, HTTP/2 worker ${p.http2.ready ? 'Ok' : 'Down'}` : '';
  return `${state}   ${up}/${p.workers.length} workers (${p.engine}) on :${p.ports.egress} (egress), :${p.ports.ingress} (ingress)${h2}, ${p.endpoints} endpoint(s) with L7 rules, ${p.restarts} restart(s)`;
}

function dnsProxyLine(p: DnsProxyStatus): string {
  if (!p.address) return 'Disabled   DNS under dns rules is dropped';
  return `${p.ready ? 'Ok' : 'Down'}   ${p.address}, ${p.learnedIps} learned IP(s), min TTL ${p.minTtl} s, ${p.restarts} restart(s)`;
}

function socketOf(values: Record<string, unknown>): string {
  return (values.socket as string | undefined) ?? defaultSocket(values.node as string | undefined);
}

const AGENT_KEYS = [
  'node',
  'pod-cidr',
  'state-dir',
  'socket',
  'pin-dir',
  'manifests',
  'kubeconfig',
  'node-ip',
  'cgroup-root',
  'lb-algorithm',
  'devices',
  'hubble-metrics',
  'tofqdns-min-ttl',
  'tofqdns-proxy-port',
  'http-proxy-workers',
  'http-proxy-engine',
  'hubble-tls-cert-file',
  'hubble-tls-key-file',
  'hubble-tls-client-ca-files',
];

/** The Observer API's TLS from Cilium's --hubble-tls-* flags; undefined without them (plain, as Hubble's disable-tls). */
function hubbleTls(values: Record<string, unknown>): { cert: Buffer; key: Buffer; ca?: Buffer } | undefined {
  const cert = values['hubble-tls-cert-file'] as string | undefined;
  const key = values['hubble-tls-key-file'] as string | undefined;
  const ca = values['hubble-tls-client-ca-files'] as string | undefined;
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key)
    throw new UsageError('--hubble-tls-cert-file and --hubble-tls-key-file: both are needed for TLS');
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new UsageError(`--${flag}: ${errorMessage(err)}`);
    }
  };
  return {
    cert: read('hubble-tls-cert-file', cert),
    key: read('hubble-tls-key-file', key),
    ...(ca ? { ca: read('hubble-tls-client-ca-files', ca) } : {}),
  };
}

/** The agent's config file: the flags' names as keys; unknown keys and wrong types are errors. */
function readAgentConfig(path: string | undefined): Record<string, unknown> {
  if (!path) return {};
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsageError(`--config ${path}: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new UsageError(`--config ${path}: must be a mapping`);
  for (const [k, v] of Object.entries(doc)) {
    if (!AGENT_KEYS.includes(k))
      throw new UsageError(`--config ${path}: ${k}: unknown key (known: ${AGENT_KEYS.join(', ')})`);
    const ok =
      k === 'manifests' ? Array.isArray(v) && v.every((x) => typeof x === 'string') : typeof v === 'string';
    if (!ok)
      throw new UsageError(
        `--config ${path}: ${k}: must be ${k === 'manifests' ? 'a list of paths' : 'a string'}`,
      );
  }
  return doc as Record<string, unknown>;
}

function definedOnly(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

export const agentCommands: Command[] = [
  {
    path: ['agent'],
    summary: 'Run the Hypha agent for this node (root)',
    options: {
      config: {
        type: 'string',
        value: 'file',
        description: 'YAML or JSON file with the same keys (flags win)',
      },
      node: { type: 'string', value: 'name', description: 'node name (required)' },
      'pod-cidr': {
        type: 'string',
        value: 'cidr',
        description: "this node's pod CIDR, e.g. 10.244.1.0/24 (required)",
      },
      'state-dir': {
        type: 'string',
        value: 'dir',
        description: 'state directory (default /var/run/hypha/<node>)',
      },
      socket: SOCKET_OPTION,
      'pin-dir': {
        type: 'string',
        value: 'dir',
        description: 'bpffs directory (default /sys/fs/bpf/hypha/<node>)',
      },
      manifests: {
        type: 'string',
        multiple: true,
        value: 'path',
        description: 'policy/namespace/pod manifests to watch (repeatable)',
      },
      kubeconfig: {
        type: 'string',
        value: 'file',
        description: 'watch this Kubernetes cluster for namespaces, pods, policies, identities',
      },
      'node-ip': {
        type: 'string',
        value: 'ip',
        description: "this node's address (published in CiliumEndpoints; NodePorts listen on it)",
      },
      'cgroup-root': {
        type: 'string',
        value: 'dir',
        description: 'cgroup v2 directory whose processes get service translation (default: the root)',
      },
      'lb-algorithm': {
        type: 'string',
        value: 'random|maglev',
        description: 'default backend selection (random)',
      },
      devices: {
        type: 'string',
        value: 'names',
        description:
          "the node's external devices, comma-separated (NodePort and externalIPs are served there)",
      },
      'hubble-metrics': {
        type: 'string',
        value: 'list',
        description:
          'Hubble metrics on <node-ip>:9965, comma-separated (dns,drop,tcp,flow,port-distribution,icmp,http)',
      },
      'tofqdns-min-ttl': {
        type: 'string',
        value: 'seconds',
        description: 'learned DNS IPs stay allowed at least this long (default 0: the answer TTL)',
      },
      'tofqdns-proxy-port': {
        type: 'string',
        value: 'port',
        description: 'the DNS proxy port (default 10053; 0: no DNS proxy, DNS under dns rules is dropped)',
      },
      'http-proxy-workers': {
        type: 'string',
        value: 'n',
        description: `L7 HTTP proxy processes sharing its ports (default: one per CPU, at most ${DEFAULT_MAX_WORKERS})`,
      },
      'http-proxy-engine': {
        type: 'string',
        value: 'engine',
        description:
          'what the HTTP proxy workers run: native (default; HTTP/2 goes to one node worker) or node',
      },
      'hubble-tls-cert-file': {
        type: 'string',
        value: 'file',
        description:
          "TLS certificate (PEM) for the Observer API on :4244 (with --hubble-tls-key-file; as Cilium's)",
      },
      'hubble-tls-key-file': { type: 'string', value: 'file', description: 'its private key (PEM)' },
      'hubble-tls-client-ca-files': {
        type: 'string',
        value: 'file',
        description: 'CA (PEM) that clients of :4244 must present a certificate from (mutual TLS)',
      },
    },
    async run({ values: flags, stdout, signal }) {
      const values = { ...readAgentConfig(flags.config as string | undefined), ...definedOnly(flags) };
      const node = values.node as string | undefined;
      let podCidr = values['pod-cidr'] as string | undefined;
      if (!node || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node))
        throw new UsageError('--node: a node name (DNS label) is required');
      // Checked before anything starts: a bad flag never leaves an agent half up.
      const tls = hubbleTls(values);
      let nodeIp = values['node-ip'] as string | undefined;
      if (!podCidr && values.kubeconfig) {
        // ipam.mode=kubernetes: the pod CIDR (and the node's address) come from the Node object.
        const n = await new KubeClient(loadKubeconfig(values.kubeconfig as string)).json<{
          spec?: { podCIDR?: string };
          status?: { addresses?: { type: string; address: string }[] };
        }>('GET', `/api/v1/nodes/${encodeURIComponent(node)}`);
        podCidr = n.spec?.podCIDR;
        nodeIp ??= n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
        if (!podCidr) throw new UsageError(`node ${node} has no spec.podCIDR yet`);
      }
      if (!podCidr)
        throw new UsageError('--pod-cidr is required (or --kubeconfig, to read it from the Node)');
      const config: AgentConfig = {
        node,
        podCidr,
        stateDir: (values['state-dir'] as string | undefined) ?? `/var/run/hypha/${node}`,
        socket: (values.socket as string | undefined) ?? `/var/run/hypha/${node}/agent.sock`,
        pinDir: (values['pin-dir'] as string | undefined) ?? `/sys/fs/bpf/hypha/${node}`,
        manifests: (values.manifests as string[] | undefined) ?? [],
        ...(values.kubeconfig ? { kubeconfig: values.kubeconfig as string } : {}),
        ...(nodeIp ? { nodeIp } : {}),
        ...(values['cgroup-root'] ? { cgroupRoot: values['cgroup-root'] as string } : {}),
        ...(values['lb-algorithm'] ? { lbAlgorithm: lbAlgorithm(values['lb-algorithm'] as string) } : {}),
        ...(values.devices ? { devices: String(values.devices).split(',').filter(Boolean) } : {}),
        ...(values['hubble-metrics']
          ? { hubbleMetrics: splitMetricsFlag(String(values['hubble-metrics'])) }
          : {}),
        ...(values['tofqdns-min-ttl'] !== undefined
          ? { toFqdnsMinTtl: wholeNumber('tofqdns-min-ttl', values['tofqdns-min-ttl'], 0xffffffff) }
          : {}),
        ...(values['tofqdns-proxy-port'] !== undefined
          ? { dnsProxyPort: wholeNumber('tofqdns-proxy-port', values['tofqdns-proxy-port'], 65535) }
          : {}),
        ...(values['http-proxy-workers'] !== undefined
          ? { httpProxyWorkers: proxyWorkers(values['http-proxy-workers']) }
          : {}),
        ...(values['http-proxy-engine'] !== undefined
          ? { httpProxyEngine: proxyEngine(values['http-proxy-engine']) }
          : {}),
      };
      // Checked before the agent touches anything: a bad entry must not leave half an agent.
      let enabled: ReturnType<typeof parseMetricsConfig> = [];
      try {
        enabled = parseMetricsConfig(config.hubbleMetrics ?? []);
      } catch (err) {
        throw new UsageError(`--hubble-metrics: ${(err as Error).message}`, { cause: err });
      }
      const agent = new Agent(config);
      agent.start();
      await agent.startWatching();
      agent
        .drainEvents()
        .catch((err: unknown) => stdout.write(`hypha agent: event reader stopped: ${String(err)}\n`));
      const server = await serveApi(agent, config.socket);
      let metricsServer: import('node:http').Server | undefined;
      if (enabled.length) {
        const metrics = new HubbleMetrics(enabled);
        agent.flows.metrics = metrics;
        const { createServer } = await import('node:http');
        const srv = createServer((req, res) => {
          if (req.url !== '/metrics') {
            res.writeHead(404).end();
            return;
          }
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
          res.end(metrics.render(agent.metricsText()));
        });
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen(9965, config.nodeIp ?? '127.0.0.1', () => resolve());
        });
        metricsServer = srv;
      }
      // Hubble's Observer API: next to the agent's socket, and on the node's address like Cilium's :4244.
      const { startObserverServer } = await import('../../hubble/grpc/index.js');
      const hubble = await startObserverServer({
        ring: agent.flows.ring,
        nodeName: node,
        listen: [
          `unix://${join(dirname(config.socket), 'hubble.sock')}`,
          ...(config.nodeIp ? [`${config.nodeIp}:4244`] : []),
        ],
        ...(tls ? { tls } : {}),
      });
      stdout.write(
        `hypha agent ${node}: pod CIDR ${agent.ipam.cidr}, API on ${config.socket}, Hubble on ${hubble.addresses.join(', ')}, maps in ${config.pinDir}\n`,
      );
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      await hubble.close();
      metricsServer?.close();
      server.close();
      agent.stop();
      stdout.write('hypha agent: stopped (programs stay attached, maps pinned)\n');
      return 0;
    },
  },
  {
    path: ['status'],
    summary: "The agent's health and counts (like cilium-dbg status)",
    options: {
      node: { type: 'string', value: 'name', description: 'node' },
      socket: SOCKET_OPTION,
      output: OUTPUT_OPTION,
      verbose: { type: 'boolean', description: 'details' },
      kubeconfig: {
        type: 'string',
        value: 'file',
        description: "a cluster's status (default: the running lab's)",
      },
      wait: { type: 'boolean', description: 'wait until the cluster (or agent) is ready' },
      'wait-duration': {
        type: 'string',
        value: 'seconds',
        description: 'how long --wait waits (default 300)',
      },
    },
    async run({ values, stdout }) {
      const deadline = Date.now() + 1000 * Number(values['wait-duration'] ?? 300);
      // No agent named: the cluster's status, as the cilium CLI shows it.
      const kubeconfig =
        (values.kubeconfig as string | undefined) ??
        (values.socket || values.node || process.env.HYPHA_AGENT_SOCKET
          ? undefined
          : runningLab('cilium-demo')?.kubeconfig);
      if (kubeconfig) {
        const client = new KubeClient(loadKubeconfig(kubeconfig));
        for (;;) {
          const st = await clusterStatus(client);
          if (st.ok || !values.wait || Date.now() > deadline) {
            stdout.write(wantsJson(values) ? `${JSON.stringify(st, null, 2)}\n` : formatClusterStatus(st));
            return st.ok ? 0 : 1;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      let s: AgentStatus;
      for (;;) {
        try {
          s = await callAgent<AgentStatus>(socketOf(values), 'GET', '/v1/status');
          if (!values.wait || s.endpoints.notReady === 0 || Date.now() > deadline) break;
        } catch (err) {
          if (!values.wait || Date.now() > deadline) throw err;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(s, null, 2)}\n`);
        return 0;
      }
      const lines = [
        ['Node', s.node],
        ['Datapath', `${s.datapath.ok ? 'Ok' : 'Failure'}   maps in ${s.datapath.pinDir}`],
        ['IPAM', `IPv4: ${s.ipam.used}/${s.ipam.capacity} allocated from ${s.podCidr}`],
        ['Endpoints', `${s.endpoints.ready}/${s.endpoints.total} ready`],
        ['Policies', String(s.policies)],
        ['Identities', String(s.identities)],
        ['Manifests', s.manifests.errors.length ? `${s.manifests.errors.length} error(s)` : 'Ok'],
        ...(s.httpProxy ? [['HTTP proxy', httpProxyLine(s.httpProxy)]] : []),
        ...(s.dnsProxy ? [['DNS proxy', dnsProxyLine(s.dnsProxy)]] : []),
      ];
      stdout.write(lines.map(([k, v]) => `${`${k}:`.padEnd(14)}${v}`).join('\n') + '\n');
      if (values.verbose) for (const e of s.manifests.errors) stdout.write(`  ${e}\n`);
      return s.endpoints.notReady || s.manifests.errors.length ? 1 : 0;
    },
  },
  {
    path: ['endpoint', 'list'],
    summary: "This node's endpoints (like cilium-dbg endpoint list)",
    options: {
      node: { type: 'string', value: 'name', description: 'node' },
      socket: SOCKET_OPTION,
      output: OUTPUT_OPTION,
    },
    async run({ values, stdout }) {
      const eps = await callAgent<EndpointRecord[]>(socketOf(values), 'GET', '/v1/endpoints');
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(eps, null, 2)}\n`);
        return 0;
      }
      stdout.write(
        formatTable(
          ['ENDPOINT', 'IDENTITY', 'LABELS (source:key[=value])', 'IPv4', 'STATUS'],
          eps.map((e) => [String(e.id), String(e.identity), formatLabels(e.labels).join(' '), e.ip, e.state]),
        ),
      );
      return 0;
    },
  },
  {
    path: ['endpoint', 'get'],
    args: '<id>',
    summary: 'One endpoint in full (like cilium-dbg endpoint get)',
    options: { node: { type: 'string', value: 'name', description: 'node' }, socket: SOCKET_OPTION },
    async run({ values, positionals, stdout }) {
      if (!positionals[0]) throw new UsageError('give an endpoint id or container id');
      const ep = await callAgent<EndpointRecord>(
        socketOf(values),
        'GET',
        `/v1/endpoints/${encodeURIComponent(positionals[0])}`,
      );
      stdout.write(`${JSON.stringify(ep, null, 2)}\n`);
      return 0;
    },
  },
];

export const liveCommands: Command[] = [
  {
    path: ['identity', 'list'],
    summary: 'Security identities the agent knows (like cilium-dbg identity list)',
    options: {
      node: { type: 'string', value: 'name', description: 'node' },
      socket: SOCKET_OPTION,
      output: OUTPUT_OPTION,
    },
    async run({ values, stdout }) {
      const ids = await callAgent<{ id: number; labels: Record<string, string> }[]>(
        socketOf(values),
        'GET',
        '/v1/identities',
      );
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(ids, null, 2)}\n`);
        return 0;
      }
      const rows: string[][] = [];
      for (const i of ids.sort((a, b) => a.id - b.id)) {
        const labels = Object.keys(i.labels).some((k) => k.startsWith('reserved:'))
          ? Object.keys(i.labels)
          : formatLabels(i.labels);
        for (const [n, l] of labels.entries()) rows.push([n === 0 ? String(i.id) : '', l]);
      }
      stdout.write(formatTable(['ID', 'LABELS'], rows));
      return 0;
    },
  },
  {
    path: ['identity', 'get'],
    args: '<id>',
    summary: 'One identity and its labels',
    options: { node: { type: 'string', value: 'name', description: 'node' }, socket: SOCKET_OPTION },
    async run({ values, positionals, stdout }) {
      const want = Number(positionals[0]);
      if (!Number.isInteger(want)) throw new UsageError('give a numeric identity');
      const ids = await callAgent<{ id: number; labels: Record<string, string> }[]>(
        socketOf(values),
        'GET',
        '/v1/identities',
      );
      const found = ids.find((i) => i.id === want);
      if (!found) throw new Error(`identity ${want} is not known to this agent`);
      stdout.write(`${JSON.stringify(found, null, 2)}\n`);
      return 0;
    },
  },
  {
    path: ['policy', 'get'],
    summary: 'The policies in force on this node (like cilium-dbg policy get)',
    options: { node: { type: 'string', value: 'name', description: 'node' }, socket: SOCKET_OPTION },
    async run({ values, stdout }) {
      const policies = await callAgent<unknown[]>(socketOf(values), 'GET', '/v1/policy');
      stdout.write(`${JSON.stringify(policies, null, 2)}\n`);
      return 0;
    },
  },
  {
    path: ['monitor'],
    summary: 'Live datapath events: drops, traces, policy verdicts (like cilium-dbg monitor)',
    options: {
      node: { type: 'string', value: 'name', description: 'node' },
      socket: SOCKET_OPTION,
      type: {
        type: 'string',
        short: 't',
        multiple: true,
        value: 'type',
        description: 'drop, trace or policy-verdict (repeatable)',
      },
      output: { type: 'string', short: 'o', value: 'format', description: 'output: text (default) or json' },
    },
    async run({ values, stdout, signal }) {
      const types = (values.type as string[] | undefined) ?? [];
      for (const t of types)
        if (!['drop', 'trace', 'policy-verdict'].includes(t))
          throw new UsageError(`--type: "${t}" is not drop, trace or policy-verdict`);
      const query = types.map((t) => `type=${encodeURIComponent(t)}`).join('&');
      await streamAgent(
        socketOf(values),
        'GET',
        `/v1/monitor${query ? `?${query}` : ''}`,
        undefined,
        (line) =>
          stdout.write(
            `${values.output === 'json' ? line : formatEvent(JSON.parse(line) as MonitorEvent)}\n`,
          ),
        signal,
      );
      return 0;
    },
  },
];

interface MonitorEvent {
  type: number;
  subtype: number;
  source: number;
  src_identity: number;
  dst_identity: number;
  ifindex: number;
  cookie: number;
  orig_len: number;
  ct_state: number;
  packet: string;
}

function formatEvent(e: MonitorEvent): string {
  const p = summarizePacket(Uint8Array.from(Buffer.from(e.packet, 'hex')));
  const l4 = p
    ? `${p.src}${p.sport !== undefined ? `:${p.sport}` : ''} -> ${p.dst}${p.dport !== undefined ? `:${p.dport}` : ''} ${protoName(p.protocol).toLowerCase()}${p.tcpFlags?.length ? ` ${p.tcpFlags.join(', ')}` : ''}${p.icmpType !== undefined ? ` type ${p.icmpType}` : ''}`
    : `${e.orig_len} bytes`;
  const ids = `identity ${e.src_identity}->${e.dst_identity}`;
  if (e.type === 1)
    return `xx drop (${dropReasonName(e.subtype)}) to endpoint ${e.source}, ifindex ${e.ifindex}, ${ids}: ${l4}`;
  if (e.type === 5)
    return `Policy verdict log: endpoint ${e.source}, ifindex ${e.ifindex}, ${ids}, cookie ${e.cookie}: ${l4}`;
  return `-> endpoint ${e.source} state ${['new', 'established', 'reply', 'related'][e.ct_state] ?? e.ct_state} ifindex ${e.ifindex}, ${ids}: ${l4}`;
}
