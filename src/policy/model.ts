/**
 * The policy model every kind of policy is parsed into: who a policy selects, and its
 * rules per direction, each with peers, ports and optional L7 rules. NetworkPolicy,
 * CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy differ only in parsing.
 */
import type { DnsSelector } from '../dns/pattern.js';
import type { LabelSelector } from '../k8s/selector.js';
import type { HttpRule } from './http.js';

export type Direction = 'ingress' | 'egress';
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

export type PolicyKind = 'NetworkPolicy' | 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy';

export interface PolicyOrigin {
  kind: PolicyKind;
  namespace?: string;
  name: string;
  /** Index in a Cilium policy's `specs` list. */
  part?: number;
}

export function policyKey(o: PolicyOrigin): string {
  return `${o.kind}/${o.namespace ?? ''}/${o.name}${o.part === undefined ? '' : `#${o.part}`}`;
}

export function formatOrigin(o: PolicyOrigin): string {
  return `${o.kind} ${o.namespace ? `${o.namespace}/` : ''}${o.name}`;
}

export const ENTITIES = [
  'all',
  'world',
  'cluster',
  'host',
  'remote-node',
  'kube-apiserver',
  'health',
  'init',
  'unmanaged',
  'ingress',
] as const;
export type Entity = (typeof ENTITIES)[number];

/** Who a rule allows or denies on the other side. */
export type Peer =
  /** Endpoints by labels (identity labels, namespace scoping already folded in). */
  | { type: 'endpoints'; selector: LabelSelector }
  | { type: 'entity'; entity: Entity }
  | { type: 'cidr'; cidr: string; except: string[] }
  | { type: 'fqdn'; selector: DnsSelector }
  | { type: 'service'; namespace: string; name?: string; selector?: LabelSelector };

export type Protocol = 'TCP' | 'UDP' | 'SCTP' | 'ANY';

export const PROTO_NUMBERS: Record<Exclude<Protocol, 'ANY'>, number> = { TCP: 6, UDP: 17, SCTP: 132 };
export const ICMP = 1;
export const ICMPV6 = 58;

export interface PortSpec {
  protocol: Protocol;
  /** A number, or a container port name to resolve. Absent: every port. */
  port?: number | string;
  endPort?: number;
}

export interface L7Rules {
  http?: HttpRule[];
  dns?: DnsSelector[];
}

/** One `toPorts` entry: ports (empty: every port of every protocol) and their L7 rules. */
export interface PortGroup {
  ports: PortSpec[];
  l7?: L7Rules;
}

export interface Rule {
  direction: Direction;
  deny: boolean;
  /** `all` when the rule does not restrict peers; empty when it selects none. */
  peers: Peer[] | 'all';
  /** fromRequires/toRequires: every peer must also match all of these. */
  requires: LabelSelector[];
  /** Empty: any protocol and port. */
  portGroups: PortGroup[];
  icmps: { family: 4 | 6; type: number }[];
  /** Auth type when `authentication.mode` requires it (1 = spire, 2 = test-always-fail). */
  authType?: number;
  /** Where it came from in the manifest, e.g. `spec.ingress[0]`. */
  path: string;
  description?: string;
}

export interface Policy {
  origin: PolicyOrigin;
  /** Endpoints this policy applies to. */
  subject: {
    selector: LabelSelector;
    /** Only endpoints in this namespace (namespaced kinds). */
    namespace?: string;
    /** CCNP host policies select nodes. */
    nodeSelector?: LabelSelector;
  };
  rules: Rule[];
  /** Directions in which selected endpoints become default-deny. */
  enforces: Record<Direction, boolean>;
  labels?: Record<string, string>;
  /** The spec's `description`, shown by `policy get` and in traces. */
  description?: string;
}
