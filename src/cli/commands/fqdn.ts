/** `hypha fqdn cache list`: the names and IPs endpoints learned through the DNS proxy (like cilium-dbg fqdn cache list). */

import { callAgent, defaultSocket } from '../../agent/client.js';
import type { FqdnCacheEntry } from '../../agent/fqdn.js';
import { compileSelector } from '../../dns/pattern.js';
import { UsageError } from '../../errors.js';
import { type Command, formatTable, OUTPUT_OPTION, SOCKET_OPTION, wantsJson } from '../command.js';

export const fqdnCommands: Command[] = [
  {
    path: ['fqdn', 'cache', 'list'],
    summary: 'Names and IPs learned from DNS answers, per endpoint, with TTL and expiry',
    options: {
      node: { type: 'string', value: 'name', description: 'node (default: HYPHA_NODE)' },
      socket: SOCKET_OPTION,
      endpoint: { type: 'string', short: 'e', value: 'id', description: 'only this endpoint' },
      matchpattern: {
        type: 'string',
        short: 'n',
        value: 'pattern',
        description: 'only names matching this DNS pattern (as toFQDNs matchPattern)',
      },
      output: OUTPUT_OPTION,
    },
    async run({ values, stdout }) {
      const json = wantsJson(values);
      const endpoint = values.endpoint as string | undefined;
      if (endpoint !== undefined && !/^\d+$/.test(endpoint))
        throw new UsageError(`--endpoint: "${endpoint}" is not an endpoint id`);
      let match: (name: string) => boolean = () => true;
      if (values.matchpattern !== undefined) {
        try {
          match = compileSelector({ matchPattern: values.matchpattern as string });
        } catch (err) {
          throw new UsageError(`--matchpattern: ${(err as Error).message}`);
        }
      }
      const socket =
        (values.socket as string | undefined) ?? defaultSocket(values.node as string | undefined);
      const rows = (await callAgent<FqdnCacheEntry[]>(socket, 'GET', '/v1/fqdn/cache')).filter(
        (r) => (endpoint === undefined || r.endpointId === Number(endpoint)) && match(r.name),
      );
      if (json) {
        stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      stdout.write(
        formatTable(
          ['Endpoint', 'Source', 'FQDN', 'TTL', 'ExpirationTime', 'IPs'],
          rows.map((r) => [
            String(r.endpointId),
            r.inUse ? 'connection' : 'lookup',
            `${r.name}.`,
            String(r.ttl),
            new Date(r.expiresAt).toISOString(),
            r.ips.join(','),
          ]),
        ),
      );
      return 0;
    },
  },
];
