/**
 * `hypha ui`: Hubble UI against Hypha (the tutorial's `cilium hubble ui`): the service
 * map and flow table on http://127.0.0.1:12000, fed by the relay's Observer API.
 */
import { isIP } from 'node:net';
import { UsageError } from '../../errors.js';
import { startUiServer } from '../../ui/index.js';
import type { Command } from '../command.js';

function portOf(raw: string | undefined): number {
  const v = raw ?? '12000';
  if (!/^\d+$/.test(v) || Number(v) > 65535)
    throw new UsageError(`--port: "${v}" is not a port (0 to 65535)`);
  return Number(v);
}

function serverOf(raw: string | undefined): string {
  const v = raw ?? '127.0.0.1:4245';
  if (v.startsWith('unix://')) return v;
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(v))
    throw new UsageError(`--server: "${v}" is not host:port or unix:///path`);
  return v;
}

export const uiCommands: Command[] = [
  {
    path: ['ui'],
    summary:
      'Hubble UI: the service map and flows in the browser, through the relay (http://127.0.0.1:12000)',
    options: {
      port: { type: 'string', value: 'port', description: 'port to serve on (default 12000)' },
      address: { type: 'string', value: 'ip', description: 'address to serve on (default 127.0.0.1)' },
      server: {
        type: 'string',
        value: 'address',
        description: "the relay's Observer API, host:port or unix:///path (default 127.0.0.1:4245)",
      },
    },
    async run({ values, stdout, stderr, signal }) {
      const port = portOf(values.port as string | undefined);
      const relay = serverOf(values.server as string | undefined);
      const address = (values.address as string | undefined) ?? '127.0.0.1';
      if (address !== 'localhost' && isIP(address) === 0)
        throw new UsageError(`--address: "${address}" is not an IP address`);
      const ui = await startUiServer({
        relay,
        address,
        port,
        log: (line) => stderr.write(`hubble ui: ${line}\n`),
      });
      stdout.write(`Hubble UI on ${ui.url} (flows from the relay at ${relay}); Ctrl-C to stop\n`);
      await new Promise<void>((r) => {
        if (signal.aborted) r();
        else signal.addEventListener('abort', () => r(), { once: true });
      });
      await ui.close();
      return 0;
    },
  },
];
