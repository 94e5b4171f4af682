/**
 * What the agent tells its DNS proxy child, and what the child tells the agent, over the
 * child's IPC channel; and the rule lookup the child does per query. The agent sends the
 * whole rule set (it is small: the redirect entries of endpoints with dns rules) on every
 * change and after each (re)start of the child.
 */
import { compileSelector, type DnsSelector } from '../../dns/pattern.js';
import type { DnsAnswer, DnsRecord } from './proxy.js';

/** One policy map entry that redirects to the DNS proxy, with its dns rules. */
export interface DnsPortRule {
  /** Peer identity (the DNS server's); 0 = any. */
  identity: number;
  /** IP protocol; 0 = any. */
  protocol: number;
  port: number;
  /** 0 with port 0: any port; else the leading bits of `port` that must match (16: exactly). */
  portPrefixLen: number;
  selectors: DnsSelector[];
  cookie: number;
}

export interface DnsProxyEndpoint {
  id: number;
  identity: number;
  rules: DnsPortRule[];
}

export type AgentToDnsProxy =
  | { type: 'rules'; endpoints: DnsProxyEndpoint[] }
  /** The answer `seq` was applied to policy (or could not be: `error`). */
  | { type: 'applied'; seq: number; error?: string };

export type DnsProxyToAgent =
  | { type: 'ready' }
  /** An answer to apply before the proxy releases it; the agent replies `applied`. */
  | ({ type: 'answer'; seq: number } & DnsAnswer)
  /** Records, and answers whose IPs were applied already (their lifetimes extend; no reply). */
  | { type: 'batch'; records: DnsRecord[]; answers: DnsAnswer[] };

interface CompiledRule extends DnsPortRule {
  allows(name: string): boolean;
  /** As long as the policy map's key prefix, so the same entry wins here as in the datapath. */
  prefix: number;
}

/** The rules of every endpoint, ready for lookups. Invalid selectors allow nothing. */
export class DnsRuleTable {
  readonly #byEndpoint = new Map<number, { identity: number; rules: CompiledRule[] }>();

  constructor(endpoints: readonly DnsProxyEndpoint[] = []) {
    for (const ep of endpoints) {
      this.#byEndpoint.set(ep.id, {
        identity: ep.identity,
        rules: ep.rules.map((r) => {
          const tests = r.selectors.map((s) => {
            try {
              return compileSelector(s);
            } catch {
              return () => false;
            }
          });
          return {
            ...r,
            allows: (name: string) => tests.some((t) => t(name)),
            prefix: r.protocol === 0 ? 0 : r.portPrefixLen === 0 ? 8 : 16 + r.portPrefixLen,
          };
        }),
      });
    }
  }

  endpoint(id: number): { identity: number } | undefined {
    return this.#byEndpoint.get(id);
  }

  /**
   * The rule for a query from an endpoint to a server (identity, protocol, port): the
   * longest match, the exact identity on a tie -- the entry the datapath's lookup found.
   */
  lookup(endpoint: number, identity: number, protocol: number, port: number): CompiledRule | undefined {
    let best: CompiledRule | undefined;
    for (const r of this.#byEndpoint.get(endpoint)?.rules ?? []) {
      if (r.identity !== identity && r.identity !== 0) continue;
      if (r.protocol !== 0 && r.protocol !== protocol) continue;
      const bits = r.protocol === 0 ? 0 : r.portPrefixLen;
      const mask = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
      if ((port & mask) !== (r.port & mask)) continue;
      if (
        !best ||
        r.prefix > best.prefix ||
        (r.prefix === best.prefix && r.identity !== 0 && best.identity === 0)
      )
        best = r;
    }
    return best;
  }
}
