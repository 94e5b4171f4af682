import { Agent, type AgentConfig, type AgentStatus, type EndpointRecord } from '../../agent/agent.js';
import { serveApi } from '../../agent/api.js';
import { callAgent, defaultSocket } from '../../agent/client.js';
import { UsageError } from '../../errors.js';
import { formatLabels } from '../../identity/index.js';
import { type Command, formatTable } from '../command.js';

const SOCKET = {
  type: 'string',
  value: 'path',
  description: 'agent API socket (default /var/run/hypha/<node>/agent.sock, or HYPHA_AGENT_SOCKET)',
} as const;
const OUTPUT = {
  type: 'string',
  short: 'o',
  value: 'format',
  description: 'output: table (default) or json',
} as const;

function socketOf(values: Record<string, unknown>): string {
  return (values.socket as string | undefined) ?? defaultSocket(values.node as string | undefined);
}

export const agentCommands: Command[] = [
  {
    path: ['agent'],
    summary: 'Run the Hypha agent for this node (root)',
    options: {
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
      socket: SOCKET,
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
    },
    async run({ values, stdout, signal }) {
      const node = values.node as string | undefined;
      const podCidr = values['pod-cidr'] as string | undefined;
      if (!node || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node))
        throw new UsageError('--node: a node name (DNS label) is required');
      if (!podCidr) throw new UsageError('--pod-cidr is required');
      const config: AgentConfig = {
        node,
        podCidr,
        stateDir: (values['state-dir'] as string | undefined) ?? `/var/run/hypha/${node}`,
        socket: (values.socket as string | undefined) ?? `/var/run/hypha/${node}/agent.sock`,
        pinDir: (values['pin-dir'] as string | undefined) ?? `/sys/fs/bpf/hypha/${node}`,
        manifests: (values.manifests as string[] | undefined) ?? [],
      };
      const agent = new Agent(config);
      agent.start();
      const server = await serveApi(agent, config.socket);
      stdout.write(
        `hypha agent ${node}: pod CIDR ${agent.ipam.cidr}, API on ${config.socket}, maps in ${config.pinDir}\n`,
      );
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
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
      socket: SOCKET,
      output: OUTPUT,
      verbose: { type: 'boolean', description: 'details' },
    },
    async run({ values, stdout }) {
      const s = await callAgent<AgentStatus>(socketOf(values), 'GET', '/v1/status');
      if (values.output === 'json') {
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
      ];
      stdout.write(lines.map(([k, v]) => `${`${k}:`.padEnd(14)}${v}`).join('\n') + '\n');
      if (values.verbose) for (const e of s.manifests.errors) stdout.write(`  ${e}\n`);
      return s.endpoints.notReady || s.manifests.errors.length ? 1 : 0;
    },
  },
  {
    path: ['endpoint', 'list'],
    summary: "This node's endpoints (like cilium-dbg endpoint list)",
    options: { node: { type: 'string', value: 'name', description: 'node' }, socket: SOCKET, output: OUTPUT },
    async run({ values, stdout }) {
      const eps = await callAgent<EndpointRecord[]>(socketOf(values), 'GET', '/v1/endpoints');
      if (values.output === 'json') {
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
    options: { node: { type: 'string', value: 'name', description: 'node' }, socket: SOCKET },
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
