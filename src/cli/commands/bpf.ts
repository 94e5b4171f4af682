import {
  CT_SCOPE_EGRESS,
  PinnedMaps,
  POLICY_AUTH,
  POLICY_DENY,
  POLICY_REDIRECT,
} from '../../datapath/index.js';
import { UsageError } from '../../errors.js';
import { identityName } from '../../identity/index.js';
import { protoName } from '../../policy/index.js';
import { type Command, formatTable, OUTPUT_OPTION, wantsJson } from '../command.js';
import { nodePinDir } from './bpf-maps.js';

const NODE = {
  type: 'string',
  value: 'name',
  description: 'node whose maps to read (default: the only one here)',
} as const;

const big = (_k: string, v: unknown) => (typeof v === 'bigint' ? Number(v) : v);

function portOf(protocol: number, port: number, prefixlen: number): string {
  if (protocol === 0) return 'ANY';
  const bits = prefixlen - 80;
  if (prefixlen <= 72) return `ANY/${protoName(protocol)}`;
  if (bits >= 16) return `${port}/${protoName(protocol)}`;
  const size = 2 ** (16 - bits);
  return `${port}-${port + size - 1}/${protoName(protocol)}`;
}

function verdictOf(flags: number): string {
  if (flags & POLICY_DENY) return 'deny';
  if (flags & POLICY_REDIRECT) return 'redirect';
  if (flags & POLICY_AUTH) return 'auth';
  return 'allow';
}

export const bpfCommands: Command[] = [
  {
    path: ['bpf', 'policy', 'get'],
    args: '<endpoint-id>',
    summary: "An endpoint's policy map entries (like cilium-dbg bpf policy get)",
    options: { node: NODE, all: { type: 'boolean', description: 'every endpoint' }, output: OUTPUT_OPTION },
    run({ values, positionals, stdout }) {
      const id = positionals[0] === undefined ? undefined : Number(positionals[0]);
      if (!values.all && (id === undefined || !Number.isInteger(id)))
        throw new UsageError('give an endpoint id, or --all');
      using maps = new PinnedMaps(nodePinDir(values.node as string | undefined));
      const rows = [...maps.policy().entries()]
        .filter(([k]) => values.all || k.endpoint === id)
        .map(([k, v]) => ({
          endpoint: k.endpoint,
          direction: k.egress ? 'Egress' : 'Ingress',
          identity: k.identity,
          port: portOf(k.protocol, k.dport, k.prefixlen),
          verdict: verdictOf(v.flags),
          proxyPort: v.proxy_port,
          authType: v.auth_type,
          cookie: v.cookie,
        }))
        .sort(
          (a, b) =>
            a.endpoint - b.endpoint || a.direction.localeCompare(b.direction) || a.identity - b.identity,
        );
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      stdout.write(
        formatTable(
          [
            'ENDPOINT',
            'POLICY DIRECTION',
            'IDENTITY',
            'PORT/PROTO',
            'VERDICT',
            'PROXY PORT',
            'AUTH TYPE',
            'COOKIE',
          ],
          rows.map((r) => [
            String(r.endpoint),
            r.direction,
            r.identity === 0 ? 'ANY' : `${r.identity} (${identityName(r.identity)})`.replace(/ \(\d+\)$/, ''),
            r.port,
            r.verdict,
            r.proxyPort ? String(r.proxyPort) : '-',
            r.authType ? String(r.authType) : '-',
            String(r.cookie),
          ]),
        ),
      );
      return 0;
    },
  },
  {
    path: ['bpf', 'ct', 'list'],
    args: 'global',
    summary: 'The connection tracking table (like cilium-dbg bpf ct list global)',
    options: { node: NODE, output: OUTPUT_OPTION },
    run({ values, positionals, stdout }) {
      if (positionals[0] !== 'global') throw new UsageError('the table to list is "global"');
      using maps = new PinnedMaps(nodePinDir(values.node as string | undefined));
      const rows = maps.ct().lookupBatch();
      if (wantsJson(values)) {
        stdout.write(
          `${JSON.stringify(
            rows.map(([key, entry]) => ({ key, entry })),
            big,
            2,
          )}\n`,
        );
        return 0;
      }
      for (const [k, e] of rows) {
        const dir = k.scope === CT_SCOPE_EGRESS ? 'OUT' : 'IN';
        stdout.write(
          `${protoName(k.proto)} ${dir} ${k.saddr}:${k.sport} -> ${k.daddr}:${k.dport} expires=${e.expires_ns} ` +
            `RxPackets=${e.rx_packets} RxBytes=${e.rx_bytes} TxPackets=${e.tx_packets} TxBytes=${e.tx_bytes} ` +
            `Flags=0x${e.flags.toString(16)} SourceSecurityID=${e.src_identity} DestinationSecurityID=${e.dst_identity}` +
            `${e.proxy_port ? ` ProxyPort=${e.proxy_port}` : ''}\n`,
        );
      }
      return 0;
    },
  },
  {
    path: ['bpf', 'ipcache', 'list'],
    summary: 'IP prefixes and their security identities (like cilium-dbg bpf ipcache list)',
    options: { node: NODE, output: OUTPUT_OPTION },
    run({ values, stdout }) {
      using maps = new PinnedMaps(nodePinDir(values.node as string | undefined));
      const rows = [...maps.ipcache().entries()]
        .map(([k, v]) => ({
          prefix: `${k.ip4}/${k.prefixlen}`,
          identity: v.identity,
          tunnelEndpoint: v.tunnel_endpoint,
        }))
        .sort((a, b) => a.prefix.localeCompare(b.prefix));
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      stdout.write(
        formatTable(
          ['IP PREFIX/ADDRESS', 'IDENTITY'],
          rows.map((r) => [
            r.prefix,
            `identity=${r.identity} encryptkey=0 tunnelendpoint=${r.tunnelEndpoint}`,
          ]),
        ),
      );
      return 0;
    },
  },
  {
    path: ['bpf', 'metrics', 'list'],
    summary: 'Datapath packet and byte counters by reason and direction (like cilium-dbg bpf metrics list)',
    options: { node: NODE, output: OUTPUT_OPTION },
    run({ values, stdout }) {
      using maps = new PinnedMaps(nodePinDir(values.node as string | undefined));
      const rows = maps
        .metricsTotals()
        .sort((a, b) => a.reason - b.reason || a.direction.localeCompare(b.direction));
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      stdout.write(
        formatTable(
          ['REASON', 'DIRECTION', 'PACKETS', 'BYTES'],
          rows.map((r) => [
            r.reason === 0 ? r.reasonName : `${r.reasonName} (${r.reason})`,
            r.direction.toUpperCase(),
            String(r.packets),
            String(r.bytes),
          ]),
        ),
      );
      return 0;
    },
  },
];
