/** `hypha proxy dns`: the DNS proxy, as the agent runs it for its node (a supervised child). */
import { isIPv4 } from 'node:net';
import { UsageError } from '../../errors.js';
import { runDnsProxy } from '../../proxy/dns/main.js';
import type { Command } from '../command.js';

function port(flag: string, v: unknown, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n < 1 || n > 65535)
    throw new UsageError(`--${flag}: ${v === undefined ? 'is required' : `"${String(v)}" is not a port`}`);
  return n;
}

export const proxyDnsCommands: Command[] = [
  {
    path: ['proxy', 'dns'],
    summary: "The node's DNS proxy (started and supervised by the agent)",
    options: {
      address: {
        type: 'string',
        value: 'ip',
        description: 'the local IPv4 address the datapath translates pod DNS to (required)',
      },
      port: { type: 'string', value: 'port', description: 'UDP and TCP port (required)' },
      'pin-dir': {
        type: 'string',
        value: 'dir',
        description: "the node's bpffs directory (required; holds hypha_dnsproxy4)",
      },
      'upstream-timeout': {
        type: 'string',
        value: 'ms',
        description: 'how long to wait for the DNS server before SERVFAIL (default 2000)',
      },
    },
    async run({ values, stdout, signal }) {
      const address = values.address as string | undefined;
      if (!address || !isIPv4(address)) throw new UsageError('--address: an IPv4 address is required');
      const pinDir = values['pin-dir'] as string | undefined;
      if (!pinDir) throw new UsageError('--pin-dir is required');
      const timeout = values['upstream-timeout'];
      if (timeout !== undefined && !/^\d+$/.test(String(timeout)))
        throw new UsageError(`--upstream-timeout: "${String(timeout)}" is not a number of milliseconds`);
      const proxy = await runDnsProxy({
        address,
        port: port('port', values.port),
        pinDir,
        ...(timeout !== undefined ? { upstreamTimeoutMs: Number(timeout) } : {}),
        log: (l) => stdout.write(`${l}\n`),
      });
      await new Promise<void>((r) => {
        signal.addEventListener('abort', () => r(), { once: true });
        // The agent is gone: so is the reason to run (a new agent starts its own proxy).
        if (process.send) process.once('disconnect', () => r());
      });
      await proxy.close();
      if (process.connected) process.disconnect();
      return 0;
    },
  },
];
