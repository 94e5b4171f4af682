/**
 * The lab's servers that run inside lab namespaces as their own processes: the world's
 * HTTP/HTTPS hosts, and the cluster DNS server of the kube-dns pod.
 */
import { readFileSync, statSync, watch } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UsageError } from '../../errors.js';
import type { WorldHost } from '../../lab/cluster/topology.js';
import { startDnsServer } from '../../lab/dns/server.js';
import { Zone, type ZoneData } from '../../lab/dns/zone.js';
import { ensureCa, ensureServerCert } from '../../lab/pki.js';
import { startWorld } from '../../lab/world/server.js';
import type { Command } from '../command.js';

const untilAborted = (signal: AbortSignal) =>
  new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));

export const labServerCommands: Command[] = [
  {
    path: ['lab', 'world-server'],
    summary: "The lab world's hosts (run in the world namespace by the lab)",
    options: {
      'data-dir': { type: 'string', value: 'dir', description: "the lab's data directory (its CA)" },
      host: { type: 'string', multiple: true, value: 'name=ip', description: 'a world host (repeatable)' },
    },
    async run({ values, stdout, signal }) {
      const dir = values['data-dir'] as string | undefined;
      if (!dir) throw new UsageError('--data-dir is required');
      const hosts: WorldHost[] = ((values.host as string[] | undefined) ?? []).map((h) => {
        const m = /^([^=]+)=(\d+\.\d+\.\d+\.\d+)$/.exec(h);
        if (!m) throw new UsageError(`--host ${h}: expected name=ipv4`);
        return { name: m[1]!, ip: m[2]! };
      });
      const pki = join(dir, 'pki');
      const ca = ensureCa(pki);
      const tls = ensureServerCert(
        pki,
        ca,
        'world',
        hosts.flatMap((h) => [h.name, h.ip]),
      );
      const world = await startWorld({ hosts, tls, log: (l) => stdout.write(`${l}\n`) });
      stdout.write(`world: serving ${world.listening.join(', ')}\n`);
      await untilAborted(signal);
      await world.close();
      return 0;
    },
  },
  {
    path: ['lab', 'dns-server'],
    summary: 'The cluster DNS server (run in the kube-dns pod by the lab)',
    options: {
      'zone-file': {
        type: 'string',
        value: 'file',
        description: 'zone data (JSON), reloaded when it changes',
      },
      port: { type: 'string', value: 'port', description: 'port (default 53)' },
      host: { type: 'string', value: 'ip', description: 'address (default 0.0.0.0)' },
    },
    async run({ values, stdout, signal }) {
      const file = values['zone-file'] as string | undefined;
      if (!file) throw new UsageError('--zone-file is required');
      const load = () => new Zone(JSON.parse(readFileSync(file, 'utf8')) as ZoneData);
      const server = await startDnsServer({
        host: (values.host as string | undefined) ?? '0.0.0.0',
        port: Number(values.port ?? 53),
        zone: load(),
      });
      stdout.write(`cluster DNS on port ${server.port}, zone from ${file}\n`);
      let mtime = statSync(file).mtimeMs;
      const reload = () => {
        try {
          const m = statSync(file).mtimeMs;
          if (m === mtime) return;
          mtime = m;
          server.setZone(load());
        } catch (err) {
          stdout.write(`zone reload: ${(err as Error).message}\n`);
        }
      };
      // The file is replaced by rename: watch its folder, and poll in case an event is missed.
      const w = watch(dirname(file), (_, f) => {
        if (f === basename(file)) reload();
      });
      const poll = setInterval(reload, 1000);
      await untilAborted(signal);
      clearInterval(poll);
      w.close();
      await server.close();
      return 0;
    },
  },
];
