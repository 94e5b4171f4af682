/**
 * Services as the agent applied them and as the maps hold them, in Cilium's words:
 * `hypha service list` (like `cilium-dbg service list`) and `hypha bpf lb list`
 * (like `cilium-dbg bpf lb list`).
 */
import type { ServiceRecord } from '../../agent/agent.js';
import { callAgent, defaultSocket } from '../../agent/client.js';
import { LbMaps } from '../../datapath/lb.js';
import { type Command, formatTable, OUTPUT_OPTION, SOCKET_OPTION, wantsJson } from '../command.js';
import { nodePinDir } from './bpf-maps.js';

const NODE = {
  type: 'string' as const,
  value: 'name',
  description: 'node (default: HYPHA_NODE, or the only one)',
};

export const serviceCommands: Command[] = [
  {
    path: ['service', 'list'],
    summary: 'Services the agent load-balances: frontends and backends (like cilium-dbg service list)',
    options: { node: NODE, socket: SOCKET_OPTION, output: OUTPUT_OPTION },
    async run({ values, stdout }) {
      const socket =
        (values.socket as string | undefined) ?? defaultSocket(values.node as string | undefined);
      const svcs = await callAgent<ServiceRecord[]>(socket, 'GET', '/v1/services');
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(svcs, null, 2)}\n`);
        return 0;
      }
      const rows = svcs.map((s) => [
        s.revNatIndex === undefined ? '-' : String(s.revNatIndex),
        `${s.frontend.ip}:${s.frontend.port}/${s.frontend.protocol}`,
        s.type,
        s.error
          ? `error: ${s.error}`
          : (s.backends
              .map((b, i) => `${i + 1} => ${b.ip}:${b.port}/${s.frontend.protocol} (${b.state})`)
              .join('\n') || '(no backends)') + (s.warning ? `\nwarning: ${s.warning}` : ''),
        s.service,
      ]);
      // Multi-line backend cells, as cilium-dbg prints them: one backend per line.
      const flat = rows.flatMap((r) => {
        const lines = r[3]!.split('\n');
        return lines.map((l, i) => (i === 0 ? [r[0]!, r[1]!, r[2]!, l, r[4]!] : ['', '', '', l, '']));
      });
      stdout.write(formatTable(['ID', 'Frontend', 'Service Type', 'Backend', 'Service'], flat));
      return svcs.some((s) => s.error) ? 1 : 0;
    },
  },
  {
    path: ['bpf', 'lb', 'list'],
    summary:
      'The load-balancer maps: frontends (default), backends or reverse NAT (like cilium-dbg bpf lb list)',
    options: {
      node: NODE,
      frontends: { type: 'boolean', description: 'service frontends and their backend slots (default)' },
      backends: { type: 'boolean', description: 'backends by id' },
      revnat: { type: 'boolean', description: 'reverse-NAT entries' },
      output: OUTPUT_OPTION,
    },
    run({ values, stdout }) {
      using maps = LbMaps.openPinned(nodePinDir(values.node as string | undefined));
      if (values.backends) {
        const rows = maps.listBackends();
        if (wantsJson(values)) stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        else
          stdout.write(
            formatTable(
              ['BACKEND ID', 'ADDRESS', 'STATE'],
              rows.map((b) => [String(b.id), `${b.ip}:${b.port}/${String(b.protocol)}`, b.state]),
            ),
          );
        return 0;
      }
      if (values.revnat) {
        const rows = maps.listRevNat();
        if (wantsJson(values)) stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        else
          stdout.write(
            formatTable(
              ['ID', 'BACKEND ADDRESS (REVNAT_ID) (SLOT)'],
              rows.map((r) => [String(r.index), `${r.ip}:${r.port}`]),
            ),
          );
        return 0;
      }
      const rows = maps.listFrontends();
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      const out: string[][] = [];
      for (const f of rows) {
        const fe = `${f.frontend.ip}:${f.frontend.port}/${f.frontend.protocol} (${f.scope})`;
        out.push([fe, `0.0.0.0:0 (${f.revNatIndex}) (0) [${[f.type, ...f.flags].join(', ')}]`]);
        for (const b of f.backends)
          out.push([
            fe,
            `${b.ip ?? '?'}:${b.port ?? 0} (${f.revNatIndex}) (${b.slot})${b.state && b.state !== 'active' ? ` [${b.state}]` : ''}`,
          ]);
      }
      stdout.write(formatTable(['SERVICE ADDRESS', 'BACKEND ADDRESS (REVNAT_ID) (SLOT)'], out));
      return 0;
    },
  },
];
