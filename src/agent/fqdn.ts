/**
 * The agent's side of DNS-aware policy (toFQDNs, dns rules): it keeps the DNS proxy child
 * running, tells it the dns rules of every local endpoint, and takes the answers it sees.
 * An answer's IPs become FQDN identities: the policy repository computes which endpoints'
 * entries change, those go into the policy maps and the IPs into the ipcache, and only
 * then is the proxy told to release the answer to the pod. Learned IPs expire with their
 * TTL (never sooner than the minimum TTL, Cilium's --tofqdns-min-ttl), but not while a
 * connection of a local endpoint to the IP is open. The proxy's records become L7 flows.
 */
import { networkInterfaces } from 'node:os';
import type { Datapath } from '../datapath/index.js';
import { rcodeName } from '../dns/message.js';
import type { L7Event } from '../hubble/l7.js';
import { isLocalIdentity } from '../identity/index.js';
import type { EndpointDiff, PolicyRepository } from '../policy/index.js';
import type { DnsRecord } from '../proxy/dns/proxy.js';
import type { AgentToDnsProxy, DnsPortRule, DnsProxyEndpoint, DnsProxyToAgent } from '../proxy/dns/rules.js';
import { readJson, writeJsonAtomic } from './state.js';
import { Supervisor } from './supervisor.js';

/** Cilium's default DNS proxy port is chosen at random; a fixed one keeps restarts simple. */
export const DEFAULT_DNS_PROXY_PORT = 10053;

/**
 * The local address the datapath translates pod DNS to: the node's address, else the
 * first non-loopback IPv4 address of this network namespace. Undefined: no proxy (DNS
 * under a dns rule is then dropped, never let through).
 */
export function dnsProxyAddress(nodeIp: string | undefined): string | undefined {
  if (nodeIp && /^\d+\.\d+\.\d+\.\d+$/.test(nodeIp)) return nodeIp;
  for (const addrs of Object.values(networkInterfaces()))
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

export interface FqdnOptions {
  repo: PolicyRepository;
  datapath: Datapath;
  /** Writes policy diffs to the maps (the agent's reconciler). */
  apply(diffs: EndpointDiff[]): void;
  endpoints(): { id: number; ip: string; identity: number }[];
  /** DNS flows. */
  addL7?(e: L7Event): void;
  /** The proxy's address and port; undefined: no proxy. */
  proxy: { ip: string; port: number } | undefined;
  pinDir: string;
  /** Seconds: learned IPs live at least this long (0: the answer's TTL). */
  minTtl: number;
  /** Where learned names survive an agent restart. */
  stateFile: string;
  log(line: string): void;
}

export interface DnsProxyStatus {
  /** Where pod DNS under dns rules goes; absent: no proxy (such DNS is dropped). */
  address?: string;
  ready: boolean;
  pid?: number;
  restarts: number;
  /** Why the proxy last went down. */
  lastDown?: string;
  /** Name/IP pairs learned from DNS answers. */
  learnedIps: number;
  minTtl: number;
}

/** One row of `hypha fqdn cache list`. */
export interface FqdnCacheEntry {
  endpointId: number;
  name: string;
  /** Seconds, as applied (the answer's TTL, raised to the minimum). */
  ttl: number;
  /** ms since the epoch. */
  expiresAt: number;
  ips: string[];
  /** Expired, but kept because a connection to one of its IPs is open. */
  inUse?: boolean;
}

interface Learned {
  ttl: number;
  expiresAt: number;
}

const GC_INTERVAL_MS = 1000;
const CT_F_CLOSING = 1 << 2;

export class FqdnManager {
  readonly #o: FqdnOptions;
  readonly #proxy: Supervisor | undefined;
  /** endpoint -> name -> ip -> lifetime. */
  #cache = new Map<number, Map<string, Map<string, Learned>>>();
  /** IPs this manager wrote into the ipcache, with the identity written. */
  readonly #written = new Map<string, number>();
  /** The rules last sent, per endpoint (JSON), to send only changes. */
  #sentRules = new Map<number, string>();
  #rulesDirty = true;
  #timer: NodeJS.Timeout | undefined;
  #saveTimer: NodeJS.Timeout | undefined;
  #inUse = new Set<string>();
  #closing = false;
  #lastDown: string | undefined;
  /** `name|ip` pairs the repository holds: a new one may need an ipcache entry. */
  #pairs = new Set<string>();
  #ipcacheTimer: NodeJS.Immediate | undefined;

  constructor(o: FqdnOptions) {
    this.#o = o;
    if (o.proxy)
      this.#proxy = new Supervisor({
        name: 'dns-proxy',
        module: 'proxy-dns',
        args: [
          'proxy',
          'dns',
          '--address',
          o.proxy.ip,
          '--port',
          String(o.proxy.port),
          '--pin-dir',
          o.pinDir,
        ],
        onReady: () => this.#pushRules(true),
        onMessage: (m) => this.#onMessage(m as DnsProxyToAgent),
        onDown: (reason) => {
          this.#lastDown = reason;
          if (!this.#closing)
            o.log(`DNS proxy down (${reason}): DNS under dns rules is dropped until it is back`);
        },
        log: o.log,
      });
  }

  /** For `hypha status`: the DNS proxy and how much was learned. */
  status(): DnsProxyStatus {
    const pid = this.#proxy?.pid;
    return {
      ...(this.#o.proxy ? { address: `${this.#o.proxy.ip}:${this.#o.proxy.port}` } : {}),
      ready: this.proxyReady,
      ...(pid !== undefined ? { pid } : {}),
      restarts: this.#proxy?.restarts ?? 0,
      ...(this.#lastDown ? { lastDown: this.#lastDown } : {}),
      learnedIps: this.#pairs.size,
      minTtl: this.#o.minTtl,
    };
  }

  /** The proxy child's process id, while it runs. */
  get proxyPid(): number | undefined {
    return this.#proxy?.pid;
  }

  get proxyReady(): boolean {
    return this.#proxy?.ready ?? false;
  }

  /** Restores what a previous run learned, starts the proxy and the expiry timer. */
  start(): void {
    this.#restore();
    this.#proxy?.start();
    this.#timer = setInterval(() => this.gc(), GC_INTERVAL_MS);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    if (this.#ipcacheTimer) clearImmediate(this.#ipcacheTimer);
    if (this.#saveTimer) {
      clearTimeout(this.#saveTimer);
      this.#save();
    }
    await this.#proxy?.close();
  }

  /**
   * Policy maps are about to change: the proxy gets the new dns rules first; once the maps
   * are written, the ipcache follows (a policy selecting a name learned earlier needs its IPs).
   */
  policyChanged(): void {
    this.#rulesDirty = true;
    this.#pushRules(false);
    this.#ipcacheTimer ??= setImmediate(() => {
      this.#ipcacheTimer = undefined;
      this.#syncIpcache();
    });
  }

  /** The cache as `hypha fqdn cache list` shows it: one row per endpoint, name and expiry. */
  cache(): FqdnCacheEntry[] {
    const rows: FqdnCacheEntry[] = [];
    const now = Date.now();
    for (const [endpointId, names] of this.#cache)
      for (const [name, ips] of names) {
        const groups = new Map<string, FqdnCacheEntry>();
        for (const [ip, l] of ips) {
          const key = `${l.ttl}|${l.expiresAt}`;
          let row = groups.get(key);
          if (!row) {
            row = { endpointId, name, ttl: l.ttl, expiresAt: l.expiresAt, ips: [] };
            if (l.expiresAt <= now) row.inUse = true;
            groups.set(key, row);
          }
          row.ips.push(ip);
        }
        rows.push(...groups.values());
      }
    return rows.sort((a, b) => a.endpointId - b.endpointId || a.name.localeCompare(b.name));
  }

  /**
   * An answer the proxy saw: learn it, apply the policy it changes, put its IPs in the
   * ipcache. Throws when the maps cannot take it (the proxy then answers SERVFAIL).
   */
  learn(endpointId: number, name: string, ips: readonly string[], ttl: number, now = Date.now()): void {
    const applied = Math.max(ttl, this.#o.minTtl);
    const expiresAt = now + applied * 1000;
    const n = name.toLowerCase().replace(/\.$/, '');
    const known = this.#learned(endpointId, n);
    let fresh = false;
    for (const ip of ips) {
      const prev = known.get(ip);
      if (!prev || prev.expiresAt < expiresAt) known.set(ip, { ttl: applied, expiresAt });
      if (!this.#pairs.has(`${n}|${ip}`)) fresh = true;
    }
    // Policy first: when an IP's identity changes in the ipcache, its entries are there.
    this.#o.apply(this.#o.repo.dnsAnswer(n, ips, expiresAt));
    if (fresh) this.#syncIpcache();
    this.#scheduleSave();
  }

  /** The IPs an endpoint learned for a name (created empty). */
  #learned(endpointId: number, name: string): Map<string, Learned> {
    let names = this.#cache.get(endpointId);
    if (!names) {
      names = new Map();
      this.#cache.set(endpointId, names);
    }
    let ips = names.get(name);
    if (!ips) {
      ips = new Map();
      names.set(name, ips);
    }
    return ips;
  }

  /** Forgets what expired, unless a local endpoint's connection to the IP is still open. */
  gc(now = Date.now()): void {
    const due = this.#o.repo.dnsCache().some((e) => e.expiresAt <= now);
    let cacheDue = false;
    for (const names of this.#cache.values())
      for (const ips of names.values()) for (const l of ips.values()) if (l.expiresAt <= now) cacheDue = true;
    if (!due && !cacheDue) return;
    this.#inUse = this.#openConnections();
    const inUse = (ip: string) => this.#inUse.has(ip);
    const live = new Set(this.#o.endpoints().map((e) => e.id));
    for (const [ep, names] of this.#cache) {
      for (const [name, ips] of names) {
        for (const [ip, l] of ips) if (l.expiresAt <= now && (!inUse(ip) || !live.has(ep))) ips.delete(ip);
        if (ips.size === 0) names.delete(name);
      }
      if (names.size === 0) this.#cache.delete(ep);
    }
    if (due) {
      this.#o.apply(this.#o.repo.expireDns(now, inUse));
      this.#syncIpcache();
    }
    if (cacheDue || due) this.#scheduleSave();
  }

  /** Destination IPs of local endpoints' open connections (conntrack, egress, not closing). */
  #openConnections(): Set<string> {
    const out = new Set<string>();
    const nowNs = process.hrtime.bigint();
    const local = new Set(this.#o.endpoints().map((e) => e.ip));
    try {
      for (const { key, entry, scope } of this.#o.datapath.ctEntries()) {
        if (scope !== 'egress' || !local.has(key.saddr)) continue;
        if (entry.expires_ns <= nowNs || entry.flags & CT_F_CLOSING) continue;
        out.add(key.daddr);
      }
    } catch (err) {
      // Without conntrack nothing can be known to be unused: keep everything this round.
      this.#o.log(`fqdn: reading conntrack: ${(err as Error).message}`);
      for (const e of this.#o.repo.dnsCache()) out.add(e.ip);
    }
    return out;
  }

  /**
   * The ipcache holds an FQDN identity for every learned IP whose name a policy on a local
   * endpoint selects, and nothing for the others. IPs the cluster owns (pods, nodes) keep
   * their identities: toFQDNs does not apply to them.
   */
  #syncIpcache(): void {
    const { repo, datapath } = this.#o;
    const want = new Map<string, number>();
    const selects = new Map<string, boolean>();
    this.#pairs = new Set();
    for (const { name, ip } of repo.dnsCache()) {
      this.#pairs.add(`${name}|${ip}`);
      let selected = selects.get(name);
      if (selected === undefined) {
        selected = repo.fqdnSelects(name);
        selects.set(name, selected);
      }
      if (ip.includes(':') || want.has(ip) || !selected) continue;
      want.set(ip, repo.local.forPrefix(`${ip}/32`));
    }
    for (const [ip, id] of this.#written) {
      if (want.get(ip) === id) continue;
      const cur = datapath.ipcache.lookup({ prefixlen: 32, ip4: ip });
      if (cur?.identity === id) datapath.deleteIpcache(`${ip}/32`);
      this.#written.delete(ip);
    }
    for (const [ip, id] of want) {
      if (this.#written.get(ip) === id) continue;
      const cur = datapath.ipcache.lookup({ prefixlen: 32, ip4: ip });
      if (cur && cur.identity !== 2 && !isLocalIdentity(cur.identity)) continue;
      datapath.upsertIpcache(`${ip}/32`, id);
      this.#written.set(ip, id);
    }
  }

  /** The redirect-to-DNS-proxy entries of every local endpoint, as the proxy takes them. */
  #rules(): DnsProxyEndpoint[] {
    const out: DnsProxyEndpoint[] = [];
    for (const ep of this.#o.endpoints()) {
      const pol = this.#o.repo.endpointPolicy(ep.id);
      const rules: DnsPortRule[] = [];
      for (const e of pol?.egress.entries.values() ?? []) {
        if (e.verdict !== 'redirect' || e.proxy !== 'dns') continue;
        rules.push({
          identity: e.identity,
          protocol: e.protocol,
          port: e.port,
          portPrefixLen: e.portPrefixLen,
          selectors: e.l7?.dns ?? [],
          cookie: e.cookie,
        });
      }
      if (rules.length) out.push({ id: ep.id, identity: ep.identity, rules });
    }
    return out;
  }

  #pushRules(force: boolean): void {
    if (!this.#proxy?.ready || (!force && !this.#rulesDirty)) return;
    const endpoints = this.#rules();
    const next = new Map(endpoints.map((e) => [e.id, JSON.stringify(e)]));
    const same =
      !force &&
      next.size === this.#sentRules.size &&
      [...next].every(([id, j]) => this.#sentRules.get(id) === j);
    this.#rulesDirty = false;
    if (same) return;
    if (this.#send({ type: 'rules', endpoints })) this.#sentRules = next;
  }

  #send(m: AgentToDnsProxy): boolean {
    return this.#proxy?.send(m) ?? false;
  }

  #onMessage(m: DnsProxyToAgent): void {
    if (m?.type === 'answer') {
      let error: string | undefined;
      try {
        if (!Array.isArray(m.ips) || typeof m.name !== 'string' || !Number.isFinite(m.ttl))
          throw new Error('malformed answer message');
        this.learn(m.endpointId, m.name, m.ips, m.ttl);
      } catch (err) {
        error = (err as Error).message;
        this.#o.log(`fqdn: applying ${String(m.name)}: ${error}`);
      }
      this.#send(error ? { type: 'applied', seq: m.seq, error } : { type: 'applied', seq: m.seq });
    } else if (m?.type === 'batch' && Array.isArray(m.records) && Array.isArray(m.answers)) {
      // Answers the proxy released already (their IPs were applied and fresh): lifetimes extend.
      for (const a of m.answers) {
        try {
          this.learn(a.endpointId, a.name, a.ips, a.ttl);
        } catch (err) {
          this.#o.log(`fqdn: refreshing ${String(a.name)}: ${(err as Error).message}`);
        }
      }
      for (const r of m.records) {
        try {
          this.#o.addL7?.(this.#toL7(r));
        } catch (err) {
          this.#o.log(`fqdn: a DNS record did not become a flow: ${(err as Error).message}`);
        }
      }
    }
  }

  /** A proxy record as Hubble's L7 DNS flow: a request goes pod -> server, a response back. */
  #toL7(r: DnsRecord): L7Event {
    const proxy = this.#o.proxy;
    const pod = { ip: r.source.ip, port: r.source.port, identity: r.identity ?? 0 };
    const server = {
      ip: r.destination?.ip ?? proxy?.ip ?? '0.0.0.0',
      port: r.destination?.port ?? proxy?.port ?? 53,
      identity: r.upstreamIdentity ?? 0,
    };
    const request = r.type === 'query';
    const rule = r.cookie ? this.#o.repo.ruleOf(r.cookie) : undefined;
    const e: L7Event = {
      time: r.time,
      kind: 'dns',
      type: request ? 'request' : 'response',
      // A refused query is the policy's drop; the REFUSED answer then reaches the pod (as Hubble counts it).
      verdict:
        r.verdict === 'forwarded' || (r.verdict === 'refused' && !request)
          ? 'FORWARDED'
          : r.verdict === 'refused'
            ? 'DROPPED'
            : 'ERROR',
      trafficDirection: 'EGRESS',
      endpointId: r.endpointId ?? 0,
      source: request ? pod : server,
      destination: request ? server : pod,
      dns: {
        query: r.name,
        ips: r.ips ?? [],
        ttl: r.ttl ?? 0,
        qtypes: r.qtypes,
        rrtypes: r.rrtypes ?? [],
        rcode: r.rcode ?? 0,
      },
    };
    if (r.latencyNs !== undefined) e.latencyNs = r.latencyNs;
    if (rule) e.policy = { kind: rule.kind, namespace: rule.namespace ?? '', name: rule.name };
    if (r.reason) e.reason = r.rcode ? `${r.reason} (${rcodeName(r.rcode)})` : r.reason;
    return e;
  }

  #scheduleSave(): void {
    this.#saveTimer ??= setTimeout(() => {
      this.#saveTimer = undefined;
      this.#save();
    }, 200);
    this.#saveTimer.unref();
  }

  #save(): void {
    const rows: { endpointId: number; name: string; ip: string; ttl: number; expiresAt: number }[] = [];
    for (const [endpointId, names] of this.#cache)
      for (const [name, ips] of names)
        for (const [ip, l] of ips) rows.push({ endpointId, name, ip, ttl: l.ttl, expiresAt: l.expiresAt });
    try {
      writeJsonAtomic(this.#o.stateFile, rows);
    } catch (err) {
      this.#o.log(`fqdn: saving ${this.#o.stateFile}: ${(err as Error).message}`);
    }
  }

  /** What the previous run learned and has not expired: policy keeps allowing it across a restart. */
  #restore(): void {
    const rows = readJson<{ endpointId: number; name: string; ip: string; ttl: number; expiresAt: number }[]>(
      this.#o.stateFile,
      [],
    );
    const now = Date.now();
    const diffs = this.#o.repo.bulk(() => {
      for (const r of Array.isArray(rows) ? rows : []) {
        if (typeof r?.name !== 'string' || typeof r.ip !== 'string' || !(r.expiresAt > now)) continue;
        this.#learned(r.endpointId, r.name).set(r.ip, { ttl: r.ttl, expiresAt: r.expiresAt });
        this.#o.repo.dnsAnswer(r.name, [r.ip], r.expiresAt);
      }
    });
    this.#o.apply(diffs);
    this.#syncIpcache();
  }
}
