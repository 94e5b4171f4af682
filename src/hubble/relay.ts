/**
 * Hubble Relay for Hypha (DESIGN §2, Flows: :4245): one Observer API over every agent's.
 * GetFlows fans the request out to each peer and merges the answers by time: a bounded
 * request is gathered whole, sorted, and cut to `number` across all nodes; a followed
 * one is interleaved through a small sort buffer (Hubble's relay holds up to 100 events
 * for up to a second). Which nodes answered is told in NodeStatusEvents, as Hubble's relay
 * tells it: NODE_CONNECTED and NODE_UNAVAILABLE first, NODE_ERROR when a peer fails
 * mid-stream; a followed peer that fails is reconnected and reported connected again.
 * Backpressure: a slow client pauses the peer streams, so the agents' rings lap their
 * readers and LostEvents come through instead of the relay buffering without bound.
 */
import {
  type ClientReadableStream,
  connectivityState,
  credentials,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type requestCallback,
  Server,
  type ServerWritableStream,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import {
  compileFieldMask,
  type Empty,
  type GetFlowsRequestPB,
  type GetFlowsResponsePB,
  type GetNamespacesResponsePB,
  type GetNodesResponsePB,
  hyphaVersion,
  type NodePB,
  type NodeState,
  nsToTimestamp,
  type ObserverClient,
  observerClient,
  requestFromPB,
  type ServerStatusResponsePB,
  serviceDefinition,
  statusError,
  type TimestampPB,
} from './grpc/proto.js';
import {
  CallTracker,
  drained,
  healthService,
  listen,
  OBSERVER_SERVICE,
  type ObserverServer,
  PEER_SERVICE,
  type PeerInfo,
  peerService,
  rejected,
  shutdown,
  sortNamespaces,
  type TlsOptions,
} from './grpc/server.js';
import { toRingQuery } from './ring.js';

export interface RelayOptions {
  /** The agents' Observer APIs. */
  peers: readonly PeerInfo[];
  /** e.g. `127.0.0.1:4245`, `unix:///path/relay.sock`. */
  listen: readonly string[];
  /** For the relay's own TCP listeners. */
  tls?: TlsOptions;
  /**
   * For connecting to agents that serve TLS: `ca` verifies them (required), `cert` and
   * `key` are the relay's client certificate, `serverName` overrides the name checked.
   */
  peerTls?: Partial<TlsOptions> & { ca: string | Buffer; serverName?: string };
  version?: string;
  /** How long a peer may take to connect before it counts as unavailable. */
  dialTimeoutMs?: number;
  /** Follow mode: how long an event may wait for older ones from slower peers. */
  sortWindowMs?: number;
  /** Follow mode: at most this many events wait in the sort buffer. */
  sortBufferLen?: number;
  /** Follow mode: pause between attempts to reconnect a failed peer. */
  retryMs?: number;
}

interface Peer extends PeerInfo {
  client: ObserverClient;
}

type Call = ServerWritableStream<GetFlowsRequestPB, GetFlowsResponsePB>;

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

export async function startRelay(o: RelayOptions): Promise<ObserverServer> {
  const version = o.version ?? hyphaVersion();
  const dialTimeoutMs = o.dialTimeoutMs ?? 2000;
  const pt = o.peerTls;
  const creds = pt
    ? credentials.createSsl(
        Buffer.from(pt.ca),
        pt.key === undefined ? null : Buffer.from(pt.key),
        pt.cert === undefined ? null : Buffer.from(pt.cert),
      )
    : credentials.createInsecure();
  const peers: Peer[] = o.peers.map((p) => ({
    ...p,
    client: observerClient(p.address, creds, {
      // A restarted agent is found again within seconds, not grpc's default two minutes.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
      ...(pt?.serverName ? { 'grpc.ssl_target_name_override': pt.serverName } : {}),
    }),
  }));
  for (const p of peers) p.client.getChannel().getConnectivityState(true);
  const calls = new CallTracker();
  const ready = (p: Peer) => isReady(p, dialTimeoutMs);
  const merge = { ...o, ready };

  const statuses = () =>
    Promise.all(
      peers.map(async (p) => ({
        peer: p,
        status: await unary<ServerStatusResponsePB>((cb) =>
          p.client.ServerStatus({}, { deadline: Date.now() + dialTimeoutMs }, cb),
        ),
      })),
    );

  const observer = {
    GetFlows: ((call) => {
      void calls.run(call, async (signal) => {
        // Checked here so that a bad request fails once, not once per node.
        toRingQuery(requestFromPB(call.request));
        compileFieldMask(call.request.field_mask?.paths);
        if (call.request.follow) await follow(call, peers, merge, signal);
        else await gather(call, peers, merge, signal);
      });
    }) satisfies handleServerStreamingCall<GetFlowsRequestPB, GetFlowsResponsePB>,
    GetAgentEvents: ((call) => {
      call.emit('error', statusError(status.UNIMPLEMENTED, 'agent events are not available from Hypha'));
    }) satisfies handleServerStreamingCall<Empty, Empty>,
    GetDebugEvents: ((call) => {
      call.emit('error', statusError(status.UNIMPLEMENTED, 'debug events are not available from Hypha'));
    }) satisfies handleServerStreamingCall<Empty, Empty>,
    ServerStatus: ((call, callback) => {
      if (rejected(call.request, 'ServerStatusRequest', callback)) return;
      void statuses().then((all) => {
        const up = all.flatMap((a) => (a.status instanceof Error ? [] : [a.status]));
        const down = all.filter((a) => a.status instanceof Error).map((a) => a.peer.name);
        const sum = (k: 'num_flows' | 'max_flows' | 'seen_flows') =>
          String(up.reduce((n, s) => n + BigInt(s[k] ?? 0), 0n));
        callback(null, {
          num_flows: sum('num_flows'),
          max_flows: sum('max_flows'),
          seen_flows: sum('seen_flows'),
          uptime_ns: String(
            up.reduce((m, s) => (BigInt(s.uptime_ns ?? 0) > m ? BigInt(s.uptime_ns ?? 0) : m), 0n),
          ),
          num_connected_nodes: { value: up.length },
          num_unavailable_nodes: { value: down.length },
          unavailable_nodes: down,
          version,
          flows_rate: up.reduce((n, s) => n + (s.flows_rate ?? 0), 0),
        });
      });
    }) satisfies handleUnaryCall<Empty, ServerStatusResponsePB>,
    GetNodes: ((call, callback) => {
      if (rejected(call.request, 'GetNodesRequest', callback)) return;
      void statuses().then((all) => {
        const nodes = all.map(({ peer, status: s }): NodePB => {
          const tls = pt ? { enabled: true, ...(pt.serverName ? { server_name: pt.serverName } : {}) } : {};
          const base = { name: peer.name, address: peer.address, tls };
          if (s instanceof Error) return { ...base, state: 'NODE_UNAVAILABLE' };
          return {
            ...base,
            ...(s.version ? { version: s.version } : {}),
            state: 'NODE_CONNECTED',
            uptime_ns: s.uptime_ns ?? '0',
            num_flows: s.num_flows ?? '0',
            max_flows: s.max_flows ?? '0',
            seen_flows: s.seen_flows ?? '0',
          };
        });
        callback(null, { nodes });
      });
    }) satisfies handleUnaryCall<Empty, GetNodesResponsePB>,
    GetNamespaces: ((call, callback) => {
      if (rejected(call.request, 'GetNamespacesRequest', callback)) return;
      void Promise.all(
        peers.map((p) =>
          unary<GetNamespacesResponsePB>((cb) =>
            p.client.GetNamespaces({}, { deadline: Date.now() + dialTimeoutMs }, cb),
          ),
        ),
      ).then((all) => {
        const list = all.flatMap((r) => (r instanceof Error ? [] : (r.namespaces ?? [])));
        callback(null, {
          namespaces: sortNamespaces(
            list.map((n) => ({ cluster: n.cluster ?? '', namespace: n.namespace ?? '' })),
          ),
        });
      });
    }) satisfies handleUnaryCall<Empty, GetNamespacesResponsePB>,
  };

  const server = new Server();
  server.addService(serviceDefinition(OBSERVER_SERVICE), observer);
  server.addService(
    serviceDefinition(PEER_SERVICE),
    peerService(() => o.peers.map((p) => ({ name: p.name, address: p.address })), calls),
  );
  server.addService(
    serviceDefinition('grpc.health.v1.Health'),
    healthService([OBSERVER_SERVICE, PEER_SERVICE], calls),
  );
  let addresses: string[];
  try {
    addresses = await listen(server, o.listen, o.tls);
  } catch (err) {
    for (const p of peers) p.client.close();
    throw err;
  }
  return {
    addresses,
    close: async () => {
      await shutdown(server, calls, addresses);
      for (const p of peers) p.client.close();
    },
  };
}

// ---------------------------------------------------------------- GetFlows

interface MergeOptions extends RelayOptions {
  ready(p: Peer): Promise<boolean>;
}

function nodeStatus(state: NodeState, names: string[], message?: string): GetFlowsResponsePB {
  return {
    node_status: { state_change: state, node_names: names, ...(message ? { message } : {}) },
    time: nsToTimestamp(nowNs()),
  };
}

/** Connects to every peer that can be reached in time; tells the client which could not. */
async function connect(
  call: Call,
  peers: readonly Peer[],
  o: MergeOptions,
  signal: AbortSignal,
): Promise<Peer[]> {
  const up = await Promise.all(peers.map((p) => o.ready(p)));
  const connected = peers.filter((_, i) => up[i]);
  const unavailable = peers.filter((_, i) => !up[i]).map((p) => p.name);
  if (connected.length > 0)
    await send(
      call,
      nodeStatus(
        'NODE_CONNECTED',
        connected.map((p) => p.name),
      ),
      signal,
    );
  if (unavailable.length > 0) await send(call, nodeStatus('NODE_UNAVAILABLE', unavailable), signal);
  return connected;
}

/** A bounded request: every node's answer, sorted by time, cut to `number` across all. */
async function gather(
  call: Call,
  peers: readonly Peer[],
  o: MergeOptions,
  signal: AbortSignal,
): Promise<void> {
  const connected = await connect(call, peers, o, signal);
  const answers = await Promise.all(connected.map((p) => collect(p, call.request, signal)));
  if (signal.aborted) return;
  const events: GetFlowsResponsePB[] = [];
  for (const [i, a] of answers.entries()) {
    events.push(...a.events);
    if (a.error) await send(call, nodeStatus('NODE_ERROR', [connected[i]!.name], a.error.details), signal);
  }
  const sorted = events
    .map((e, seq) => ({ e, seq, ns: timeNs(e.time) }))
    .sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : a.seq - b.seq))
    .map((x) => x.e);
  for (const e of cut(sorted, Number(call.request.number ?? 0), call.request.first ?? false)) {
    if (signal.aborted) return;
    await send(call, e, signal);
  }
}

/** The first or last `number` flows, with the other events among them; all when 0. */
function cut(sorted: GetFlowsResponsePB[], number: number, first: boolean): GetFlowsResponsePB[] {
  if (number <= 0) return sorted;
  let seen = 0;
  if (first) {
    for (let i = 0; i < sorted.length; i++)
      if (sorted[i]!.flow && ++seen === number) return sorted.slice(0, i + 1);
    return sorted;
  }
  for (let i = sorted.length - 1; i >= 0; i--)
    if (sorted[i]!.flow && ++seen === number) return sorted.slice(i);
  return sorted;
}

function collect(
  p: Peer,
  req: GetFlowsRequestPB,
  signal: AbortSignal,
): Promise<{ events: GetFlowsResponsePB[]; error?: ServiceError }> {
  return new Promise((resolve) => {
    const events: GetFlowsResponsePB[] = [];
    const stream = p.client.GetFlows(req);
    const cancel = () => stream.cancel();
    signal.addEventListener('abort', cancel, { once: true });
    const done = (error?: ServiceError) => {
      signal.removeEventListener('abort', cancel);
      resolve(error ? { events, error } : { events });
    };
    stream.on('data', (e: GetFlowsResponsePB) => events.push(withNode(e, p)));
    stream.on('error', (err: ServiceError) => done(err));
    stream.on('end', () => done());
  });
}

/**
 * A followed request: events from every node as they come, through a sort buffer that
 * holds each at most `sortWindowMs` (or until `sortBufferLen` are waiting) so that
 * nodes' streams interleave in time order.
 */
async function follow(
  call: Call,
  peers: readonly Peer[],
  o: MergeOptions,
  signal: AbortSignal,
): Promise<void> {
  const windowMs = o.sortWindowMs ?? 1000;
  const maxLen = o.sortBufferLen ?? 100;
  const retryMs = o.retryMs ?? 1000;
  const bounded = call.request.until !== undefined;
  const streams = new Map<string, ClientReadableStream<GetFlowsResponsePB>>();
  const buffer: { e: GetFlowsResponsePB; ns: bigint; arrived: number }[] = [];
  let paused = false;
  let ended = 0;
  let finish!: () => void;
  const finished = new Promise<void>((r) => {
    finish = r;
  });
  signal.addEventListener('abort', () => finish(), { once: true });

  const write = (e: GetFlowsResponsePB) => {
    if (signal.aborted) return;
    if (call.write(e) || paused) return;
    paused = true;
    for (const s of streams.values()) s.pause();
    void drained(call, signal).then(() => {
      paused = false;
      for (const s of streams.values()) s.resume();
      flush();
    });
  };

  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const now = Date.now();
    while (!paused && buffer.length > 0 && (buffer.length > maxLen || buffer[0]!.arrived + windowMs <= now))
      write(buffer.shift()!.e);
    // While paused, the drain handler flushes.
    if (buffer.length > 0 && !paused && !signal.aborted)
      timer = setTimeout(flush, Math.max(1, buffer[0]!.arrived + windowMs - now));
  };

  const push = (e: GetFlowsResponsePB) => {
    const ns = timeNs(e.time);
    let i = buffer.length;
    while (i > 0 && buffer[i - 1]!.ns > ns) i--;
    buffer.splice(i, 0, { e, ns, arrived: Date.now() });
    flush();
  };

  const open = (p: Peer, req: GetFlowsRequestPB) => {
    const stream = p.client.GetFlows(req);
    streams.set(p.name, stream);
    if (paused) stream.pause();
    stream.on('data', (e: GetFlowsResponsePB) => push(withNode(e, p)));
    const over = (err?: ServiceError) => {
      if (streams.get(p.name) !== stream) return;
      streams.delete(p.name);
      if (signal.aborted) return;
      if (!err && bounded) {
        if (++ended === peers.length) finish();
        return;
      }
      write(nodeStatus('NODE_ERROR', [p.name], err ? err.details : 'the node ended the stream'));
      // A node that refuses the request would refuse it again.
      if (err && (err.code === status.INVALID_ARGUMENT || err.code === status.UNIMPLEMENTED)) return;
      void reconnect(p);
    };
    stream.on('error', (err: ServiceError) => over(err));
    stream.on('end', () => over());
  };

  // After a failure only new flows are wanted: the backlog was sent already.
  const { number: _n, first: _f, since: _s, ...rest } = call.request;
  const resumed: GetFlowsRequestPB = rest;
  const reconnect = async (p: Peer) => {
    while (!signal.aborted) {
      await sleep(retryMs, signal);
      if (signal.aborted) return;
      if (await o.ready(p)) {
        write(nodeStatus('NODE_CONNECTED', [p.name]));
        open(p, resumed);
        return;
      }
    }
  };

  const connected = await connect(call, peers, o, signal);
  for (const p of connected) open(p, call.request);
  for (const p of peers) if (!connected.includes(p)) void reconnect(p);
  if (bounded) ended += peers.length - connected.length;
  if (bounded && ended === peers.length) finish();

  await finished;
  clearTimeout(timer);
  for (const s of streams.values()) s.cancel();
  streams.clear();
  if (!signal.aborted) for (const b of buffer.splice(0)) await send(call, b.e, signal);
}

// ---------------------------------------------------------------- helpers

/** Writes one response, waiting while the client's window is full. */
async function send(call: Call, e: GetFlowsResponsePB, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  if (!call.write(e)) await drained(call, signal);
}

/** Agents name their node on flows; a lost-event notice may lack it. */
function withNode(e: GetFlowsResponsePB, p: Peer): GetFlowsResponsePB {
  return e.node_name ? e : { ...e, node_name: p.name };
}

function timeNs(t: TimestampPB | undefined): bigint {
  if (!t) return 0n;
  try {
    return BigInt(t.seconds ?? 0) * 1_000_000_000n + BigInt(t.nanos ?? 0);
  } catch {
    return 0n;
  }
}

/**
 * Whether the peer's channel is ready, or becomes ready within `ms`. A channel that just
 * failed to connect counts as unavailable at once; asking starts the next attempt.
 */
function isReady(p: Peer, ms: number): Promise<boolean> {
  const channel = p.client.getChannel();
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const check = () => {
      const state = channel.getConnectivityState(true);
      if (state === connectivityState.READY) return resolve(true);
      if (state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN)
        return resolve(false);
      channel.watchConnectivityState(state, deadline, (err) => (err ? resolve(false) : check()));
    };
    check();
  });
}

/** A unary call's answer, or its error (grpc-js gives one or the other). */
function unary<T>(start: (cb: requestCallback<T>) => void): Promise<T | ServiceError> {
  return new Promise((resolve) => start((err, res) => resolve(err ?? res!)));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
