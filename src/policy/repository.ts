/**
 * The policy repository: policies, the identities in the cluster, the local endpoints
 * and what DNS taught us, turned into per-endpoint policy map entries. Every change
 * returns the difference for the endpoints it affects, and only those are recomputed:
 * a selector cache (selector -> identities) is kept up to date identity by identity,
 * and endpoints sharing an identity share one computation.
 */
import { compileSelector, type DnsSelector } from '../dns/pattern.js';
import { LocalIdentities, NAMESPACE_LABEL, ReservedIdentity } from '../identity/index.js';
import { type LabelSelector, type Labels, matches, selectorKey } from '../k8s/selector.js';
import type { HttpRule } from './http.js';
import {
  DIRECTIONS,
  type Direction,
  ICMP,
  ICMPV6,
  type Peer,
  type Policy,
  type PolicyOrigin,
  type PortSpec,
  PROTO_NUMBERS,
  policyKey,
  type Rule,
} from './model.js';
import { cidrContains } from './parse.js';
import { blockContains, portBlocks } from './ports.js';

export type Verdict = 'allow' | 'deny' | 'redirect' | 'auth';

/** One entry of an endpoint's policy map (DESIGN §1.4; the datapath's contract). */
export interface PolicyEntry {
  direction: Direction;
  /** Peer identity; 0 = any. */
  identity: number;
  /** IP protocol; 0 = any. */
  protocol: number;
  /** Port (ICMP: type); 0 with prefix 0 = any. */
  port: number;
  portPrefixLen: number;
  verdict: Verdict;
  proxy?: 'http' | 'dns';
  /** L7 rules for a redirect (the union of every rule that asked for this key). */
  l7?: { http?: HttpRule[]; dns?: DnsSelector[] };
  authType?: number;
  /** Maps back to the rule that decided (see `ruleOf`). */
  cookie: number;
}

export function entryKey(
  e: Pick<PolicyEntry, 'direction' | 'identity' | 'protocol' | 'port' | 'portPrefixLen'>,
): string {
  return `${e.direction}|${e.identity}|${e.protocol}|${e.port}/${e.portPrefixLen}`;
}

export interface RuleRef extends PolicyOrigin {
  /** Path of the rule in its manifest, e.g. `spec.ingress[0]`. */
  path: string;
}

export interface DirectionPolicy {
  /** Default deny applies: something selected this endpoint in this direction. */
  enforced: boolean;
  /** Policies that select the endpoint and enforce this direction. */
  selectedBy: PolicyOrigin[];
  entries: Map<string, PolicyEntry>;
}

export interface EndpointPolicy {
  ingress: DirectionPolicy;
  egress: DirectionPolicy;
}

/** A local endpoint whose policy is computed. */
export interface PolicyEndpoint {
  id: number;
  namespace: string;
  identity: number;
  /** Identity labels (see identity.endpointLabels). */
  labels: Labels;
  /** Container ports by name, for named ports in ingress rules. */
  namedPorts?: Record<string, { port: number; protocol: string }>;
  /** Node labels, for host policies (CCNP nodeSelector). */
  nodeLabels?: Labels;
}

export interface ServiceInfo {
  namespace: string;
  name: string;
  labels: Labels;
  /** Pod selector; absent for services whose endpoints are set by hand. */
  selector?: Record<string, string>;
  /** Endpoint IPs of selector-less services. */
  ips?: string[];
}

/** A change to one endpoint's entries. A list of diffs applies in order (removed, then added, per diff). */
export interface EndpointDiff {
  endpoint: number;
  added: PolicyEntry[];
  removed: PolicyEntry[];
  /** Present when enforcement changed. */
  enforced?: Record<Direction, boolean>;
}

export type EnforcementMode = 'default' | 'always' | 'never';

interface IdentityInfo {
  labels: Labels;
  namedPorts?: Record<string, { port: number; protocol: string }>;
}

const RESERVED_LABELS: [number, Labels][] = [
  [ReservedIdentity.Host, { 'reserved:host': '' }],
  [ReservedIdentity.World, { 'reserved:world': '' }],
  [ReservedIdentity.Unmanaged, { 'reserved:unmanaged': '' }],
  [ReservedIdentity.Health, { 'reserved:health': '' }],
  [ReservedIdentity.Init, { 'reserved:init': '' }],
  [ReservedIdentity.RemoteNode, { 'reserved:remote-node': '' }],
  [ReservedIdentity.KubeApiserver, { 'reserved:kube-apiserver': '' }],
  [ReservedIdentity.Ingress, { 'reserved:ingress': '' }],
];

const CLUSTER_RESERVED = [1, 3, 4, 5, 6, 7, 8];

export class PolicyRepository {
  readonly #policies = new Map<string, Policy>();
  readonly #identities = new Map<number, IdentityInfo>(
    RESERVED_LABELS.map(([id, labels]) => [id, { labels }]),
  );
  readonly #endpoints = new Map<number, PolicyEndpoint>();
  readonly #services = new Map<string, ServiceInfo>();
  readonly #dns = new Map<string, Map<string, number>>(); // name -> ip -> expiry (ms)
  readonly #results = new Map<number, EndpointPolicy>();
  /** Which endpoints each policy selects. */
  readonly #selected = new Map<string, Set<number>>();
  /** The other way round: the policies selecting each endpoint. */
  readonly #selecting = new Map<number, Set<string>>();
  readonly #byNamespace = new Map<string, Set<number>>();
  readonly #selectorCache = new Map<string, { selector: LabelSelector; ids: Set<number> }>();
  readonly #cookies = new Map<string, number>();
  readonly #cookieRefs: RuleRef[] = [];
  readonly local = new LocalIdentities();
  mode: EnforcementMode;
  /** While loading in bulk, endpoints to recompute once at the end. */
  #pending: Set<number> | undefined;

  /**
   * Cilium's --allow-localhost=always (its default): the node's own traffic to its
   * endpoints (kubelet probes, the node's processes) passes ingress policy, as an L3 allow
   * of reserved:host that more specific entries (L4, L7, deny) still override.
   */
  allowLocalhost: boolean;

  constructor(opts: { mode?: EnforcementMode; allowLocalhost?: boolean } = {}) {
    this.mode = opts.mode ?? 'default';
    this.allowLocalhost = opts.allowLocalhost ?? true;
  }

  // ------------------------------------------------------------------ inputs

  /** Adds or replaces a policy; returns the changes to affected endpoints. */
  upsertPolicy(p: Policy): EndpointDiff[] {
    const key = policyKey(p.origin);
    const before = new Set(this.#selected.get(key) ?? []);
    this.#policies.set(key, p);
    for (const id of before) this.#setSelected(key, id, false);
    // A namespaced policy can only select endpoints of its namespace.
    const candidates =
      p.subject.namespace !== undefined
        ? (this.#byNamespace.get(p.subject.namespace) ?? [])
        : this.#endpoints.keys();
    for (const id of candidates) {
      const ep = this.#endpoints.get(id);
      if (ep && this.#selects(p, ep)) this.#setSelected(key, id, true);
    }
    const touched = new Set([...before, ...(this.#selected.get(key) ?? [])]);
    this.#allocateFqdn(p, touched);
    return this.#recompute(touched);
  }

  deletePolicy(origin: PolicyOrigin): EndpointDiff[] {
    const key = policyKey(origin);
    const before = new Set(this.#selected.get(key) ?? []);
    this.#policies.delete(key);
    for (const id of before) this.#setSelected(key, id, false);
    this.#selected.delete(key);
    return this.#recompute(before);
  }

  /** Makes an identity known (a pod with these labels exists somewhere in the cluster). */
  upsertIdentity(id: number, labels: Labels, namedPorts?: IdentityInfo['namedPorts']): EndpointDiff[] {
    return this.#refreshIdentity(this.#learnIdentity(id, labels, namedPorts), id);
  }

  /** Records an identity and returns the endpoints whose policy may change. */
  #learnIdentity(id: number, labels: Labels, namedPorts?: IdentityInfo['namedPorts']): Set<number> {
    const old = this.#identities.get(id);
    const info: IdentityInfo = { labels };
    if (namedPorts) info.namedPorts = namedPorts;
    this.#identities.set(id, info);
    for (const c of this.#selectorCache.values()) {
      if (matches(c.selector, labels)) c.ids.add(id);
      else c.ids.delete(id);
    }
    return this.#affectedByIdentity([labels, ...(old ? [old.labels] : [])]);
  }

  deleteIdentity(id: number): EndpointDiff[] {
    const old = this.#identities.get(id);
    if (!old || id < 256) return [];
    this.#identities.delete(id);
    for (const c of this.#selectorCache.values()) c.ids.delete(id);
    return this.#refreshIdentity(this.#affectedByIdentity([old.labels]), id);
  }

  /** Adds or updates a local endpoint (its identity must be known or is made known). */
  upsertEndpoint(ep: PolicyEndpoint): EndpointDiff[] {
    const known = this.#identities.get(ep.identity);
    const peers =
      !known || labelsDiffer(known.labels, ep.labels)
        ? this.#learnIdentity(ep.identity, ep.labels, ep.namedPorts)
        : new Set<number>();
    const previous = this.#endpoints.get(ep.id);
    if (previous && previous.namespace !== ep.namespace)
      this.#byNamespace.get(previous.namespace)?.delete(ep.id);
    this.#endpoints.set(ep.id, ep);
    const inNs = this.#byNamespace.get(ep.namespace);
    if (inNs) inNs.add(ep.id);
    else this.#byNamespace.set(ep.namespace, new Set([ep.id]));
    for (const key of [...(this.#selecting.get(ep.id) ?? [])]) this.#setSelected(key, ep.id, false);
    for (const [key, p] of this.#policies) if (this.#selects(p, ep)) this.#setSelected(key, ep.id, true);
    return [...this.#refreshIdentity(peers, ep.identity), ...this.#recompute(new Set([ep.id]))];
  }

  deleteEndpoint(id: number): EndpointDiff[] {
    const old = this.#results.get(id);
    const ep = this.#endpoints.get(id);
    if (ep) this.#byNamespace.get(ep.namespace)?.delete(id);
    this.#endpoints.delete(id);
    this.#results.delete(id);
    for (const key of this.#selecting.get(id) ?? []) this.#selected.get(key)?.delete(id);
    this.#selecting.delete(id);
    if (!old) return [];
    return [
      { endpoint: id, added: [], removed: [...old.ingress.entries.values(), ...old.egress.entries.values()] },
    ];
  }

  upsertService(s: ServiceInfo): EndpointDiff[] {
    this.#services.set(`${s.namespace}/${s.name}`, s);
    return this.#recompute(
      this.#endpointsOfPolicies((p) => p.rules.some((r) => peersOf(r).some((x) => x.type === 'service'))),
    );
  }

  deleteService(namespace: string, name: string): EndpointDiff[] {
    this.#services.delete(`${namespace}/${name}`);
    return this.#recompute(
      this.#endpointsOfPolicies((p) => p.rules.some((r) => peersOf(r).some((x) => x.type === 'service'))),
    );
  }

  /**
   * A DNS answer seen by the proxy: its IPs become FQDN identities for the policies
   * whose toFQDNs select the name, until `expiresAt` (ms since epoch).
   */
  dnsAnswer(name: string, ips: readonly string[], expiresAt: number): EndpointDiff[] {
    const n = name.toLowerCase().replace(/\.$/, '');
    const known = this.#dns.get(n) ?? new Map<string, number>();
    const selected = this.#endpointsForName(n);
    const touched = new Set(selected);
    let changed = false;
    for (const ip of ips) {
      if (!known.has(ip)) changed = true;
      known.set(ip, Math.max(known.get(ip) ?? 0, expiresAt));
      // Only names a toFQDNs selects get identities (and, from the agent, ipcache entries).
      if (selected.size) this.#fqdnIdentity(ip, touched);
    }
    this.#dns.set(n, known);
    return changed ? this.#recompute(touched) : [];
  }

  /** Highest node-local identity this repository saw allocated for an FQDN: a larger one is new. */
  #maxFqdnIdentity = 0;

  /**
   * The FQDN identity of an IP. A new one joins the `world` entity and every CIDR that
   * contains the IP: endpoints whose rules use those are added to `touched`, or their
   * entries would miss it once the IP has it in the ipcache.
   */
  #fqdnIdentity(ip: string, touched: Set<number>): number {
    const prefix = `${ip}/${ip.includes(':') ? 128 : 32}`;
    const id = this.local.forPrefix(prefix);
    if (id > this.#maxFqdnIdentity) {
      this.#maxFqdnIdentity = id;
      const covers = (x: Peer) =>
        (x.type === 'entity' && x.entity === 'world') || (x.type === 'cidr' && cidrContains(x.cidr, prefix));
      for (const e of this.#endpointsOfPolicies((p) => p.rules.some((r) => peersOf(r).some(covers))))
        touched.add(e);
    }
    return id;
  }

  /** Identities for the learned names a policy's toFQDNs select (a policy added after the answers). */
  #allocateFqdn(p: Policy, touched: Set<number>): void {
    const selectors = p.rules.flatMap((r) =>
      peersOf(r).flatMap((x) => (x.type === 'fqdn' ? [compileSelector(x.selector)] : [])),
    );
    if (selectors.length === 0) return;
    for (const [name, ips] of this.#dns)
      if (selectors.some((m) => m(name))) for (const ip of ips.keys()) this.#fqdnIdentity(ip, touched);
  }

  /** Forgets DNS IPs that expired before `now` unless `inUse` says a connection holds them. */
  expireDns(now: number, inUse: (ip: string) => boolean = () => false): EndpointDiff[] {
    const touched = new Set<number>();
    for (const [name, ips] of this.#dns) {
      for (const [ip, exp] of ips) {
        if (exp > now || inUse(ip)) continue;
        ips.delete(ip);
        for (const id of this.#endpointsForName(name)) touched.add(id);
      }
      if (ips.size === 0) this.#dns.delete(name);
    }
    return this.#recompute(touched);
  }

  // ----------------------------------------------------------------- outputs

  /** The computed policy of a local endpoint. */
  endpointPolicy(id: number): EndpointPolicy | undefined {
    return this.#results.get(id);
  }

  policies(): Policy[] {
    return [...this.#policies.values()];
  }

  endpoints(): PolicyEndpoint[] {
    return [...this.#endpoints.values()];
  }

  identities(): [number, Labels][] {
    return [...this.#identities.entries()].map(([id, i]) => [id, i.labels]);
  }

  /** Whether a toFQDNs selector of a policy on a local endpoint selects the name (its IPs then need FQDN identities). */
  fqdnSelects(name: string): boolean {
    return this.#endpointsForName(name.toLowerCase().replace(/\.$/, '')).size > 0;
  }

  dnsCache(): { name: string; ip: string; expiresAt: number }[] {
    return [...this.#dns].flatMap(([name, ips]) =>
      [...ips].map(([ip, expiresAt]) => ({ name, ip, expiresAt })),
    );
  }

  /** The rule a cookie names. */
  ruleOf(cookie: number): RuleRef | undefined {
    return this.#cookieRefs[cookie - 1];
  }

  /** Recomputes every endpoint (first load); returns their full entries as diffs. */
  computeAll(): EndpointDiff[] {
    return this.#recompute(new Set(this.#endpoints.keys()));
  }

  /** Computes the policy an endpoint with these labels would get, without storing it. */
  evaluate(ep: PolicyEndpoint): EndpointPolicy {
    const selecting = [...this.#policies.values()].filter((p) => this.#selects(p, ep));
    return this.#compute(ep, selecting);
  }

  // ---------------------------------------------------------------- internals

  #setSelected(key: string, id: number, selected: boolean): void {
    const eps = this.#selected.get(key);
    const pols = this.#selecting.get(id);
    if (!selected) {
      eps?.delete(id);
      pols?.delete(key);
      return;
    }
    if (eps) eps.add(id);
    else this.#selected.set(key, new Set([id]));
    if (pols) pols.add(key);
    else this.#selecting.set(id, new Set([key]));
  }

  #selectingPolicies(id: number): Policy[] {
    const out: Policy[] = [];
    for (const key of this.#selecting.get(id) ?? []) {
      const p = this.#policies.get(key);
      if (p) out.push(p);
    }
    return out;
  }

  #selects(p: Policy, ep: PolicyEndpoint): boolean {
    if (p.subject.namespace !== undefined && p.subject.namespace !== ep.namespace) return false;
    if (p.subject.nodeSelector)
      return ep.nodeLabels !== undefined && matches(p.subject.nodeSelector, ep.nodeLabels);
    if (ep.nodeLabels !== undefined) return false; // host endpoints take only host policies
    return matches(p.subject.selector, ep.labels);
  }

  #endpointsOfPolicies(pred: (p: Policy) => boolean): Set<number> {
    const out = new Set<number>();
    for (const [key, p] of this.#policies)
      if (pred(p)) for (const id of this.#selected.get(key) ?? []) out.add(id);
    return out;
  }

  #affectedByIdentity(labelSets: Labels[]): Set<number> {
    return this.#endpointsOfPolicies((p) =>
      p.rules.some(
        (r) =>
          [...peersOf(r).flatMap((x) => (x.type === 'endpoints' ? [x.selector] : [])), ...r.requires].some(
            (s) => labelSets.some((l) => matches(s, l)),
          ) ||
          (r.peers !== 'all' && r.peers.some((x) => x.type === 'entity' && x.entity === 'cluster')) ||
          peersOf(r).some((x) => x.type === 'service'),
      ),
    );
  }

  #endpointsForName(name: string): Set<number> {
    return this.#endpointsOfPolicies((p) =>
      p.rules.some((r) => peersOf(r).some((x) => x.type === 'fqdn' && compileSelector(x.selector)(name))),
    );
  }

  /**
   * Applies many changes and recomputes each affected endpoint once at the end (initial
   * sync, a folder of manifests). Returns the combined diffs.
   */
  bulk(fn: () => void): EndpointDiff[] {
    if (this.#pending) {
      fn();
      return [];
    }
    const pending = new Set<number>();
    this.#pending = pending;
    try {
      fn();
    } catch (err) {
      // Whatever was applied before the failure still gets its policy computed.
      this.#pending = undefined;
      this.#recompute(pending);
      throw err;
    }
    this.#pending = undefined;
    return this.#recompute(pending);
  }

  /**
   * An identity appeared, changed or went: only the entries for that identity can change
   * on the endpoints whose rules select it, so only those are computed (as Cilium's
   * selector cache does), instead of the endpoints' whole policy.
   */
  #refreshIdentity(ids: Set<number>, identity: number): EndpointDiff[] {
    if (this.#pending || ids.size === 0) return this.#recompute(ids);
    const diffs: EndpointDiff[] = [];
    const full = new Set<number>();
    const shared = new Map<
      EndpointPolicy,
      { next: EndpointPolicy; diff: Omit<EndpointDiff, 'endpoint'> | undefined }
    >();
    for (const id of ids) {
      const ep = this.#endpoints.get(id);
      const prev = this.#results.get(id);
      if (!ep) continue;
      if (!prev) {
        full.add(id);
        continue;
      }
      let done = shared.get(prev);
      if (!done) {
        const contributions = new Map<string, Contribution[]>();
        if (this.mode !== 'never') {
          for (const p of this.#selectingPolicies(id)) {
            for (const rule of p.rules)
              if (this.#ruleCovers(rule, identity)) this.#ruleEntries(ep, p, rule, contributions, identity);
          }
        }
        if (identity === ReservedIdentity.Host && prev.ingress.enforced) this.#localhost(contributions);
        // Every endpoint sharing this result has the same selecting policies, so all of
        // them are in `ids`: the shared result is updated in place, entries of this
        // identity only (found through a per-identity index, not a scan).
        const added: PolicyEntry[] = [];
        const removed: PolicyEntry[] = [];
        const fresh = new Map<string, PolicyEntry>();
        for (const [k, cs] of contributions) fresh.set(k, resolve(cs));
        propagateDenies(fresh.values());
        for (const dir of DIRECTIONS) {
          const dp = prev[dir];
          const index = identityIndex(dp);
          for (const k of [...(index.get(identity) ?? [])]) {
            const old = dp.entries.get(k)!;
            const now = fresh.get(k);
            if (now && sameEntry(old, now)) {
              fresh.delete(k);
              continue;
            }
            removed.push(old);
            dp.entries.delete(k);
            index.get(identity)!.delete(k);
          }
        }
        for (const [k, e] of fresh) {
          const dp = prev[e.direction];
          dp.entries.set(k, e);
          const index = identityIndex(dp);
          const set = index.get(identity) ?? new Set<string>();
          set.add(k);
          index.set(identity, set);
          added.push(e);
        }
        done = { next: prev, diff: added.length || removed.length ? { added, removed } : undefined };
        shared.set(prev, done);
      }
      if (done.diff) diffs.push({ endpoint: id, ...done.diff });
    }
    return [...diffs, ...this.#recompute(full)];
  }

  /** Whether a rule's peers (after fromRequires) include one identity. */
  #ruleCovers(rule: Rule, identity: number): boolean {
    if (rule.peers === 'all') return false; // its entries are for "any", which no identity change touches
    const info = this.#identities.get(identity);
    const hit = rule.peers.some((peer) => {
      if (peer.type === 'endpoints') return this.#selectorIds(peer.selector).has(identity);
      const ids = this.#resolvePeer(peer);
      return ids !== 'any' && [...ids].includes(identity);
    });
    return hit && rule.requires.every((s) => info !== undefined && matches(s, info.labels));
  }

  #recompute(ids: Set<number>): EndpointDiff[] {
    if (this.#pending) {
      for (const id of ids) this.#pending.add(id);
      return [];
    }
    const diffs: EndpointDiff[] = [];
    // Endpoints with the same identity, namespace and named ports get the same policy,
    // and endpoints that had the same policy before get the same difference.
    const shared = new Map<string, EndpointPolicy>();
    const sharedDiffs = new Map<
      EndpointPolicy | undefined,
      Map<EndpointPolicy, Omit<EndpointDiff, 'endpoint'> | undefined>
    >();
    for (const id of ids) {
      const ep = this.#endpoints.get(id);
      if (!ep) continue;
      const sig = `${ep.identity}|${ep.namespace}|${JSON.stringify(ep.namedPorts ?? {})}|${ep.nodeLabels ? JSON.stringify(ep.nodeLabels) : ''}`;
      let next = shared.get(sig);
      if (!next) {
        const selecting: Policy[] = [];
        selecting.push(...this.#selectingPolicies(id));
        next = this.#compute(ep, selecting);
        shared.set(sig, next);
      }
      const prev = this.#results.get(id);
      this.#results.set(id, next);
      let byNext = sharedDiffs.get(prev);
      if (!byNext) {
        byNext = new Map();
        sharedDiffs.set(prev, byNext);
      }
      let d = byNext.get(next);
      if (!byNext.has(next)) {
        d = diffPolicies(prev, next);
        byNext.set(next, d);
      }
      if (d) diffs.push({ endpoint: id, ...d });
    }
    return diffs;
  }

  #cookie(p: Policy, rule: Rule): number {
    const k = `${policyKey(p.origin)}:${rule.path}`;
    let c = this.#cookies.get(k);
    if (c === undefined) {
      this.#cookieRefs.push({ ...p.origin, path: rule.path });
      c = this.#cookieRefs.length;
      this.#cookies.set(k, c);
    }
    return c;
  }

  #compute(ep: PolicyEndpoint, selecting: Policy[]): EndpointPolicy {
    const out = {} as EndpointPolicy;
    for (const dir of DIRECTIONS) {
      const enforcing = selecting.filter((p) => p.enforces[dir]);
      const enforced = this.mode === 'always' || (this.mode === 'default' && enforcing.length > 0);
      const contributions = new Map<string, Contribution[]>();
      if (this.mode !== 'never') {
        for (const p of selecting) {
          for (const rule of p.rules) {
            if (rule.direction !== dir) continue;
            this.#ruleEntries(ep, p, rule, contributions);
          }
        }
      }
      if (dir === 'ingress' && enforced) this.#localhost(contributions);
      const entries = new Map<string, PolicyEntry>();
      const index = new Map<number, Set<string>>();
      for (const [key, cs] of contributions) {
        const e = resolve(cs);
        entries.set(key, e);
        const set = index.get(e.identity);
        if (set) set.add(key);
        else index.set(e.identity, new Set([key]));
      }
      propagateDenies(entries.values());
      out[dir] = { enforced, selectedBy: enforcing.map((p) => p.origin), entries };
      identityIndexes.set(out[dir], index);
    }
    return out;
  }

  /** The allow-localhost entry (no rule: cookie 0), among an enforced ingress's contributions. */
  #localhost(into: Map<string, Contribution[]>): void {
    if (!this.allowLocalhost) return;
    const entry: PolicyEntry = {
      direction: 'ingress',
      identity: ReservedIdentity.Host,
      protocol: 0,
      port: 0,
      portPrefixLen: 0,
      cookie: 0,
      verdict: 'allow',
    };
    const key = entryKey(entry);
    const c: Contribution = { entry, deny: false };
    const list = into.get(key);
    if (list) list.push(c);
    else into.set(key, [c]);
  }

  #ruleEntries(
    ep: PolicyEndpoint,
    p: Policy,
    rule: Rule,
    into: Map<string, Contribution[]>,
    only?: number,
  ): void {
    let identities: Set<number> | 'any' = only !== undefined ? new Set([only]) : this.#peerIdentities(rule);
    if (identities !== 'any' && identities.size === 0) return;
    if (rule.requires.length && only === undefined) {
      const base = identities === 'any' ? new Set(this.#identities.keys()) : identities;
      identities = new Set(
        [...base].filter((id) =>
          rule.requires.every((s) => matches(s, this.#identities.get(id)?.labels ?? {})),
        ),
      );
    }
    const ids = identities === 'any' ? [0] : [...identities];
    const cookie = this.#cookie(p, rule);
    const add = (
      identity: number,
      protocol: number,
      port: number,
      prefixLen: number,
      l7?: PolicyEntry['l7'],
    ) => {
      const key = entryKey({ direction: rule.direction, identity, protocol, port, portPrefixLen: prefixLen });
      const c: Contribution = {
        entry: {
          direction: rule.direction,
          identity,
          protocol,
          port,
          portPrefixLen: prefixLen,
          cookie,
          verdict: 'allow',
        },
        deny: rule.deny,
      };
      if (l7) c.l7 = l7;
      if (rule.authType !== undefined) c.authType = rule.authType;
      const list = into.get(key);
      if (list) list.push(c);
      else into.set(key, [c]);
    };
    const l4 = rule.portGroups.flatMap((g) =>
      (g.ports.length ? g.ports : [{ protocol: 'ANY' } as PortSpec]).map((ps) => ({ ps, l7: g.l7 })),
    );
    for (const id of ids) {
      if (l4.length === 0 && rule.icmps.length === 0) add(id, 0, 0, 0);
      for (const { ps, l7 } of l4) {
        for (const [protocol, port, prefixLen] of this.#expandPort(ps, ep, rule.direction, id))
          add(id, protocol, port, prefixLen, l7);
      }
      for (const icmp of rule.icmps) add(id, icmp.family === 4 ? ICMP : ICMPV6, icmp.type, 16);
    }
  }

  /** [protocol, port, prefixLen] triples for one port spec. */
  #expandPort(ps: PortSpec, ep: PolicyEndpoint, dir: Direction, peer: number): [number, number, number][] {
    const protos =
      ps.protocol === 'ANY' ? (ps.port === undefined ? [0] : [6, 17, 132]) : [PROTO_NUMBERS[ps.protocol]];
    if (ps.port === undefined) return protos.map((p) => [p, 0, 0]);
    if (typeof ps.port === 'string') {
      // Named ports: ingress resolves against this endpoint's containers, egress against the peer's.
      const named = dir === 'ingress' ? ep.namedPorts : this.#identities.get(peer)?.namedPorts;
      const np = named?.[ps.port];
      if (!np) return [];
      const proto = PROTO_NUMBERS[np.protocol as 'TCP'] ?? 6;
      return protos.includes(proto) || protos.includes(0) ? [[proto, np.port, 16]] : [];
    }
    const blocks = portBlocks(ps.port, ps.endPort ?? ps.port);
    return protos.flatMap((p) => blocks.map((b): [number, number, number] => [p, b.port, b.prefixLen]));
  }

  #peerIdentities(rule: Rule): Set<number> | 'any' {
    if (rule.peers === 'all') return 'any';
    const out = new Set<number>();
    for (const peer of rule.peers) {
      const ids = this.#resolvePeer(peer);
      if (ids === 'any') return 'any';
      for (const id of ids) out.add(id);
    }
    return out;
  }

  #resolvePeer(peer: Peer): Iterable<number> | 'any' {
    switch (peer.type) {
      case 'endpoints':
        return this.#selectorIds(peer.selector);
      case 'entity':
        return this.#entityIds(peer.entity);
      case 'cidr': {
        const own = this.local.forPrefix(peer.cidr);
        for (const e of peer.except) this.local.forPrefix(e);
        const ids = [own];
        for (const [prefix, id] of this.local.entries()) {
          if (id === own || !cidrContains(peer.cidr, prefix)) continue;
          if (peer.except.some((e) => cidrContains(e, prefix))) continue;
          ids.push(id);
        }
        if (peer.cidr === '0.0.0.0/0' || peer.cidr === '::/0') ids.push(ReservedIdentity.World);
        return ids;
      }
      case 'fqdn': {
        const match = compileSelector(peer.selector);
        const ids: number[] = [];
        for (const [name, ips] of this.#dns) {
          if (!match(name)) continue;
          for (const ip of ips.keys()) ids.push(this.local.forPrefix(`${ip}/${ip.includes(':') ? 128 : 32}`));
        }
        return ids;
      }
      case 'service': {
        const services = [...this.#services.values()].filter(
          (s) =>
            s.namespace === peer.namespace &&
            (peer.name !== undefined ? s.name === peer.name : matches(peer.selector ?? {}, s.labels)),
        );
        const ids: number[] = [];
        for (const s of services) {
          if (s.selector) {
            ids.push(
              ...this.#selectorIds({ matchLabels: { ...s.selector, [NAMESPACE_LABEL]: s.namespace } }),
            );
          }
          for (const ip of s.ips ?? []) ids.push(this.local.forPrefix(`${ip}/32`));
        }
        return ids;
      }
    }
  }

  #entityIds(
    entity: Peer & { type: 'entity' } extends { entity: infer E } ? E : never,
  ): Iterable<number> | 'any' {
    switch (entity) {
      case 'all':
        return 'any';
      case 'world':
        return [ReservedIdentity.World, ...this.local.entries().map(([, id]) => id)];
      case 'cluster':
        return [...CLUSTER_RESERVED, ...[...this.#identities.keys()].filter((id) => id >= 256)];
      case 'host':
        return [ReservedIdentity.Host];
      case 'remote-node':
        return [ReservedIdentity.RemoteNode];
      case 'kube-apiserver':
        return [ReservedIdentity.KubeApiserver];
      case 'health':
        return [ReservedIdentity.Health];
      case 'init':
        return [ReservedIdentity.Init];
      case 'unmanaged':
        return [ReservedIdentity.Unmanaged];
      case 'ingress':
        return [ReservedIdentity.Ingress];
    }
  }

  #selectorIds(selector: LabelSelector): Set<number> {
    const key = selectorKey(selector);
    let c = this.#selectorCache.get(key);
    if (!c) {
      const ids = new Set<number>();
      for (const [id, info] of this.#identities) if (matches(selector, info.labels)) ids.add(id);
      c = { selector, ids };
      this.#selectorCache.set(key, c);
    }
    return c.ids;
  }
}

interface Contribution {
  entry: PolicyEntry;
  deny: boolean;
  l7?: PolicyEntry['l7'];
  authType?: number;
}

/** Deny beats everything; L7 makes a redirect (plain allows at the same key allow all of L7); then auth. */
function resolve(cs: Contribution[]): PolicyEntry {
  // The common case, one plain rule: its entry (made fresh for this computation) is the answer.
  if (cs.length === 1) {
    const c = cs[0]!;
    if (c.deny) c.entry.verdict = 'deny';
    else if (!c.l7?.http && !c.l7?.dns) {
      if (c.authType !== undefined) {
        c.entry.verdict = 'auth';
        c.entry.authType = c.authType;
      }
      return c.entry;
    }
    if (c.deny) return c.entry;
  }
  const deny = cs.find((c) => c.deny);
  if (deny) return { ...deny.entry, verdict: 'deny' };
  const l7s = cs.filter((c) => c.l7?.http || c.l7?.dns);
  if (l7s.length) {
    const first = l7s[0]!;
    const http = l7s.flatMap((c) => c.l7?.http ?? []);
    const dns = l7s.flatMap((c) => c.l7?.dns ?? []);
    const plain = cs.some((c) => !c.l7?.http && !c.l7?.dns);
    const entry: PolicyEntry = {
      ...first.entry,
      verdict: 'redirect',
      proxy: http.length ? 'http' : 'dns',
      l7: {},
    };
    if (http.length) entry.l7!.http = plain ? [...http, {}] : http;
    if (dns.length) entry.l7!.dns = plain ? [...dns, { matchPattern: '*' }] : dns;
    return entry;
  }
  const auth = cs.find((c) => c.authType !== undefined);
  if (auth) return { ...auth.entry, verdict: 'auth', authType: auth.authType! };
  return { ...cs[0]!.entry, verdict: 'allow' };
}

function peersOf(r: Rule): Peer[] {
  return r.peers === 'all' ? [] : r.peers;
}

function sameEntry(a: PolicyEntry, b: PolicyEntry): boolean {
  return (
    a.verdict === b.verdict &&
    a.cookie === b.cookie &&
    a.authType === b.authType &&
    a.proxy === b.proxy &&
    (a.l7 === b.l7 || JSON.stringify(a.l7) === JSON.stringify(b.l7))
  );
}

function diffPolicies(
  prev: EndpointPolicy | undefined,
  next: EndpointPolicy,
): Omit<EndpointDiff, 'endpoint'> | undefined {
  const added: PolicyEntry[] = [];
  const removed: PolicyEntry[] = [];
  for (const dir of DIRECTIONS) {
    const before = prev?.[dir].entries ?? new Map<string, PolicyEntry>();
    const after = next[dir].entries;
    for (const [k, e] of after) {
      const old = before.get(k);
      if (!old) added.push(e);
      else if (!sameEntry(old, e)) {
        removed.push(old);
        added.push(e);
      }
    }
    for (const [k, e] of before) if (!after.has(k)) removed.push(e);
  }
  const enforcedChanged = !prev || DIRECTIONS.some((d) => prev[d].enforced !== next[d].enforced);
  if (!added.length && !removed.length && !enforcedChanged) return undefined;
  const d: Omit<EndpointDiff, 'endpoint'> = { added, removed };
  if (enforcedChanged) d.enforced = { ingress: next.ingress.enforced, egress: next.egress.enforced };
  return d;
}

/**
 * A deny covering an allow of the same identity and direction turns it into a deny, so a
 * longest-prefix lookup (the datapath's) can never find the allow and miss the deny.
 */
function propagateDenies(entries: Iterable<PolicyEntry>): void {
  const all = [...entries];
  const denies = all.filter((e) => e.verdict === 'deny');
  if (denies.length === 0) return;
  for (const e of all) {
    if (e.verdict === 'deny') continue;
    const d = denies.find(
      (x) =>
        x.identity === e.identity &&
        x.direction === e.direction &&
        (x.protocol === 0 || x.protocol === e.protocol) &&
        x.portPrefixLen <= e.portPrefixLen &&
        blockContains({ port: x.port, prefixLen: x.portPrefixLen }, e.port),
    );
    if (!d) continue;
    e.verdict = 'deny';
    e.cookie = d.cookie;
    delete e.proxy;
    delete e.l7;
    delete e.authType;
  }
}

const identityIndexes = new WeakMap<DirectionPolicy, Map<number, Set<string>>>();

/** Entry keys by peer identity, built on first use and kept up to date by #refreshIdentity. */
function identityIndex(dp: DirectionPolicy): Map<number, Set<string>> {
  let index = identityIndexes.get(dp);
  if (!index) {
    index = new Map();
    for (const [k, e] of dp.entries) {
      const set = index.get(e.identity) ?? new Set<string>();
      set.add(k);
      index.set(e.identity, set);
    }
    identityIndexes.set(dp, index);
  }
  return index;
}

function labelsDiffer(a: Labels, b: Labels): boolean {
  const ka = Object.keys(a);
  return ka.length !== Object.keys(b).length || ka.some((k) => a[k] !== b[k]);
}
