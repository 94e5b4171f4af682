/**
 * `hypha relay`: hubble-relay on its own. One Observer API (default :4245) over every
 * agent's (:4244): peers named on the command line or found as a cluster's nodes, with
 * hubble-relay's flags for listening, timeouts, the sort buffer and TLS both ways.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { UsageError } from '../../errors.js';
import type { PeerInfo, TlsOptions } from '../../hubble/grpc/index.js';
import { parseDuration } from '../../hubble/observe.js';
import type { RelayOptions } from '../../hubble/relay.js';
import { KubeClient, loadKubeconfig } from '../../k8s/client.js';
import type { Command, OptionValues } from '../command.js';

/** The agents' Observer API port, as Cilium's hubble-listen-address. */
const AGENT_PORT = 4244;

function str(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function list(values: OptionValues, name: string): string[] {
  const v = values[name];
  const all = Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
  return all.flatMap((x) => x.split(',')).filter((x) => x !== '');
}

function readPem(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--${flag} ${path}: ${(err as Error).message}`);
  }
}

function durationMs(values: OptionValues, name: string): number | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  const ns = parseDuration(v);
  if (ns === undefined || ns < 0)
    throw new UsageError(`--${name}: "${v}" is not a duration (e.g. 500ms, 5s)`);
  return ns / 1e6;
}

/** `host:port`, `[v6]:port` or `unix:///path`; a bare host gets the agents' port. */
function peerAddress(raw: string): string {
  if (raw.startsWith('unix:')) return raw;
  if (isIP(raw) === 6) return `[${raw}]:${AGENT_PORT}`;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d+))?$/.exec(raw);
  const port = m?.[2] === undefined ? AGENT_PORT : Number(m[2]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new UsageError(`--peer: "${raw}" is not host:port or unix:///path`);
  return `${m[1]}:${port}`;
}

/** `--peer [name=]address`: the name is what NodeStatus events and GetNodes report. */
export function parsePeer(raw: string): PeerInfo {
  const eq = raw.indexOf('=');
  const name = eq > 0 && !raw.slice(0, eq).includes(':') ? raw.slice(0, eq) : undefined;
  const address = peerAddress(name === undefined ? raw : raw.slice(eq + 1));
  return { name: name ?? address, address };
}

/** Every node's InternalIP at the agents' port, named as the node. */
async function nodePeers(kubeconfig: string): Promise<PeerInfo[]> {
  const nodes = await new KubeClient(loadKubeconfig(kubeconfig)).json<{
    items: { metadata: { name: string }; status?: { addresses?: { type: string; address: string }[] } }[];
  }>('GET', '/api/v1/nodes');
  return nodes.items.flatMap((n) => {
    const ip = n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
    return ip ? [{ name: n.metadata.name, address: peerAddress(ip) }] : [];
  });
}

/** The relay's options from its flags (peers not included); UsageErrors name the flag. */
export function relayOptions(values: OptionValues): Omit<RelayOptions, 'peers'> {
  const listen = str(values, 'listen-address') ?? ':4245';

  // The relay's own server: TLS when given a certificate, mutual when given client CAs.
  const serverCert = str(values, 'tls-relay-server-cert-file');
  const serverKey = str(values, 'tls-relay-server-key-file');
  const clientCas = list(values, 'tls-relay-client-ca-files');
  let tls: TlsOptions | undefined;
  if (values['disable-server-tls'] === true) {
    if (serverCert || serverKey || clientCas.length)
      throw new UsageError(
        '--disable-server-tls conflicts with --tls-relay-server-* and --tls-relay-client-ca-files',
      );
  } else if (serverCert || serverKey) {
    if (!serverCert || !serverKey)
      throw new UsageError('--tls-relay-server-cert-file and --tls-relay-server-key-file go together');
    tls = {
      cert: readPem('tls-relay-server-cert-file', serverCert),
      key: readPem('tls-relay-server-key-file', serverKey),
      ...(clientCas.length
        ? { ca: clientCas.map((f) => readPem('tls-relay-client-ca-files', f)).join('\n') }
        : {}),
    };
  } else if (clientCas.length) {
    throw new UsageError('--tls-relay-client-ca-files needs --tls-relay-server-cert-file and -key-file');
  }

  // To the agents: TLS when given their CA; the client certificate for mutual TLS.
  const clientCert = str(values, 'tls-hubble-client-cert-file') ?? str(values, 'tls-client-cert-file');
  const clientKey = str(values, 'tls-hubble-client-key-file') ?? str(values, 'tls-client-key-file');
  const serverCas = list(values, 'tls-hubble-server-ca-files');
  let peerTls: RelayOptions['peerTls'];
  if (values['disable-client-tls'] === true) {
    if (clientCert || clientKey || serverCas.length)
      throw new UsageError(
        '--disable-client-tls conflicts with --tls-hubble-client-* and --tls-hubble-server-ca-files',
      );
  } else if (serverCas.length) {
    if (!clientCert !== !clientKey)
      throw new UsageError('--tls-hubble-client-cert-file and --tls-hubble-client-key-file go together');
    const serverName = str(values, 'tls-hubble-server-name');
    peerTls = {
      ca: serverCas.map((f) => readPem('tls-hubble-server-ca-files', f)).join('\n'),
      ...(clientCert ? { cert: readPem('tls-hubble-client-cert-file', clientCert) } : {}),
      ...(clientKey ? { key: readPem('tls-hubble-client-key-file', clientKey) } : {}),
      ...(serverName ? { serverName } : {}),
    };
  } else if (clientCert || clientKey) {
    throw new UsageError(
      '--tls-hubble-client-cert-file needs --tls-hubble-server-ca-files to verify the agents',
    );
  }

  const sortLen = str(values, 'sort-buffer-len-max');
  if (sortLen !== undefined && (!/^\d+$/.test(sortLen) || Number(sortLen) < 1))
    throw new UsageError(`--sort-buffer-len-max: "${sortLen}" is not a positive number`);
  const dial = durationMs(values, 'dial-timeout');
  const retry = durationMs(values, 'retry-timeout');
  const drain = durationMs(values, 'sort-buffer-drain-timeout');
  return {
    listen: [listen],
    ...(tls ? { tls } : {}),
    ...(peerTls ? { peerTls } : {}),
    ...(dial !== undefined ? { dialTimeoutMs: dial } : {}),
    ...(retry !== undefined ? { retryMs: retry } : {}),
    ...(drain !== undefined ? { sortWindowMs: drain } : {}),
    ...(sortLen !== undefined ? { sortBufferLen: Number(sortLen) } : {}),
  };
}

const file = (description: string) => ({ type: 'string' as const, value: 'file', description });

export const relayCommands: Command[] = [
  {
    path: ['relay'],
    summary: "Run Hubble Relay: every agent's flows in one Observer API (like hubble-relay serve)",
    options: {
      'listen-address': {
        type: 'string',
        value: 'addr',
        description: 'where to serve the Observer API (default :4245; e.g. 127.0.0.1:4245, unix:///path)',
      },
      peer: {
        type: 'string',
        multiple: true,
        value: '[name=]host:port',
        description: "an agent's Observer API (repeatable; port 4244 when left out; unix:///path too)",
      },
      kubeconfig: {
        type: 'string',
        value: 'file',
        description: "find the agents as the cluster's nodes (InternalIP:4244)",
      },
      'dial-timeout': {
        type: 'string',
        value: 'duration',
        description: 'how long to wait for a peer (default 2s)',
      },
      'retry-timeout': {
        type: 'string',
        value: 'duration',
        description: 'pause before reconnecting a failed peer (default 1s)',
      },
      'sort-buffer-len-max': {
        type: 'string',
        value: 'n',
        description: 'follow mode: flows held to sort nodes in time order (default 100)',
      },
      'sort-buffer-drain-timeout': {
        type: 'string',
        value: 'duration',
        description: 'follow mode: longest a flow waits in the sort buffer (default 1s)',
      },
      'tls-relay-server-cert-file': file("the relay's server certificate (TLS when given)"),
      'tls-relay-server-key-file': file("the relay's server key"),
      'tls-relay-client-ca-files': {
        type: 'string',
        multiple: true,
        value: 'files',
        description: 'CAs of the clients the relay accepts (mutual TLS when given)',
      },
      'disable-server-tls': {
        type: 'boolean',
        description: 'serve plain text (the default without a certificate)',
      },
      'tls-hubble-server-ca-files': {
        type: 'string',
        multiple: true,
        value: 'files',
        description: "CAs that sign the agents' certificates (TLS to the agents when given)",
      },
      'tls-hubble-client-cert-file': file('client certificate for the agents (mutual TLS)'),
      'tls-hubble-client-key-file': file('client key for the agents'),
      'tls-client-cert-file': file('same as --tls-hubble-client-cert-file (older name)'),
      'tls-client-key-file': file('same as --tls-hubble-client-key-file (older name)'),
      'tls-hubble-server-name': {
        type: 'string',
        value: 'name',
        description: "name to check in the agents' certificates (default: the address)",
      },
      'disable-client-tls': {
        type: 'boolean',
        description: 'talk plain text to the agents (the default without CAs)',
      },
    },
    async run({ values, stdout, signal }) {
      const options = relayOptions(values);
      const peers = list(values, 'peer').map(parsePeer);
      const kubeconfig = str(values, 'kubeconfig');
      if (kubeconfig) peers.push(...(await nodePeers(kubeconfig)));
      if (peers.length === 0)
        throw new UsageError(
          'no peers: give --peer host:port (repeatable) or --kubeconfig to find the nodes',
        );
      const names = new Set<string>();
      for (const p of peers) {
        if (names.has(p.name)) throw new UsageError(`peer ${p.name} is given twice`);
        names.add(p.name);
      }
      const { startRelay } = await import('../../hubble/relay.js');
      const relay = await startRelay({ ...options, peers });
      stdout.write(
        `hypha relay: Observer API on ${relay.addresses.join(', ')}${options.tls ? ' (TLS)' : ''}, peers: ${peers
          .map((p) => (p.name === p.address ? p.address : `${p.name}=${p.address}`))
          .join(', ')}\n`,
      );
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        else signal.addEventListener('abort', () => resolve(), { once: true });
      });
      await relay.close();
      stdout.write('hypha relay: stopped\n');
      return 0;
    },
  },
];
