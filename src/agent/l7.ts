/**
 * The agent's side of L7 HTTP policy: the proxy's ports in the redirect entries, the
 * node's routing that delivers redirected packets locally, the proxy's worker processes
 * (`hypha proxy http`, each supervised: a crash never takes the agent down, and while
 * every worker is down the datapath drops what needs them, 178 SOCKET_LOOKUP_FAILED), and
 * the endpoints' HTTP rules pushed to each on every policy change. Their L7 records come
 * back as flows.
 *
 * Workers: the native data path (dist/native/hypha-http-proxy, src/proxy/http/native),
 * one process per CPU; the workers listen on the same ports in a SO_REUSEPORT group, so
 * the kernel spreads connections over them (also those the datapath assigns with
 * bpf_sk_assign, which picks within the group), and a worker's crash costs only its own
 * connections. One more worker runs on Node.js for HTTP/2: the native workers hand it the
 * connections that open with the HTTP/2 preface, over unix sockets in the agent's run
 * directory. With the `node` engine the Node.js workers do everything, at about two thirds
 * of the native throughput (bench/l7.ts: 0.33 of the direct path against about 0.5; perf
 * showed ~50 µs of user CPU per proxied request in Node.js's own event handling).
 */

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Datapath } from '../datapath/index.js';
import { errorMessage } from '../errors.js';
import type { PolicyEntry, PolicyRepository } from '../policy/index.js';
import type { EndpointsMessage, ProxyEndpoint, RedirectEntry } from '../proxy/http/rules.js';
import { Supervisor } from './supervisor.js';

/** The native workers' executable (make builds it): dist/src/agent/l7.js -> dist/native. */
export const NATIVE_HTTP_PROXY = join(
  dirname(fileURLToPath(import.meta.url)),
  '../../native/hypha-http-proxy',
);

export type HttpProxyEngine = 'native' | 'node';
export const HTTP_PROXY_ENGINES: readonly HttpProxyEngine[] = ['native', 'node'];

/** Listeners on 127.0.0.1 in the node's namespace: one per direction. */
export const DEFAULT_HTTP_PROXY_PORTS = { egress: 10080, ingress: 10081 } as const;

/** Cilium's: packets marked for a proxy (0x200 under 0xf00) look up this table, whose default is local. */
export const PROXY_ROUTE_TABLE = 2004;
const PROXY_RULE_PREF = 9;

export interface HttpProxyManagerOptions {
  pinDir: string;
  /** This node's pod CIDR (the proxy connects to pods elsewhere from the client pod's address). */
  podCidr: string;
  datapath: Datapath;
  repo: PolicyRepository;
  ports?: { egress: number; ingress: number };
  /** Proxy processes; default: one per CPU, at most DEFAULT_MAX_WORKERS. */
  workers?: number;
  /** What the workers run (default native). */
  engine?: HttpProxyEngine;
  /** A root-only directory for the HTTP/2 handoff sockets (the native engine's). */
  runDir: string;
  /** A record as the workers pack it (events.ts), unchecked. */
  onPacked(p: unknown): void;
  log(line: string): void;
}

export const DEFAULT_MAX_WORKERS = 4;
export const MAX_WORKERS = 64;

/** What `hypha status` shows about the proxy. */
export interface HttpProxyWorkerStatus {
  pid?: number;
  ready: boolean;
  restarts: number;
  lastDown?: string;
}

export interface HttpProxyStatus {
  /** At least one worker serves. */
  ready: boolean;
  engine: HttpProxyEngine;
  workers: HttpProxyWorkerStatus[];
  /** The Node.js worker the native workers hand HTTP/2 connections to. */
  http2?: HttpProxyWorkerStatus;
  /** Restarts of all workers. */
  restarts: number;
  ports: { egress: number; ingress: number };
  endpoints: number;
  routing: { ok: boolean; error?: string };
}

/** An endpoint as the proxy needs it. */
export interface ProxyEndpointSource {
  id: number;
  ip: string;
  identity: number;
  hostIfname: string;
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * The node's routing for redirected packets, idempotently:
 * - the fwmark rule and the local default route of its table;
 * - rp_filter off on all: a turned-around packet enters a pod's veth with a source that
 *   lives elsewhere (the kernel takes the larger of all and the device);
 * - TCP early demux off. A proxied connection has its socket in the node's namespace, under
 *   the original addresses, so early demux attaches that socket to the client's packets
 *   where they enter the node (the client's veth, eth0), before they reach the server's
 *   veth; routing then forwards them and ip_forward drops every packet carrying a socket.
 *   Cilium turns early demux off for the same reason when it cannot use xt_socket. Only
 *   the node's own TCP sockets lose the shortcut; pods have their own namespaces.
 */
export function installProxyRouting(): void {
  const rules = ip(['-4', 'rule', 'show']);
  if (!/fwmark 0x200\/0xf00 lookup 2004\b/.test(rules))
    ip([
      '-4',
      'rule',
      'add',
      'fwmark',
      '0x200/0xf00',
      'lookup',
      String(PROXY_ROUTE_TABLE),
      'pref',
      String(PROXY_RULE_PREF),
    ]);
  ip(['-4', 'route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(PROXY_ROUTE_TABLE)]);
  setSysctl('net/ipv4/conf/all/rp_filter', 0);
  setSysctl('net/ipv4/tcp_early_demux', 0);
}

function setSysctl(key: string, value: number): void {
  const path = `/proc/sys/${key}`;
  if (readFileSync(path, 'utf8').trim() !== String(value)) writeFileSync(path, String(value));
}

function redirectsOf(repo: PolicyRepository, id: number): RedirectEntry[] {
  const pol = repo.endpointPolicy(id);
  if (!pol) return [];
  const out: RedirectEntry[] = [];
  const add = (e: PolicyEntry) => {
    if (e.verdict !== 'redirect' || e.proxy !== 'http' || !e.l7?.http) return;
    const ref = repo.ruleOf(e.cookie);
    out.push({
      direction: e.direction,
      identity: e.identity,
      protocol: e.protocol,
      port: e.port,
      portPrefixLen: e.portPrefixLen,
      rules: e.l7.http,
      ...(ref ? { policy: { kind: ref.kind, namespace: ref.namespace ?? '', name: ref.name } } : {}),
    });
  };
  for (const e of pol.ingress.entries.values()) add(e);
  for (const e of pol.egress.entries.values()) add(e);
  return out;
}

export class HttpProxyManager {
  readonly #o: HttpProxyManagerOptions;
  readonly ports: { egress: number; ingress: number };
  readonly #workers: { child: Supervisor; lastDown?: string }[] = [];
  /** Every process that gets the endpoints: the workers and the HTTP/2 one. */
  readonly #all: { child: Supervisor; lastDown?: string }[] = [];
  readonly #http2: { child: Supervisor; lastDown?: string } | undefined;
  readonly engine: HttpProxyEngine;
  /** What the proxy has (or gets on its next start), by endpoint id, with its JSON to compare. */
  readonly #sent = new Map<number, { ep: ProxyEndpoint; json: string }>();
  #routing: { ok: boolean; error?: string } = { ok: false, error: 'not started' };
  #started = false;

  constructor(o: HttpProxyManagerOptions) {
    this.#o = o;
    this.ports = o.ports ?? { ...DEFAULT_HTTP_PROXY_PORTS };
    const n = o.workers ?? Math.min(availableParallelism(), DEFAULT_MAX_WORKERS);
    if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS)
      throw new RangeError(`http proxy workers: ${n} is not a whole number from 1 to ${MAX_WORKERS}`);
    // Redirect entries name the listener of their direction.
    o.datapath.proxyPorts.http = this.ports.egress;
    o.datapath.proxyPorts.httpIngress = this.ports.ingress;
    const common = ['--pin-dir', o.pinDir, '--pod-cidr', o.podCidr];
    const ports = ['--egress-port', String(this.ports.egress), '--ingress-port', String(this.ports.ingress)];
    this.engine = o.engine ?? 'native';
    if (this.engine === 'native' && !existsSync(NATIVE_HTTP_PROXY)) {
      // An install without the native build still enforces L7 rules, slower; status says which.
      o.log(`http proxy: ${NATIVE_HTTP_PROXY} is missing (make builds it): running the node engine`);
      this.engine = 'node';
    }
    const worker = (name: string, spawn: { module: string; executable?: string; args: string[] }) => {
      const w: { child: Supervisor; lastDown?: string } = {
        child: new Supervisor({
          name,
          ...spawn,
          onMessage: (m) => this.#message(w.child, m),
          onReady: () => o.log(`${name} ready (pid ${w.child.pid})`),
          onDown: (reason) => {
            w.lastDown = `${new Date().toISOString()} ${reason}`;
          },
          log: o.log,
        }),
      };
      this.#all.push(w);
      return w;
    };
    for (let i = 0; i < n; i++) {
      const name = n === 1 ? 'http-proxy' : `http-proxy[${i}]`;
      this.#workers.push(
        this.engine === 'native'
          ? worker(name, {
              module: 'proxy-http',
              executable: NATIVE_HTTP_PROXY,
              args: [...ports, ...common, '--reuse-port', '--handoff-dir', o.runDir],
            })
          : worker(name, {
              module: 'proxy-http',
              args: ['proxy', 'http', ...ports, ...common, '--reuse-port'],
            }),
      );
    }
    if (this.engine === 'native')
      this.#http2 = worker('http-proxy-h2', {
        module: 'proxy-http',
        args: ['proxy', 'http', '--handoff-dir', o.runDir, ...common],
      });
  }

  /** Sets up the node's routing (errors are reported in status) and starts the proxy. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    try {
      installProxyRouting();
      this.#routing = { ok: true };
    } catch (err) {
      // Without the routing a redirected packet is not delivered (the kernel never forwards a
      // packet assigned to a socket): L7 traffic fails closed.
      this.#routing = { ok: false, error: errorMessage(err) };
      this.#o.log(`http proxy routing: ${this.#routing.error}`);
    }
    for (const w of this.#all) w.child.start();
  }

  /**
   * Brings the proxy's view of these endpoints up to date (`only`: just these ids changed;
   * otherwise `endpoints` is all of them). Unchanged endpoints are not sent again.
   */
  sync(endpoints: ProxyEndpointSource[], only?: Iterable<number>): void {
    const upsert: ProxyEndpoint[] = [];
    const remove: number[] = [];
    const ids = only ? new Set(only) : undefined;
    const present = new Set<number>();
    for (const src of endpoints) {
      present.add(src.id);
      if (ids && !ids.has(src.id)) continue;
      const entries = redirectsOf(this.#o.repo, src.id);
      if (entries.length === 0) {
        if (this.#sent.delete(src.id)) remove.push(src.id);
        continue;
      }
      const ep: ProxyEndpoint = { id: src.id, ip: src.ip, identity: src.identity, entries };
      const json = JSON.stringify(ep);
      if (this.#sent.get(src.id)?.json === json) continue;
      this.#sent.set(src.id, { ep, json });
      upsert.push(ep);
      // Every redirecting veth turns packets around: ingress requests, egress replies.
      this.#hairpinReady(src.hostIfname);
    }
    // Endpoints gone (among those named, or among all).
    for (const id of ids ?? [...this.#sent.keys()]) {
      if (present.has(id) || !this.#sent.delete(id)) continue;
      remove.push(id);
    }
    if (upsert.length || remove.length)
      for (const w of this.#all)
        w.child.send({ type: 'endpoints', full: false, upsert, remove } satisfies EndpointsMessage);
  }

  status(): HttpProxyStatus {
    const of = ({ child, lastDown }: { child: Supervisor; lastDown?: string }): HttpProxyWorkerStatus => ({
      ...(child.pid !== undefined ? { pid: child.pid } : {}),
      ready: child.ready,
      restarts: child.restarts,
      ...(lastDown ? { lastDown } : {}),
    });
    const workers = this.#workers.map(of);
    const http2 = this.#http2 && of(this.#http2);
    return {
      ready: workers.some((w) => w.ready),
      engine: this.engine,
      workers,
      ...(http2 ? { http2 } : {}),
      restarts: workers.reduce((a, w) => a + w.restarts, 0) + (http2?.restarts ?? 0),
      ports: this.ports,
      endpoints: this.#sent.size,
      routing: this.#routing,
    };
  }

  /** Stops the workers. The routing stays: it only concerns packets marked for a proxy. */
  async close(): Promise<void> {
    await Promise.all(this.#all.map((w) => w.child.close()));
  }

  /**
   * A veth that turns packets around to the proxy receives them with foreign sources (no
   * reverse-path check) and, from the node's own sockets, with the node's (accept_local):
   * safe, as from_container drops a pod's packet whose source is not the pod's.
   */
  #hairpinReady(dev: string): void {
    try {
      setSysctl(`net/ipv4/conf/${dev}/rp_filter`, 0);
      setSysctl(`net/ipv4/conf/${dev}/accept_local`, 1);
    } catch (err) {
      this.#o.log(`http proxy: sysctls of ${dev}: ${errorMessage(err)}`);
    }
  }

  #message(from: Supervisor, m: unknown): void {
    const msg = m as { type?: unknown; packed?: unknown } | null;
    if (msg?.type === 'hello') {
      // A (re)started worker gets everything, then listens.
      from.send({
        type: 'endpoints',
        full: true,
        upsert: [...this.#sent.values()].map((s) => s.ep),
        remove: [],
      } satisfies EndpointsMessage);
    } else if (msg?.type === 'l7' && Array.isArray(msg.packed)) {
      for (const p of msg.packed) this.#o.onPacked(p);
    }
  }
}
