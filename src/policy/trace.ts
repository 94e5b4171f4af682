/**
 * `policy trace`: what the datapath would decide for a connection, and why. The lookup
 * here is the datapath's: entries for the exact peer identity and for "any", deny first,
 * then the most specific protocol/port match. For a default deny it names the policies
 * that selected the endpoint.
 */
import { identityName } from '../identity/index.js';
import { CompiledRuleSet } from './http.js';
import { type Direction, formatOrigin, type PolicyOrigin } from './model.js';
import { blockContains } from './ports.js';
import type {
  DirectionPolicy,
  PolicyEndpoint,
  PolicyEntry,
  PolicyRepository,
  RuleRef,
} from './repository.js';

/** The entry the datapath would use, or undefined when none matches. */
export function lookupEntry(
  dp: DirectionPolicy,
  identity: number,
  protocol: number,
  port: number,
): PolicyEntry | undefined {
  let best: PolicyEntry | undefined;
  let bestScore = -1;
  for (const e of dp.entries.values()) {
    if (e.identity !== identity && e.identity !== 0) continue;
    if (e.protocol !== 0 && e.protocol !== protocol) continue;
    if (!blockContains({ port: e.port, prefixLen: e.portPrefixLen }, port)) continue;
    if (e.verdict === 'deny') return e;
    // Specificity: protocol, then port prefix, then an exact identity over "any".
    const score = (e.protocol !== 0 ? 1000 : 0) + e.portPrefixLen * 2 + (e.identity !== 0 ? 1 : 0);
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}

export interface DirectionTrace {
  direction: Direction;
  endpoint: string;
  peerIdentity: number;
  enforced: boolean;
  selectedBy: PolicyOrigin[];
  verdict: 'allowed' | 'denied' | 'redirected' | 'auth-required';
  /** Why, in words. */
  reason: string;
  entry?: PolicyEntry;
  rule?: RuleRef;
  /** For redirects with an HTTP request given: whether the L7 rules allow it. */
  l7?: { allowed: boolean; detail: string };
}

export interface TraceResult {
  verdict: 'allowed' | 'denied';
  egress: DirectionTrace;
  ingress: DirectionTrace;
}

export interface TraceQuery {
  src: PolicyEndpoint & { name: string };
  dst: PolicyEndpoint & { name: string };
  protocol: number;
  dport: number;
  http?: { method: string; path: string; host?: string };
}

function traceDirection(
  repo: PolicyRepository,
  direction: Direction,
  subject: PolicyEndpoint & { name: string },
  peer: number,
  q: TraceQuery,
): DirectionTrace {
  const dp = repo.evaluate(subject)[direction];
  const base = {
    direction,
    endpoint: subject.name,
    peerIdentity: peer,
    enforced: dp.enforced,
    selectedBy: dp.selectedBy,
  };
  const entry = lookupEntry(dp, peer, q.protocol, q.dport);
  const rule = entry ? repo.ruleOf(entry.cookie) : undefined;
  const ruleText = rule ? `${formatOrigin(rule)} ${rule.path}` : '';
  if (entry?.verdict === 'deny')
    return { ...base, verdict: 'denied', reason: `denied by ${ruleText}`, entry, ...(rule ? { rule } : {}) };
  if (!dp.enforced) {
    return { ...base, verdict: 'allowed', reason: `no policy enforces ${direction} on ${subject.name}` };
  }
  if (!entry) {
    const who = dp.selectedBy.map(formatOrigin).join(', ');
    return {
      ...base,
      verdict: 'denied',
      reason: `default deny: ${who} select ${subject.name} for ${direction}, and no rule allows identity ${identityName(peer)} on ${protoName(q.protocol)}/${q.dport}`,
    };
  }
  const out: DirectionTrace = {
    ...base,
    verdict: 'allowed',
    reason: `allowed by ${ruleText}`,
    entry,
    ...(rule ? { rule } : {}),
  };
  if (entry.verdict === 'auth') {
    out.verdict = 'auth-required';
    out.reason = `${ruleText} requires mutual authentication (type ${entry.authType})`;
  }
  if (entry.verdict === 'redirect') {
    out.verdict = 'redirected';
    out.reason = `redirected to the ${entry.proxy} proxy by ${ruleText}`;
    if (q.http && entry.l7?.http) {
      const m = new CompiledRuleSet({ groups: [{ identities: [], rules: entry.l7.http }] }).match(peer, {
        method: q.http.method,
        path: q.http.path,
        host: q.http.host ?? '',
        headers: new Map(),
      });
      out.l7 = m.allowed
        ? {
            allowed: true,
            detail: `HTTP ${q.http.method} ${q.http.path} matches http rule ${m.matched?.rule}`,
          }
        : {
            allowed: false,
            detail: `HTTP ${q.http.method} ${q.http.path} matches no http rule: 403 Forbidden`,
          };
    }
  }
  return out;
}

export function protoName(p: number): string {
  return (
    ({ 0: 'ANY', 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' } as Record<number, string>)[p] ??
    String(p)
  );
}

export function trace(repo: PolicyRepository, q: TraceQuery): TraceResult {
  const egress = traceDirection(repo, 'egress', q.src, q.dst.identity, q);
  const ingress = traceDirection(repo, 'ingress', q.dst, q.src.identity, q);
  const passes = (t: DirectionTrace) =>
    t.verdict === 'allowed' || (t.verdict === 'redirected' && (t.l7 === undefined || t.l7.allowed));
  return { verdict: passes(egress) && passes(ingress) ? 'allowed' : 'denied', egress, ingress };
}
