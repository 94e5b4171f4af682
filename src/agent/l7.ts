/**
 * The agent's side of L7 HTTP policy: the proxy's ports in the redirect entries, the
 * node's routing that delivers redirected packets locally, the proxy child process
 * (`hypha proxy http`, supervised: its crash never takes the agent down, and while it is
 * down the datapath drops what needs it, 178 SOCKET_LOOKUP_FAILED), and the endpoints'
 * HTTP rules pushed to it on every policy change. Its L7 records come back as flows.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Datapath } from '../datapath/index.js';
import { errorMessage } from '../errors.js';
import type { L7Event } from '../hubble/l7.js';
import type { PolicyEntry, PolicyRepository } from '../policy/index.js';
import { unpackEvent } from '../proxy/http/events.js';
import type { EndpointsMessage, ProxyEndpoint, RedirectEntry } from '../proxy/http/rules.js';
import { Supervisor } from './supervisor.js';

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
  onEvent(e: L7Event): void;
  log(line: string): void;
}

/** What `hypha status` shows about the proxy. */
export interface HttpProxyStatus {
  ready: boolean;
  pid?: number;
  restarts: number;
  ports: { egress: number; ingress: number };
  endpoints: number;
  routing: { ok: boolean; error?: string };
  lastDown?: string;
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
  readonly #child: Supervisor;
  /** What the proxy has (or gets on its next start), by endpoint id, with its JSON to compare. */
  readonly #sent = new Map<number, { ep: ProxyEndpoint; json: string }>();
  #routing: { ok: boolean; error?: string } = { ok: false, error: 'not started' };
  #lastDown: string | undefined;
  #started = false;

  constructor(o: HttpProxyManagerOptions) {
    this.#o = o;
    this.ports = o.ports ?? { ...DEFAULT_HTTP_PROXY_PORTS };
    // Redirect entries name the listener of their direction.
    o.datapath.proxyPorts.http = this.ports.egress;
    o.datapath.proxyPorts.httpIngress = this.ports.ingress;
    this.#child = new Supervisor({
      name: 'http-proxy',
      module: 'proxy-http',
      args: [
        'proxy',
        'http',
        '--egress-port',
        String(this.ports.egress),
        '--ingress-port',
        String(this.ports.ingress),
        '--pin-dir',
        o.pinDir,
        '--pod-cidr',
        o.podCidr,
      ],
      onMessage: (m) => this.#message(m),
      onReady: () => o.log(`http proxy ready (pid ${this.#child.pid})`),
      onDown: (reason) => {
        this.#lastDown = `${new Date().toISOString()} ${reason}`;
      },
      log: o.log,
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
    this.#child.start();
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
      this.#child.send({ type: 'endpoints', full: false, upsert, remove } satisfies EndpointsMessage);
  }

  status(): HttpProxyStatus {
    const pid = this.#child.pid;
    return {
      ready: this.#child.ready,
      ...(pid !== undefined ? { pid } : {}),
      restarts: this.#child.restarts,
      ports: this.ports,
      endpoints: this.#sent.size,
      routing: this.#routing,
      ...(this.#lastDown ? { lastDown: this.#lastDown } : {}),
    };
  }

  /** Stops the proxy. The routing stays: it only concerns packets marked for a proxy. */
  close(): Promise<void> {
    return this.#child.close();
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

  #message(m: unknown): void {
    const msg = m as { type?: unknown; packed?: unknown } | null;
    if (msg?.type === 'hello') {
      // A (re)started proxy gets everything, then listens.
      this.#child.send({
        type: 'endpoints',
        full: true,
        upsert: [...this.#sent.values()].map((s) => s.ep),
        remove: [],
      } satisfies EndpointsMessage);
    } else if (msg?.type === 'l7' && Array.isArray(msg.packed)) {
      for (const p of msg.packed) {
        let e: L7Event;
        try {
          e = unpackEvent(p);
        } catch (err) {
          this.#o.log(`http proxy: ${errorMessage(err)}`);
          continue;
        }
        this.#o.onEvent(e);
      }
    }
  }
}
