/**
 * Hubble's Observer API over gRPC for one agent's flow ring (DESIGN §2, Flows: :4244 per
 * agent), so that the upstream `hubble` CLI and UI work against Hypha. GetFlows streams
 * what `FlowRing.read` selects; the ring never waits for a reader, so a slow client costs
 * no memory: the stream waits for the client's window, the ring laps the reader, and the
 * reader is told how many it missed (a LostEvent from HUBBLE_RING_BUFFER).
 */
import { lstatSync, unlinkSync } from 'node:fs';
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  status,
} from '@grpc/grpc-js';
import type { Endpoint } from '../flow.js';
import { type FlowRing, toResponse, toRingQuery } from '../ring.js';
import {
  type ChangeNotificationPB,
  compileFieldMask,
  type Empty,
  type GetFlowsRequestPB,
  type GetFlowsResponsePB,
  type GetNamespacesResponsePB,
  type GetNodesResponsePB,
  hyphaVersion,
  type NamespacePB,
  requestFromPB,
  requestProblem,
  type ServerStatusResponsePB,
  type StatusError,
  serviceDefinition,
  statusError,
  toPB,
  toStatusError,
} from './proto.js';

/** PEM contents. With `ca`, clients must present a certificate it signed (mutual TLS). */
export interface TlsOptions {
  cert: string | Buffer;
  key: string | Buffer;
  ca?: string | Buffer;
}

export interface PeerInfo {
  name: string;
  /** Its Observer API: `host:port` or `unix:///path`. */
  address: string;
}

export interface ObserverServerOptions {
  ring: FlowRing;
  nodeName: string;
  /** `unix:///path/hubble.sock`, `10.240.0.2:4244`, `:4244` (all addresses); port 0 picks one. */
  listen: readonly string[];
  /** For TCP listeners; unix sockets are guarded by their file's permissions instead. */
  tls?: TlsOptions;
  /** For GetNamespaces; without it, the namespaces of the last hour's flows in the ring. */
  namespaces?: () => { cluster: string; namespace: string }[];
  /** The other nodes serving the Observer API, for the Peer service. */
  peers?: () => PeerInfo[];
  /** Reported by ServerStatus and GetNodes. */
  version?: string;
}

export interface ObserverServer {
  /** What was bound, with the ports chosen for port 0. */
  readonly addresses: readonly string[];
  /** Ends every open call with UNAVAILABLE, stops listening, removes unix sockets. */
  close(): Promise<void>;
}

export const OBSERVER_SERVICE = 'observer.Observer';
export const PEER_SERVICE = 'peer.Peer';

const NS_PER_MS = 1_000_000n;
const nowNs = () => BigInt(Date.now()) * NS_PER_MS;

export async function startObserverServer(o: ObserverServerOptions): Promise<ObserverServer> {
  const started = nowNs();
  const version = o.version ?? hyphaVersion();
  const calls = new CallTracker();

  const serverStatus = (): ServerStatusResponsePB => {
    const s = o.ring.stats;
    return {
      num_flows: String(s.numFlows),
      max_flows: String(s.maxFlows),
      seen_flows: String(s.seenFlows),
      uptime_ns: String(nowNs() - started),
      version,
      flows_rate: flowsRate(o.ring),
    };
  };

  const getFlows: handleServerStreamingCall<GetFlowsRequestPB, GetFlowsResponsePB> = (call) => {
    void calls.run(call, async (signal) => {
      const req = requestFromPB(call.request);
      const query = toRingQuery(req, signal);
      const mask = compileFieldMask(call.request.field_mask?.paths);
      for await (const e of o.ring.read(query)) {
        const r = toResponse(e, o.nodeName);
        const out = mask && 'flow' in r ? { ...r, flow: mask(r.flow) } : r;
        if (!call.write(toPB('GetFlowsResponse', out))) await drained(call, signal);
        if (signal.aborted) return;
      }
    });
  };

  const unimplemented =
    (what: string): handleServerStreamingCall<Empty, Empty> =>
    (call) => {
      call.emit('error', statusError(status.UNIMPLEMENTED, `${what} are not available from Hypha`));
    };

  const observer = {
    GetFlows: getFlows,
    GetAgentEvents: unimplemented('agent events'),
    GetDebugEvents: unimplemented('debug events'),
    GetNodes: ((call, callback) => {
      if (rejected(call.request, 'GetNodesRequest', callback)) return;
      const s = serverStatus();
      callback(null, {
        nodes: [
          {
            name: o.nodeName,
            version,
            address: o.listen.find((a) => !a.startsWith('unix:')) ?? o.listen[0] ?? '',
            state: 'NODE_CONNECTED',
            tls: { enabled: o.tls !== undefined },
            uptime_ns: s.uptime_ns,
            num_flows: s.num_flows,
            max_flows: s.max_flows,
            seen_flows: s.seen_flows,
          },
        ],
      });
    }) satisfies handleUnaryCall<Empty, GetNodesResponsePB>,
    GetNamespaces: ((call, callback) => {
      if (rejected(call.request, 'GetNamespacesRequest', callback)) return;
      const list = o.namespaces ? o.namespaces() : recentNamespaces(o.ring);
      callback(null, { namespaces: sortNamespaces(list) });
    }) satisfies handleUnaryCall<Empty, GetNamespacesResponsePB>,
    ServerStatus: ((call, callback) => {
      if (rejected(call.request, 'ServerStatusRequest', callback)) return;
      callback(null, serverStatus());
    }) satisfies handleUnaryCall<Empty, ServerStatusResponsePB>,
  };

  const server = new Server();
  server.addService(serviceDefinition(OBSERVER_SERVICE), observer);
  const served = [OBSERVER_SERVICE];
  if (o.peers) {
    server.addService(serviceDefinition(PEER_SERVICE), peerService(o.peers, calls));
    served.push(PEER_SERVICE);
  }
  server.addService(serviceDefinition('grpc.health.v1.Health'), healthService(served, calls));
  const addresses = await listen(server, o.listen, o.tls);
  return { addresses, close: () => shutdown(server, calls, addresses) };
}

// ---------------------------------------------------------------- shared with the relay

/** Answers INVALID_ARGUMENT when a unary request was not decodable as sent; true if it did. */
export function rejected(req: object, message: string, callback: (err: StatusError) => void): boolean {
  const p = requestProblem(req);
  if (!p) return false;
  callback(statusError(status.INVALID_ARGUMENT, `${message}: ${p.field || '(message)'}: ${p.reason}`));
  return true;
}

/**
 * The open streaming calls of a server: each runs with an AbortSignal that fires when the
 * client cancels or the server closes; an error ends the call with its status.
 */
export class CallTracker {
  readonly #open = new Map<ServerWritableStream<unknown, unknown>, AbortController>();

  async run<Req, Res>(
    call: ServerWritableStream<Req, Res>,
    body: (signal: AbortSignal) => Promise<void>,
  ): Promise<void> {
    const ac = new AbortController();
    const key = call as ServerWritableStream<unknown, unknown>;
    this.#open.set(key, ac);
    const cancel = () => ac.abort();
    call.on('cancelled', cancel);
    try {
      await body(ac.signal);
      if (!ac.signal.aborted) call.end();
    } catch (err) {
      if (!ac.signal.aborted) call.emit('error', toStatusError(err));
    } finally {
      call.off('cancelled', cancel);
      ac.abort();
      this.#open.delete(key);
    }
  }

  /** Ends every open call with `err`. */
  endAll(err: StatusError): void {
    for (const [call, ac] of this.#open) {
      if (ac.signal.aborted) continue;
      ac.abort();
      call.emit('error', err);
    }
  }
}

/** Resolves once the call can take more, or it is over. */
export function drained(call: ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done);
      call.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    call.on('drain', done);
    call.on('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Binds every address; on a failure, unbinds what was bound and throws. */
export async function listen(
  server: Server,
  addresses: readonly string[],
  tls: TlsOptions | undefined,
): Promise<string[]> {
  const bound: string[] = [];
  try {
    for (const raw of addresses) {
      const unix = raw.startsWith('unix:');
      const address = raw.startsWith(':') ? `0.0.0.0${raw}` : raw;
      if (unix) removeStaleSocket(socketPath(address));
      const creds =
        tls && !unix
          ? ServerCredentials.createSsl(
              tls.ca === undefined ? null : Buffer.from(tls.ca),
              [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }],
              tls.ca !== undefined,
            )
          : ServerCredentials.createInsecure();
      const port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(address, creds, (err, p) => (err ? reject(err) : resolve(p)));
      });
      bound.push(unix ? address : address.replace(/:0$/, `:${port}`));
    }
  } catch (err) {
    server.forceShutdown();
    for (const a of bound) if (a.startsWith('unix:')) removeStaleSocket(socketPath(a));
    throw new Error(`observer API: cannot listen on ${addresses.join(', ')}`, { cause: err });
  }
  return bound;
}

export async function shutdown(
  server: Server,
  calls: CallTracker,
  addresses: readonly string[],
): Promise<void> {
  calls.endAll(statusError(status.UNAVAILABLE, 'observer server shutting down'));
  await new Promise<void>((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 1000);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
  for (const a of addresses) if (a.startsWith('unix:')) removeStaleSocket(socketPath(a));
}

/** grpc.health.v1.Health for the given services ('' is the server as a whole). */
export function healthService(served: readonly string[], calls: CallTracker) {
  type Req = { service?: string };
  type Res = { status?: 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN' };
  const known = (s: string | undefined) => !s || served.includes(s);
  return {
    Check: ((call, callback) => {
      if (!known(call.request.service))
        callback(statusError(status.NOT_FOUND, `unknown service ${call.request.service}`));
      else callback(null, { status: 'SERVING' });
    }) satisfies handleUnaryCall<Req, Res>,
    Watch: ((call) => {
      void calls.run(call, async (signal) => {
        call.write({ status: known(call.request.service) ? 'SERVING' : 'SERVICE_UNKNOWN' });
        await aborted(signal);
      });
    }) satisfies handleServerStreamingCall<Req, Res>,
  };
}

/** peer.Peer: the current peers as PEER_ADDED, then changes, checked every few seconds. */
export function peerService(peers: () => PeerInfo[], calls: CallTracker, pollMs = 5000) {
  const Notify: handleServerStreamingCall<Empty, ChangeNotificationPB> = (call) => {
    void calls.run(call, async (signal) => {
      let known = new Map<string, string>();
      while (!signal.aborted) {
        const now = new Map(peers().map((p) => [p.name, p.address]));
        for (const [name, address] of now) {
          const was = known.get(name);
          if (was === undefined) call.write({ name, address, type: 'PEER_ADDED' });
          else if (was !== address) call.write({ name, address, type: 'PEER_UPDATED' });
        }
        for (const [name, address] of known)
          if (!now.has(name)) call.write({ name, address, type: 'PEER_DELETED' });
        known = now;
        await aborted(signal, pollMs);
      }
    });
  };
  return { Notify };
}

/** Resolves when the signal aborts, or after `ms` if given. */
export function aborted(signal: AbortSignal, ms?: number): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = ms === undefined ? undefined : setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

export function sortNamespaces(list: readonly { cluster: string; namespace: string }[]): NamespacePB[] {
  const seen = new Map<string, NamespacePB>();
  for (const n of list) if (n.namespace) seen.set(`${n.cluster}/${n.namespace}`, n);
  return [...seen.values()].sort(
    (a, b) =>
      (a.cluster ?? '').localeCompare(b.cluster ?? '') ||
      (a.namespace ?? '').localeCompare(b.namespace ?? ''),
  );
}

// ---------------------------------------------------------------- ring summaries

const MINUTE_NS = 60_000_000_000n;
const HOUR_NS = 60n * MINUTE_NS;

/** Flows per second over the last minute, as Hubble reports it. */
function flowsRate(ring: FlowRing): number {
  const since = nowNs() - MINUTE_NS;
  let n = 0;
  for (let i = ring.nextIndex - 1; i >= ring.oldestIndex; i--) {
    const e = ring.at(i);
    if (!e || e.ns < since) break;
    if ('flow' in e.event) n++;
  }
  return n / 60;
}

/** Namespaces of the endpoints in the last hour's flows, as Hubble's agent tracks them. */
function recentNamespaces(ring: FlowRing): { cluster: string; namespace: string }[] {
  const since = nowNs() - HOUR_NS;
  const out: { cluster: string; namespace: string }[] = [];
  const add = (ep: Endpoint | undefined) => {
    if (ep?.namespace) out.push({ cluster: ep.cluster_name ?? '', namespace: ep.namespace });
  };
  for (let i = ring.nextIndex - 1; i >= ring.oldestIndex; i--) {
    const e = ring.at(i);
    if (!e || e.ns < since) break;
    if ('flow' in e.event) {
      add(e.event.flow.source);
      add(e.event.flow.destination);
    }
  }
  return out;
}

// ---------------------------------------------------------------- unix sockets

function socketPath(address: string): string {
  // unix:///abs/path or unix:relative/path
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address.slice('unix:'.length);
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // absent: nothing to remove
  }
}
