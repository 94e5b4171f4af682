/**
 * The agent's flows: every datapath event becomes a Hubble flow, enriched from what the
 * agent knows (its endpoints and their pods, remote pods from CiliumEndpoints, identities,
 * services, the policy rule behind a verdict or the policies behind a default deny) and
 * kept in a bounded ring that `hypha observe` reads.
 */

import type { DatapathEvent } from '../datapath/index.js';
import { errorMessage } from '../errors.js';
import {
  DEFAULT_RING_CAPACITY,
  type EndpointInfo,
  FlowBuilder,
  type FlowEnrichment,
  FlowRing,
  type HubbleMetrics,
  type L7Event,
  l7TimeNs,
  labelStrings,
  type PolicyRef,
  type PolicyRuleInfo,
  validateL7Event,
} from '../hubble/index.js';
import type { Labels } from '../k8s/selector.js';
import type { PolicyRepository } from '../policy/index.js';
import { checkPacked, F_EGRESS, F_RESPONSE, unpackEvent } from '../proxy/http/events.js';

export interface FlowSources {
  nodeName: string;
  repo: PolicyRepository;
  endpoints(): {
    id: number;
    ip: string;
    identity: number;
    podNamespace: string;
    podName: string;
    labels: Labels;
    hostIfindex: number;
    hostIfname: string;
  }[];
  remote(ip: string): { identity: number; namespace?: string; podName?: string } | undefined;
  service(ip: string, port: number): { name: string; namespace: string } | undefined;
}

const INDEX_TTL_MS = 250;

/** Deployment/ReplicaSet pod names end in -<hash>-<5>; DaemonSet pods in -<5>. */
function workloadOf(pod: string): { name: string; kind: string } | undefined {
  const rs = /^(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$/.exec(pod);
  if (rs) return { name: rs[1]!, kind: 'Deployment' };
  return undefined;
}

/** Names learned from DNS answers are kept at least this long (Cilium's tofqdns-min-ttl is an hour). */
const MIN_NAME_TTL_MS = 3600_000;
/** At most this many (endpoint, address) pairs are named; the oldest learned go first. */
const MAX_NAMES = 16384;

/**
 * The names each endpoint looked up, by address, from the DNS proxy's answers: what
 * Hubble's source_names/destination_names show and `--fqdn` matches.
 */
export class DnsNames {
  /** `endpoint/ip` to names and when they expire; insertion order is learning order. */
  readonly #names = new Map<string, { names: string[]; expires: number }>();

  learn(endpoint: number, ips: readonly string[], name: string, ttlSec: number, now = Date.now()): void {
    const n = name.replace(/\.$/, '');
    if (!n) return;
    const expires = now + Math.max(ttlSec * 1000, MIN_NAME_TTL_MS);
    for (const ip of ips) {
      const key = `${endpoint}/${ip}`;
      const cur = this.#names.get(key);
      const names = cur && cur.expires > now ? cur.names.filter((x) => x !== n) : [];
      names.push(n);
      names.sort();
      this.#names.delete(key);
      this.#names.set(key, { names, expires });
    }
    while (this.#names.size > MAX_NAMES) {
      const oldest = this.#names.keys().next().value;
      if (oldest === undefined) break;
      this.#names.delete(oldest);
    }
  }

  /** Names `endpoint` has for `ip` (none for endpoint 0: not a local endpoint). */
  of(endpoint: number, ip: string, now = Date.now()): readonly string[] | undefined {
    if (this.#names.size === 0 || endpoint === 0) return undefined;
    const e = this.#names.get(`${endpoint}/${ip}`);
    if (!e) return undefined;
    if (e.expires <= now) {
      this.#names.delete(`${endpoint}/${ip}`);
      return undefined;
    }
    return e.names;
  }
}

export class AgentFlows {
  readonly ring: FlowRing;
  #metrics: HubbleMetrics | undefined;
  readonly names = new DnsNames();
  readonly #builder: FlowBuilder;
  /** Rebuilds the enrichment's indexes when they are older than INDEX_TTL_MS. */
  readonly #refresh: () => unknown;
  #errors = 0;
  #l7Errors = 0;
  #lastL7Error: string | undefined;

  constructor(s: FlowSources, capacity = DEFAULT_RING_CAPACITY) {
    this.ring = new FlowRing(capacity);
    // Lookups run for every flow: they read indexes rebuilt at most every INDEX_TTL_MS,
    // not the agent's lists (a new pod is named in its flows within that much). What they
    // return is made once and reused while its source is unchanged, so that the builder
    // can reuse the Endpoint and Policy messages it makes from them.
    type Ep = ReturnType<FlowSources['endpoints']>[number];
    type Remote = NonNullable<ReturnType<FlowSources['remote']>>;
    interface Index {
      at: number;
      byId: Map<number, Ep>;
      byIp: Map<string, Ep>;
      byIfindex: Map<number, Ep>;
      ids: Map<number, Labels>;
      rules: Map<number, PolicyRuleInfo | undefined>;
      selecting: Map<string, readonly PolicyRef[]>;
    }
    let index: Index | undefined;
    // Checked once per event (add/addL7), not once per lookup.
    const refresh = (): Index => {
      const now = Date.now();
      if (!index || now - index.at > INDEX_TTL_MS) {
        const eps = s.endpoints();
        index = {
          at: now,
          byId: new Map(eps.map((e) => [e.id, e])),
          byIp: new Map(eps.map((e) => [e.ip, e])),
          byIfindex: new Map(eps.map((e) => [e.hostIfindex, e])),
          ids: new Map(s.repo.identities()),
          rules: new Map(),
          selecting: new Map(),
        };
      }
      return index;
    };
    this.#refresh = refresh;
    const idx = (): Index => index ?? refresh();
    const labelCache = new WeakMap<Labels, string[]>();
    const labelsOf = (l: Labels) => {
      let out = labelCache.get(l);
      if (!out) {
        out = labelStrings(l);
        labelCache.set(l, out);
      }
      return out;
    };
    // Endpoint records are updated in place (a relabel): the info is reused only while its fields hold.
    const localCache = new WeakMap<
      Ep,
      { identity: number; labels: Labels; podName: string; info: EndpointInfo }
    >();
    const info = (e: Ep): EndpointInfo => {
      const c = localCache.get(e);
      if (c && c.identity === e.identity && c.labels === e.labels && c.podName === e.podName) return c.info;
      const w = workloadOf(e.podName);
      const made: EndpointInfo = {
        id: e.id,
        identity: e.identity,
        namespace: e.podNamespace,
        podName: e.podName,
        labels: labelsOf(e.labels),
        ...(w ? { workloads: [w] } : {}),
      };
      localCache.set(e, { identity: e.identity, labels: e.labels, podName: e.podName, info: made });
      return made;
    };
    const remoteCache = new WeakMap<Remote, { labels: Labels | undefined; info: EndpointInfo }>();
    const remoteInfo = (r: Remote): EndpointInfo => {
      const labels = idx().ids.get(r.identity);
      const c = remoteCache.get(r);
      if (c && c.labels === labels && c.info.identity === r.identity) return c.info;
      const w = r.podName ? workloadOf(r.podName) : undefined;
      const made: EndpointInfo = {
        identity: r.identity,
        ...(r.namespace ? { namespace: r.namespace } : {}),
        ...(r.podName ? { podName: r.podName } : {}),
        ...(labels ? { labels: labelsOf(labels) } : {}),
        ...(w ? { workloads: [w] } : {}),
      };
      remoteCache.set(r, { labels, info: made });
      return made;
    };
    const enrichment: FlowEnrichment = {
      endpointById: (id) => {
        const e = idx().byId.get(id);
        return e && info(e);
      },
      endpointByIp: (ip) => {
        const local = idx().byIp.get(ip);
        if (local) return info(local);
        const r = s.remote(ip);
        return r && remoteInfo(r);
      },
      identityLabels: (id) => {
        const labels = idx().ids.get(id);
        return labels && labelsOf(labels);
      },
      serviceByAddr: (ip, port) => s.service(ip, port),
      policyRule: (cookie) => {
        const rules = idx().rules;
        if (rules.has(cookie)) return rules.get(cookie);
        const r = s.repo.ruleOf(cookie);
        const rule = r && { kind: r.kind, name: r.name, ...(r.namespace ? { namespace: r.namespace } : {}) };
        rules.set(cookie, rule);
        return rule;
      },
      selectingPolicies: (ep, dir) => {
        const selecting = idx().selecting;
        const key = `${ep}/${dir}`;
        let refs = selecting.get(key);
        if (!refs) {
          const pol = s.repo.endpointPolicy(ep);
          const d = dir === 'egress' ? pol?.egress : pol?.ingress;
          refs = (d?.selectedBy ?? []).map((o) => ({
            kind: o.kind,
            name: o.name,
            ...(o.namespace ? { namespace: o.namespace } : {}),
          }));
          selecting.set(key, refs);
        }
        return refs;
      },
      interfaceName: (ifindex) => idx().byIfindex.get(ifindex)?.hostIfname,
      namesOf: (ep, ip) => this.names.of(ep, ip),
    };
    this.#builder = new FlowBuilder({ nodeName: s.nodeName, enrichment });
  }

  /** Hubble's metrics, when enabled (hubble.metrics.enabled); they count the ring's lost events too. */
  get metrics(): HubbleMetrics | undefined {
    return this.#metrics;
  }

  set metrics(m: HubbleMetrics | undefined) {
    if (m) m.lostSource = () => this.ring.lost;
    this.#metrics = m;
  }

  /** One datapath event into the ring. A bad record is counted, never fatal. */
  add(ev: DatapathEvent): void {
    try {
      this.#refresh();
      const flow = this.#builder.build(ev);
      this.ring.writeFlow(flow, this.#builder.wallTimeNs(ev.ts_ns));
      this.#metrics?.add(flow);
    } catch {
      this.#errors++;
    }
  }

  /**
   * One L7 event from a proxy into the ring (and the metrics). A DNS answer also teaches
   * the endpoint's names for the addresses it returned. An event that fails validation is
   * counted (`l7Errors`, `lastL7Error`), never stored and never thrown: the proxy goes on.
   */
  addL7(e: L7Event): void {
    try {
      validateL7Event(e);
      this.#refresh();
      const flow = this.#builder.buildL7(e);
      if (
        e.kind === 'dns' &&
        e.dns &&
        e.type === 'response' &&
        e.verdict === 'FORWARDED' &&
        e.dns.ips.length
      ) {
        this.names.learn(e.endpointId, e.dns.ips, e.dns.query, e.dns.ttl);
      }
      this.ring.writeFlow(flow, l7TimeNs(e.time));
      this.#metrics?.add(flow);
    } catch (err) {
      this.#l7Errors++;
      this.#lastL7Error = errorMessage(err);
    }
  }

  /**
   * An HTTP proxy's event as it comes packed over IPC (events.ts). Checked and enriched at
   * once; with metrics on (they count every flow) the flow is made now, otherwise when
   * something reads it: building every flow cost the agent more CPU than the native proxy
   * spent on the request itself (measured), and most are overwritten unread.
   */
  addPacked(p: unknown): void {
    try {
      const [time, flags, ep, sip, sport, sid, dip, dport, did] = checkPacked(p);
      this.#refresh();
      const capture = this.#builder.captureL7(
        ep,
        (flags & F_EGRESS) !== 0,
        (flags & F_RESPONSE) === 0,
        { ip: sip, port: sport, identity: sid },
        { ip: dip, port: dport, identity: did },
      );
      const ns = l7TimeNs(time);
      if (this.#metrics) {
        const flow = this.#builder.buildL7(unpackEvent(p), capture);
        this.ring.writeFlow(flow, ns);
        this.#metrics.add(flow);
      } else {
        this.ring.writeLazyFlow(() => this.#builder.buildL7(unpackEvent(p), capture), ns);
      }
    } catch (err) {
      this.#l7Errors++;
      this.#lastL7Error = errorMessage(err);
    }
  }

  get errors(): number {
    return this.#errors;
  }

  /** L7 events rejected, and why the last one was. */
  get l7Errors(): number {
    return this.#l7Errors;
  }

  get lastL7Error(): string | undefined {
    return this.#lastL7Error;
  }
}
