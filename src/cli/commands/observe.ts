/**
 * `hypha observe`: `hubble observe` against Hypha, with its flags and output formats.
 * It asks each agent for flows (all of the lab's nodes by default, merged in time order,
 * as the relay does; one agent with --socket or HYPHA_AGENT_SOCKET).
 */
import { defaultSocket, streamAgent } from '../../agent/client.js';
import { UsageError } from '../../errors.js';
import {
  FlowPrinter,
  formatTimestamp,
  type GetFlowsRequest,
  type GetFlowsResponse,
  parseObserveArgs,
} from '../../hubble/index.js';
import type { Command } from '../command.js';
import { runningLab } from './lab.js';

function flowsFrom(
  socket: string,
  body: object,
  onResponse: (r: GetFlowsResponse) => void,
  signal: AbortSignal,
): Promise<void> {
  return streamAgent(
    socket,
    'POST',
    '/v1/flows',
    body,
    (line) => {
      const o = JSON.parse(line) as GetFlowsResponse & { error?: string };
      if (o.error) throw new UsageError(o.error);
      onResponse(o);
    },
    signal,
  );
}

/** Flows from an Observer API over gRPC (a relay or an agent's :4244), as `hubble --server` asks them. */
async function flowsOverGrpc(
  address: string,
  req: GetFlowsRequest,
  onResponse: (r: GetFlowsResponse) => void,
  signal: AbortSignal,
): Promise<void> {
  const { eventFromPB, observerClient, requestToPB, timestampNs } = await import(
    '../../hubble/grpc/index.js'
  );
  const client = observerClient(address);
  try {
    await new Promise<void>((resolve, reject) => {
      const call = client.GetFlows(requestToPB(req), { deadline: Infinity });
      const onAbort = () => call.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      call.on('data', (pb) => {
        const e = eventFromPB(pb);
        const ns = timestampNs(pb.time);
        const meta = {
          ...(pb.node_name ? { node_name: pb.node_name } : {}),
          ...(ns !== undefined ? { time: formatTimestamp(ns) } : {}),
        };
        if (e?.kind === 'flow') onResponse({ flow: e.flow, ...meta });
        else if (e?.kind === 'lost') onResponse({ lost_events: e.lost, ...meta });
      });
      call.on('end', resolve);
      call.on('error', (err: Error & { code?: number; details?: string }) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) resolve();
        else reject(new UsageError(`${address}: ${err.details || err.message}`));
      });
    });
  } finally {
    client.close();
  }
}

const timeOf = (r: GetFlowsResponse) => r.time ?? '';

export const observeCommands: Command[] = [
  {
    path: ['observe'],
    summary:
      "Observe flows, with hubble observe's flags (--follow, --last, --namespace, --pod, --verdict, -o json, ...)",
    rawArgs: true,
    async run({ positionals, stdout, signal }) {
      const args = parseObserveArgs(positionals);
      const { printer: printOpts, server, printRawFilters, ...req } = args;
      if (printRawFilters) {
        stdout.write(`${JSON.stringify({ whitelist: req.whitelist, blacklist: req.blacklist }, null, 2)}\n`);
        return 0;
      }
      const sockets = server?.startsWith('unix://')
        ? [server.slice('unix://'.length)]
        : process.env.HYPHA_AGENT_SOCKET
          ? [process.env.HYPHA_AGENT_SOCKET]
          : (runningLab('cilium-demo')?.nodes.map((n) => n.agentSocket) ?? [defaultSocket()]);
      const printer = new FlowPrinter(printOpts);
      const grpcServer = server && !server.startsWith('unix://') ? server : process.env.HUBBLE_SERVER;
      if (grpcServer && !server?.startsWith('unix://')) {
        // The relay (or an agent's :4244) merges and limits; print what it sends, as hubble does.
        await flowsOverGrpc(grpcServer, req, (r) => stdout.write(printer.write(r)), signal);
        stdout.write(printer.flush());
        return 0;
      }
      if (!req.follow) {
        // Each agent gives its last (or first) N; the merge keeps N overall, in time order.
        const all: GetFlowsResponse[] = [];
        await Promise.all(sockets.map((s) => flowsFrom(s, req, (r) => all.push(r), signal)));
        all.sort((a, b) => timeOf(a).localeCompare(timeOf(b)));
        const n = req.number;
        const picked = n > 0 ? (req.first ? all.slice(0, n) : all.slice(-n)) : all;
        for (const r of picked) stdout.write(printer.write(r));
        stdout.write(printer.flush());
        return 0;
      }
      await Promise.all(sockets.map((s) => flowsFrom(s, req, (r) => stdout.write(printer.write(r)), signal)));
      stdout.write(printer.flush());
      return 0;
    },
  },
];
