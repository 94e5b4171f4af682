/**
 * The agent's flows: every datapath event becomes a Hubble flow, enriched from what the
 * agent knows (its endpoints and their pods, remote pods from CiliumEndpoints, identities,
 * services, the policy rule behind a verdict or the policies behind a default deny) and
 * kept in a bounded ring that `hypha observe` reads.
 */

import type { DatapathEvent } from '../datapath/index.js';
import {
  DEFAULT_RING_CAPACITY,
  FlowBuilder,
  type FlowEnrichment,
  FlowRing,
  type HubbleMetrics,
  labelStrings,
} from '../hubble/index.js';
import type { Labels } from '../k8s/selector.js';
import type { PolicyRepository } from '../policy/index.js';

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

export class AgentFlows {
  readonly ring: FlowRing;
  /** Hubble's metrics, when enabled (hubble.metrics.enabled). */
  metrics: HubbleMetrics | undefined;
  readonly #builder: FlowBuilder;
  #errors = 0;

  constructor(s: FlowSources, capacity = DEFAULT_RING_CAPACITY) {
    this.ring = new FlowRing(capacity);
    // Lookups run for every flow: they read indexes rebuilt at most every INDEX_TTL_MS,
    // not the agent's lists (a new pod is named in its flows within that much).
    type Ep = ReturnType<FlowSources['endpoints']>[number];
    let index:
      | {
          at: number;
          byId: Map<number, Ep>;
          byIp: Map<string, Ep>;
          byIfindex: Map<number, Ep>;
          ids: Map<number, Labels>;
        }
      | undefined;
    const idx = () => {
      const now = Date.now();
      if (!index || now - index.at > INDEX_TTL_MS) {
        const eps = s.endpoints();
        index = {
          at: now,
          byId: new Map(eps.map((e) => [e.id, e])),
          byIp: new Map(eps.map((e) => [e.ip, e])),
          byIfindex: new Map(eps.map((e) => [e.hostIfindex, e])),
          ids: new Map(s.repo.identities()),
        };
      }
      return index;
    };
    const byId = () => idx().byId;
    const info = (e: ReturnType<FlowSources['endpoints']>[number]) => {
      const w = workloadOf(e.podName);
      return {
        id: e.id,
        identity: e.identity,
        namespace: e.podNamespace,
        podName: e.podName,
        labels: labelStrings(e.labels),
        ...(w ? { workloads: [w] } : {}),
      };
    };
    const enrichment: FlowEnrichment = {
      endpointById: (id) => {
        const e = byId().get(id);
        return e && info(e);
      },
      endpointByIp: (ip) => {
        const local = idx().byIp.get(ip);
        if (local) return info(local);
        const r = s.remote(ip);
        if (!r) return undefined;
        const labels = idx().ids.get(r.identity);
        const w = r.podName ? workloadOf(r.podName) : undefined;
        return {
          identity: r.identity,
          ...(r.namespace ? { namespace: r.namespace } : {}),
          ...(r.podName ? { podName: r.podName } : {}),
          ...(labels ? { labels: labelStrings(labels) } : {}),
          ...(w ? { workloads: [w] } : {}),
        };
      },
      identityLabels: (id) => {
        const labels = idx().ids.get(id);
        return labels && labelStrings(labels);
      },
      serviceByAddr: (ip, port) => s.service(ip, port),
      policyRule: (cookie) => {
        const r = s.repo.ruleOf(cookie);
        if (!r) return undefined;
        return { kind: r.kind, name: r.name, ...(r.namespace ? { namespace: r.namespace } : {}) };
      },
      selectingPolicies: (ep, dir) => {
        const pol = s.repo.endpointPolicy(ep);
        const d = dir === 'egress' ? pol?.egress : pol?.ingress;
        return (d?.selectedBy ?? []).map((o) => ({
          kind: o.kind,
          name: o.name,
          ...(o.namespace ? { namespace: o.namespace } : {}),
        }));
      },
      interfaceName: (ifindex) => idx().byIfindex.get(ifindex)?.hostIfname,
    };
    this.#builder = new FlowBuilder({ nodeName: s.nodeName, enrichment });
  }

  /** One datapath event into the ring. A bad record is counted, never fatal. */
  add(ev: DatapathEvent): void {
    try {
      const flow = this.#builder.build(ev);
      this.ring.writeFlow(flow);
      this.metrics?.add(flow);
    } catch {
      this.#errors++;
    }
  }

  get errors(): number {
    return this.#errors;
  }
}
