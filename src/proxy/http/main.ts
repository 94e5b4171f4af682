/**
 * The HTTP proxy as the agent runs it: a child process (`hypha proxy http`) with an IPC
 * channel, so that its crash never takes the agent down (src/agent/supervisor.ts restarts
 * it). Two transparent listeners on 127.0.0.1, one per direction: the datapath sends a
 * connection to the port its policy entry names, so the listener tells which endpoint's
 * policy applies (egress: the client's, ingress: the server's). The agent runs several of
 * these processes (workers) on the same ports, SO_REUSEPORT: the kernel spreads the
 * connections over them, and each has everything it needs to serve any connection.
 *
 * A connection's peer identity is the one the datapath decided with: its conntrack entry
 * (pinned hypha_ct4) holds both identities; the ipcache answers when the entry is gone.
 * The agent pushes the redirect entries of its endpoints (rules.ts); the proxy listens
 * only once the first full set is in, so no request is judged against nothing.
 *
 * Protocol: proxy -> agent `{type:'hello'}`, `{type:'ready'}` (serving), L7EventsMessage
 * (batched, packed: events.ts); agent -> proxy `EndpointsMessage`. The proxy exits when
 * the channel closes: it never outlives its agent.
 */

import { type Server, Socket } from 'node:net';
import { join } from 'node:path';
import { type BpfMap, openPinnedMap } from '../../bpf/index.js';
import { ctEntry, ctKey4, ipcacheInfo, ipcacheKey4 } from '../../datapath/layout.js';
import { MIN_CLUSTER_IDENTITY } from '../../identity/index.js';
import { cidrContains } from '../../policy/index.js';
import {
  F_DROPPED,
  F_EGRESS,
  F_ERROR,
  F_RESPONSE,
  type L7EventsMessage,
  type PackedEvent,
  packHeaders,
  unpackEvent,
} from './events.js';
import { handoffPath, listenHandoff } from './handoff.js';
import { createHttpProxy, type HttpProxy, type HttpRecord, type ProxyTarget } from './proxy.js';
import {
  type Direction,
  type EndpointsMessage,
  type PolicyName,
  type ProxyEndpoint,
  RedirectTable,
} from './rules.js';
import { markedSocket, transparentListener } from './socket.js';

/** skb->mark magic of the proxy's own connections (bpf/include/proxy.h). */
export const MARK_MAGIC_PROXY_INGRESS = 0x0a00;
export const MARK_MAGIC_PROXY_EGRESS = 0x0b00;
const CT_SCOPE_EGRESS = 1;
const CT_SCOPE_INGRESS = 2;
const ID_WORLD = 2;

/** The mark carrying `identity` (24 bits: 16 at the top, 8 in the low byte); node-local identities read as world. */
export function upstreamMark(magic: number, identity: number): number {
  const id = identity >= 1 << 24 ? ID_WORLD : identity;
  return (((id & 0xffff) << 16) | magic | ((id >>> 16) & 0xff)) >>> 0;
}

export interface HttpProxyProcessOptions {
  egressPort: number;
  ingressPort: number;
  /** The agent's bpffs directory, for conntrack and ipcache lookups. */
  pinDir: string;
  /** Where to listen (default 127.0.0.1, as the datapath looks the listeners up there). */
  address?: string;
  /** This node's pod CIDR: egress to pods outside it keeps the pod's address (see #resolve). */
  podCidr?: string;
  /** Join a SO_REUSEPORT group on the ports (the agent's workers); otherwise ports in use fail. */
  reusePort?: boolean;
  /**
   * Serve the HTTP/2 connections the native workers hand over, on unix sockets in this
   * directory (handoff.ts), instead of listening on the ports.
   */
  handoffDir?: string;
  /** Where events go without an IPC channel (a terminal run). */
  log?(line: string): void;
}

/** Who is talking on one proxied connection, found once per connection. */
interface Conn {
  direction: Direction;
  endpoint: ProxyEndpoint;
  peer: number;
}

interface RoutedTarget extends ProxyTarget {
  conn: Conn;
  policy?: PolicyName;
}

interface Peers {
  ct: BpfMap<ReturnType<typeof ctKey4.decode>, ReturnType<typeof ctEntry.decode>>;
  ipcache: BpfMap<ReturnType<typeof ipcacheKey4.decode>, ReturnType<typeof ipcacheInfo.decode>>;
}

export class HttpProxyProcess {
  readonly #o: HttpProxyProcessOptions;
  readonly table = new RedirectTable();
  readonly #peers: Peers;
  readonly #proxies: HttpProxy[] = [];
  readonly #handoffs: Server[] = [];
  readonly #conns = new Map<string, Conn>();
  #pending: PackedEvent[] = [];
  readonly #packedHeaders = new WeakMap<object, string>();
  #flush: NodeJS.Timeout | undefined;

  constructor(o: HttpProxyProcessOptions) {
    this.#o = o;
    const ct = openPinnedMap(join(o.pinDir, 'hypha_ct4'), { key: ctKey4, value: ctEntry });
    try {
      this.#peers = {
        ct,
        ipcache: openPinnedMap(join(o.pinDir, 'hypha_ipcache4'), { key: ipcacheKey4, value: ipcacheInfo }),
      };
    } catch (err) {
      ct.close();
      throw err;
    }
  }

  /** Starts both listeners (transparent sockets on the configured address). */
  async listen(): Promise<void> {
    const address = this.#o.address ?? '127.0.0.1';
    for (const [direction, port] of [
      ['egress', this.#o.egressPort],
      ['ingress', this.#o.ingressPort],
    ] as const) {
      const proxy = createHttpProxy({
        resolve: (socket) => this.#resolve(direction, socket),
        onRecord: (r) => this.#record(direction, r),
        createSocket: (t) => (t.mark ? markedSocket(t.mark, t.source) : new Socket()),
      });
      this.#proxies.push(proxy);
      if (this.#o.handoffDir) {
        const path = handoffPath(this.#o.handoffDir, direction);
        this.#handoffs.push(await listenHandoff(path, (s) => proxy.server.emit('connection', s)));
        continue;
      }
      // A SO_REUSEPORT group when the agent runs several of these processes (workers).
      await proxy.listenFd(transparentListener(address, port, this.#o.reusePort ?? false));
    }
  }

  apply(m: EndpointsMessage): void {
    this.table.apply(m);
  }

  async close(): Promise<void> {
    clearTimeout(this.#flush);
    this.#send();
    await Promise.all(this.#proxies.map((p) => p.close()));
    await Promise.all(this.#handoffs.map((s) => new Promise((r) => s.close(r))));
    this.#peers.ct.close();
    this.#peers.ipcache.close();
  }

  #conn(
    direction: Direction,
    client: string,
    cport: number,
    server: string,
    sport: number,
  ): Conn | undefined {
    const local = direction === 'ingress' ? server : client;
    const endpoint = this.table.endpointAt(local);
    if (!endpoint) return undefined;
    const scope = direction === 'ingress' ? CT_SCOPE_INGRESS : CT_SCOPE_EGRESS;
    const key = { saddr: client, daddr: server, sport: cport, dport: sport, proto: 6, scope, pad: [0, 0] };
    let peer: number | undefined;
    try {
      const e = this.#peers.ct.lookup(key);
      if (e) peer = direction === 'ingress' ? e.src_identity : e.dst_identity;
    } catch {
      // Read failures fall back to the ipcache.
    }
    if (peer === undefined) {
      const ip = direction === 'ingress' ? client : server;
      try {
        peer = this.#peers.ipcache.lookup({ prefixlen: 32, ip4: ip })?.identity ?? ID_WORLD;
      } catch {
        peer = ID_WORLD;
      }
    }
    return { direction, endpoint, peer };
  }

  /**
   * Egress to a pod on another node goes out from the client pod's own address and port:
   * that node's datapath knows the pod's identity by its address, not the mark (which does
   * not cross nodes); the replies come back through the pod's veth (bpf/include/proxy.h).
   * Everything else leaves from the node: a local pod's to_container reads the identity
   * from the mark, and the world answers the node as it would a masqueraded pod. (A local
   * pod's own ingress proxy could not take a second connection with the very same
   * addresses and ports in this namespace.)
   */
  #remotePod(ip: string, identity: number): boolean {
    const cluster = identity >= MIN_CLUSTER_IDENTITY && identity < 1 << 24;
    return cluster && !(this.#o.podCidr && cidrContains(this.#o.podCidr, `${ip}/32`));
  }

  #resolve(direction: Direction, socket: Socket): RoutedTarget | undefined {
    const client = socket.remoteAddress ?? '';
    const server = socket.localAddress ?? '';
    const cport = socket.remotePort ?? 0;
    const sport = socket.localPort ?? 0;
    const key = `${client}:${cport}>${server}:${sport}`;
    let conn = this.#conns.get(key);
    if (!conn) {
      conn = this.#conn(direction, client, cport, server, sport);
      if (!conn) return undefined;
      this.#conns.set(key, conn);
      socket.once('close', () => this.#conns.delete(key));
    }
    const m = this.table.match(conn.endpoint, direction, conn.peer, sport);
    const client_identity = direction === 'ingress' ? conn.peer : conn.endpoint.identity;
    return {
      host: server,
      port: sport,
      rules: m?.rules,
      peerIdentity: conn.peer,
      mark: upstreamMark(
        direction === 'ingress' ? MARK_MAGIC_PROXY_INGRESS : MARK_MAGIC_PROXY_EGRESS,
        client_identity,
      ),
      ...(direction === 'egress' && this.#remotePod(server, conn.peer)
        ? { source: { ip: client, port: cport } }
        : {}),
      conn,
      ...(m?.entry.policy ? { policy: m.entry.policy } : {}),
    };
  }

  #record(direction: Direction, r: HttpRecord): void {
    const t = r.target as RoutedTarget | undefined;
    // The record's source/destination are the connection's client and server.
    const conn =
      t?.conn ?? this.#conn(direction, r.source.ip, r.source.port, r.destination.ip, r.destination.port);
    const localId = conn?.endpoint.identity ?? 0;
    const peer = conn?.peer ?? 0;
    const ingress = direction === 'ingress';
    const clientId = ingress ? peer : localId;
    const serverId = ingress ? localId : peer;
    const request = r.type === 'request';
    const authority = r.host || `${r.destination.ip}:${r.destination.port}`;
    let headers = this.#packedHeaders.get(r.headers);
    if (headers === undefined) {
      headers = packHeaders(r.headers);
      this.#packedHeaders.set(r.headers, headers);
    }
    const p = t?.policy;
    // A request goes from client to server, a response back (as Hubble shows them).
    this.#pending.push([
      Date.now(),
      (request ? 0 : F_RESPONSE) |
        (r.verdict === 'denied' ? F_DROPPED : r.verdict === 'error' ? F_ERROR : 0) |
        (ingress ? 0 : F_EGRESS),
      conn?.endpoint.id ?? 0,
      request ? r.source.ip : r.destination.ip,
      request ? r.source.port : r.destination.port,
      request ? clientId : serverId,
      request ? r.destination.ip : r.source.ip,
      request ? r.destination.port : r.source.port,
      request ? serverId : clientId,
      r.code ?? 0,
      r.method,
      /^https?:\/\//i.test(r.url) || r.url === '' ? r.url : `http://${authority}${r.url}`,
      r.protocol,
      r.latencyNs ?? -1,
      p ? `${p.kind}/${p.namespace}/${p.name}` : '',
      r.reason ?? '',
      headers,
    ]);
    // Batched: one IPC message per burst, not per request; small enough not to stall.
    if (this.#pending.length >= 64) this.#send();
    else this.#flush ??= setTimeout(() => this.#send(), 5).unref();
  }

  #send(): void {
    clearTimeout(this.#flush);
    this.#flush = undefined;
    if (this.#pending.length === 0) return;
    const packed = this.#pending;
    this.#pending = [];
    if (process.send && process.connected) process.send({ type: 'l7', packed } satisfies L7EventsMessage);
    else for (const e of packed) this.#o.log?.(JSON.stringify(unpackEvent(e)));
  }
}

function isEndpointsMessage(m: unknown): m is EndpointsMessage {
  const o = m as Partial<EndpointsMessage> | null;
  return (
    typeof o === 'object' &&
    o !== null &&
    o.type === 'endpoints' &&
    Array.isArray(o.upsert) &&
    Array.isArray(o.remove)
  );
}

/**
 * Runs the proxy until `signal` aborts or the agent's channel closes. Under an agent it
 * waits for the first full endpoint set before it listens; alone (no IPC channel) it
 * listens at once with no endpoints, answering every request 503.
 */
export async function runHttpProxyProcess(o: HttpProxyProcessOptions, signal: AbortSignal): Promise<void> {
  const p = new HttpProxyProcess(o);
  const done = new Promise<void>((resolve) => {
    signal.addEventListener('abort', () => resolve(), { once: true });
    process.once('disconnect', () => resolve());
  });
  try {
    if (process.send) {
      const synced = new Promise<void>((resolve) => {
        process.on('message', (m: unknown) => {
          if (!isEndpointsMessage(m)) return;
          try {
            p.apply(m);
          } catch (err) {
            o.log?.(`hypha proxy http: endpoints update refused: ${(err as Error).message}`);
          }
          if (p.table.synced) resolve();
        });
      });
      process.send({ type: 'hello' });
      await Promise.race([synced, done]);
      if (signal.aborted || !process.connected) return;
    } else {
      p.apply({ type: 'endpoints', full: true, upsert: [], remove: [] });
    }
    await p.listen();
    process.send?.({ type: 'ready' });
    o.log?.(
      o.handoffDir
        ? `hypha proxy http: HTTP/2 handed over on ${handoffPath(o.handoffDir, 'egress')}, ${handoffPath(o.handoffDir, 'ingress')}`
        : `hypha proxy http: egress on ${o.address ?? '127.0.0.1'}:${o.egressPort}, ingress on :${o.ingressPort}`,
    );
    await done;
  } finally {
    await p.close();
  }
}
