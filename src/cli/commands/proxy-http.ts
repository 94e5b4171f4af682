/**
 * `hypha proxy http`: the L7 HTTP proxy. The agent runs it as supervised children (its
 * workers) and feeds them its endpoints' HTTP rules over IPC (src/proxy/http/main.ts); run
 * by hand it serves with no rules, refusing everything. With `--reuse-port` (the agent's workers)
 * its listeners join a SO_REUSEPORT group on their ports; without it, ports in use are an
 * error, so a by-hand run never takes a share of the workers' connections. With
 * `--handoff-dir` it serves the HTTP/2 connections the native workers hand over instead.
 */
import { UsageError } from '../../errors.js';
import { runHttpProxyProcess } from '../../proxy/http/main.js';
import type { Command } from '../command.js';

function port(flag: string, v: unknown): number {
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n < 1 || n > 65535)
    throw new UsageError(`--${flag}: "${String(v ?? '')}" is not a port (1-65535)`);
  return n;
}

export const proxyHttpCommands: Command[] = [
  {
    path: ['proxy', 'http'],
    summary: 'Run the L7 HTTP proxy (the agent starts it; root)',
    options: {
      'egress-port': {
        type: 'string',
        value: 'port',
        description: 'listener for connections redirected by egress policy (required)',
      },
      'ingress-port': {
        type: 'string',
        value: 'port',
        description: 'listener for connections redirected by ingress policy (required)',
      },
      'pin-dir': {
        type: 'string',
        value: 'dir',
        description: "the agent's bpffs directory, for conntrack and ipcache (required)",
      },
      address: { type: 'string', value: 'ip', description: 'listen address (default 127.0.0.1)' },
      'pod-cidr': {
        type: 'string',
        value: 'cidr',
        description: "this node's pod CIDR (egress to pods elsewhere keeps the pod's address)",
      },
      'reuse-port': {
        type: 'boolean',
        description: "share the ports with other workers (SO_REUSEPORT; the agent's workers do)",
      },
      'handoff-dir': {
        type: 'string',
        value: 'dir',
        description: 'serve HTTP/2 handed over by the native workers on unix sockets here, not the ports',
      },
    },
    async run({ values, stderr, signal }) {
      const handoffDir = values['handoff-dir'] as string | undefined;
      if (handoffDir !== undefined && !handoffDir.startsWith('/'))
        throw new UsageError(`--handoff-dir: "${handoffDir}" is not an absolute path`);
      const egressPort = handoffDir ? 0 : port('egress-port', values['egress-port']);
      const ingressPort = handoffDir ? 0 : port('ingress-port', values['ingress-port']);
      if (!handoffDir && egressPort === ingressPort)
        throw new UsageError('--egress-port and --ingress-port must differ');
      const pinDir = values['pin-dir'] as string | undefined;
      if (!pinDir) throw new UsageError('--pin-dir is required');
      const podCidr = values['pod-cidr'] as string | undefined;
      if (podCidr !== undefined && !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(podCidr))
        throw new UsageError(`--pod-cidr: "${podCidr}" is not an IPv4 CIDR`);
      await runHttpProxyProcess(
        {
          egressPort,
          ingressPort,
          pinDir,
          ...(values.address ? { address: values.address as string } : {}),
          ...(podCidr ? { podCidr } : {}),
          reusePort: values['reuse-port'] === true,
          ...(handoffDir ? { handoffDir } : {}),
          log: (line) => stderr.write(`${line}\n`),
        },
        signal,
      );
      return 0;
    },
  },
];
