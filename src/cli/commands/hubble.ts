/**
 * The `hubble` CLI's own commands, against Hypha's relay: `hubble status`, `hubble list
 * nodes`, `hubble observe` (the same as `hypha observe`) and `cilium hubble port-forward`.
 * The server is --server, else HUBBLE_SERVER, else the running lab's relay, else
 * 127.0.0.1:4245 (hubble's default, where a port-forward puts the relay).
 */
import type { ServiceError } from '@grpc/grpc-js';
import { UsageError } from '../../errors.js';
import type { GetNodesResponsePB, ObserverClient, ServerStatusResponsePB } from '../../hubble/grpc/index.js';
import { type Command, formatTable } from '../command.js';
import { runningLab } from './lab.js';
import { observeCommands } from './observe.js';

const SERVER = {
  type: 'string',
  value: 'address',
  description: 'Hubble Relay or agent address (default: HUBBLE_SERVER, the lab relay, or 127.0.0.1:4245)',
} as const;
const LAB = { type: 'string', value: 'name', description: 'lab name (default cilium-demo)' } as const;
const TIMEOUT_MS = 5_000;

function serverOf(values: Record<string, unknown>): string {
  const given = (values.server as string | undefined) ?? process.env.HUBBLE_SERVER;
  if (given) return given.replace(/^(grpc|tcp):\/\//, '');
  return runningLab((values.lab as string | undefined) ?? 'cilium-demo')?.relay ?? '127.0.0.1:4245';
}

async function withClient<T>(address: string, fn: (c: ObserverClient) => Promise<T>): Promise<T> {
  const { observerClient } = await import('../../hubble/grpc/index.js');
  const client = observerClient(address);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

function unary<T>(
  address: string,
  call: (c: ObserverClient, cb: (err: ServiceError | null, res?: T) => void) => void,
): Promise<T> {
  return withClient(
    address,
    (c) =>
      new Promise<T>((resolve, reject) =>
        call(c, (err, res) =>
          err
            ? reject(new Error(`${address}: ${err.details || err.message}`))
            : res
              ? resolve(res)
              : reject(new Error(`${address}: empty answer`)),
        ),
      ),
  );
}

const deadline = () => ({ deadline: Date.now() + TIMEOUT_MS });
const thousands = (n: number) => n.toLocaleString('en-US');

export const hubbleCommands: Command[] = [
  {
    path: ['hubble', 'status'],
    summary: "The relay's health, flow counts and connected nodes (like hubble status)",
    options: { server: SERVER, lab: LAB },
    async run({ values, stdout }) {
      const address = serverOf(values);
      const st = await unary<ServerStatusResponsePB>(address, (c, cb) => c.ServerStatus({}, deadline(), cb));
      const num = Number(st.num_flows ?? 0);
      const max = Number(st.max_flows ?? 0);
      const connected = st.num_connected_nodes?.value;
      const unavailable = st.num_unavailable_nodes?.value ?? 0;
      const lines = [
        `Healthcheck (via ${address}): Ok`,
        `Current/Max Flows: ${thousands(num)}/${thousands(max)}${max ? ` (${((100 * num) / max).toFixed(2)}%)` : ''}`,
        `Flows/s: ${(st.flows_rate ?? 0).toFixed(2)}`,
      ];
      if (connected !== undefined) lines.push(`Connected Nodes: ${connected}/${connected + unavailable}`);
      if (st.unavailable_nodes?.length) lines.push(`Unavailable Nodes: ${st.unavailable_nodes.join(', ')}`);
      stdout.write(`${lines.join('\n')}\n`);
      return unavailable ? 1 : 0;
    },
  },
  {
    path: ['hubble', 'list', 'nodes'],
    summary: 'The nodes behind the relay, their state and flows (like hubble list nodes)',
    options: { server: SERVER, lab: LAB },
    async run({ values, stdout }) {
      const address = serverOf(values);
      const res = await unary<GetNodesResponsePB>(address, (c, cb) => c.GetNodes({}, deadline(), cb));
      const rows = (res.nodes ?? []).map((n) => {
        const up = Number(n.uptime_ns ?? 0) / 1e9;
        return [
          n.name ?? '',
          n.state === 'NODE_CONNECTED'
            ? 'Connected'
            : (n.state ?? 'UNKNOWN_NODE_STATE').replace(/^NODE_/, ''),
          up ? `${Math.floor(up)}s` : '-',
          up ? (Number(n.seen_flows ?? 0) / up).toFixed(2) : '-',
          `${thousands(Number(n.num_flows ?? 0))}/${thousands(Number(n.max_flows ?? 0))}`,
        ];
      });
      stdout.write(formatTable(['NAME', 'STATUS', 'AGE', 'FLOWS/S', 'CURRENT/MAX-FLOWS'], rows));
      return 0;
    },
  },
  {
    ...observeCommands[0]!,
    path: ['hubble', 'observe'],
    summary: 'The same as hypha observe (hubble observe)',
  },
  {
    path: ['hubble', 'port-forward'],
    summary:
      'Make the relay reachable on 127.0.0.1:4245, as cilium hubble port-forward (the lab serves it there already)',
    options: { lab: LAB },
    async run({ values, stdout, signal }) {
      const name = (values.lab as string | undefined) ?? 'cilium-demo';
      const lab = runningLab(name);
      if (!lab)
        throw new UsageError(
          `no lab "${name}" is running; on a cluster, forward the relay with: kubectl port-forward -n kube-system svc/hubble-relay 4245:80`,
        );
      if (!lab.relay) throw new UsageError(`lab "${name}" has no relay running (see its log)`);
      // Nothing to forward: the lab's relay listens on the host. Check it answers, then stay
      // in the foreground as the port-forward would (the tutorial runs it with &).
      await unary(lab.relay, (c, cb) => c.ServerStatus({}, deadline(), cb));
      stdout.write(
        `Hubble Relay is reachable at ${lab.relay} (served by lab ${name}; no forwarding needed)\n`,
      );
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
      return 0;
    },
  },
];
