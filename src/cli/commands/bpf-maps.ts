import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MapType, openPinnedRawMap } from '../../bpf/index.js';
import { UsageError } from '../../errors.js';
import { type Command, formatTable } from '../command.js';

export const BPFFS_ROOT = '/sys/fs/bpf/hypha';

/**
 * The node whose pinned maps a command reads: `--node`, else HYPHA_NODE, else the only
 * node pinned on this machine (in the lab every node pins under the same bpffs).
 */
export function nodePinDir(node: string | undefined): string {
  const name = node ?? process.env.HYPHA_NODE;
  if (name) return join(BPFFS_ROOT, name);
  let nodes: string[] = [];
  try {
    nodes = readdirSync(BPFFS_ROOT).filter((n) => statSync(join(BPFFS_ROOT, n)).isDirectory());
  } catch {
    throw new Error(`no Hypha agent has pinned maps on this machine (${BPFFS_ROOT} is missing)`);
  }
  if (nodes.length === 1) return join(BPFFS_ROOT, nodes[0]!);
  if (nodes.length === 0) throw new Error(`no node has pinned maps under ${BPFFS_ROOT}`);
  throw new UsageError(`several nodes pin maps here (${nodes.join(', ')}): choose one with --node`);
}

export interface MapUsage {
  name: string;
  path: string;
  type: string;
  keySize: number;
  valueSize: number;
  entries: number;
  maxEntries: number;
  /** entries / maxEntries, in percent: near 100 means inserts start failing or evicting. */
  pressure: number;
}

/** Walks every pinned map under dir (recursively) and counts its entries. */
export function pinnedMapUsage(dir: string): MapUsage[] {
  const out: MapUsage[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, e.name);
      if (e.isDirectory()) {
        walk(path);
        continue;
      }
      using map = openPinnedRawMap(path);
      if (!map) continue;
      const isRing = map.type === MapType.RingBuf; // ring buffers have no entries
      const entries = isRing ? 0 : map.count();
      out.push({
        name: e.name,
        path,
        type: map.typeName,
        keySize: map.keySize,
        valueSize: map.valueSize,
        entries,
        maxEntries: map.maxEntries,
        pressure: isRing ? 0 : Math.round((entries / map.maxEntries) * 1000) / 10,
      });
    }
  };
  walk(dir);
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

export const bpfMapCommands: Command[] = [
  {
    path: ['bpf', 'map', 'list'],
    summary:
      'List the pinned BPF maps of a node with entries, capacity and pressure (like cilium-dbg bpf map list)',
    options: {
      node: {
        type: 'string',
        value: 'name',
        description: 'node whose maps to list (default: the only one here)',
      },
      output: {
        type: 'string',
        short: 'o',
        value: 'json',
        description: 'output format: table (default) or json',
      },
    },
    run({ values, stdout }) {
      const maps = pinnedMapUsage(nodePinDir(values.node as string | undefined));
      if (values.output === 'json') {
        stdout.write(`${JSON.stringify(maps, null, 2)}\n`);
        return 0;
      }
      if (values.output !== undefined && values.output !== 'table') {
        throw new UsageError(`--output: unknown format "${values.output}" (table or json)`);
      }
      stdout.write(
        formatTable(
          ['Name', 'Type', 'Key', 'Value', 'Num entries', 'Max entries', 'Pressure'],
          maps.map((m) => [
            m.name,
            m.type,
            String(m.keySize),
            String(m.valueSize),
            String(m.entries),
            String(m.maxEntries),
            `${m.pressure}%`,
          ]),
        ),
      );
      return 0;
    },
  },
];
