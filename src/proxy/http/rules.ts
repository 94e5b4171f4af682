/**
 * What the HTTP proxy enforces: per local endpoint, the policy entries that redirect to it,
 * as the agent pushes them. A connection's entry is found the way the datapath found it
 * (bpf/include/policy.h): the peer's identity or any, the longest protocol/port prefix,
 * the exact identity on a tie. Its HTTP rules, compiled once per distinct rule list,
 * decide each request.
 */
import { CompiledRuleSet, type HttpRule } from '../../policy/http.js';

export type Direction = 'ingress' | 'egress';

/** The policy behind an entry, for flows (as Hubble's allowed_by/denied_by name it). */
export interface PolicyName {
  kind: string;
  namespace: string;
  name: string;
}

/** One policy map entry with verdict redirect to the HTTP proxy. */
export interface RedirectEntry {
  direction: Direction;
  /** Peer identity; 0 = any. */
  identity: number;
  /** 6 (TCP) or 0 (any). */
  protocol: number;
  port: number;
  /** Bits of `port` that must match (0-16); 0 with protocol 0 = any port. */
  portPrefixLen: number;
  rules: HttpRule[];
  policy?: PolicyName;
}

export interface ProxyEndpoint {
  id: number;
  ip: string;
  identity: number;
  entries: RedirectEntry[];
}

/** Agent -> proxy: endpoints changed (`full`: these are all of them). */
export interface EndpointsMessage {
  type: 'endpoints';
  full: boolean;
  upsert: ProxyEndpoint[];
  remove: number[];
}

/** The entry a connection falls under, with its rules ready to match. */
export interface EntryMatch {
  entry: RedirectEntry;
  rules: CompiledRuleSet;
}

/** The datapath's LPM prefix length of an entry (see policyKeyOf). */
function prefixOf(e: RedirectEntry): number {
  return 64 + (e.protocol === 0 ? 0 : e.portPrefixLen === 0 ? 8 : 16 + e.portPrefixLen);
}

function covers(e: RedirectEntry, port: number): boolean {
  if (e.protocol !== 0 && e.protocol !== 6) return false;
  if (e.protocol === 0 || e.portPrefixLen === 0) return true;
  const shift = 16 - e.portPrefixLen;
  return port >>> shift === e.port >>> shift;
}

interface Compiled extends ProxyEndpoint {
  compiled: (EntryMatch & { prefix: number })[];
}

export class RedirectTable {
  readonly #byId = new Map<number, Compiled>();
  readonly #byIp = new Map<string, Compiled>();
  /** Compiled rule sets by their rules' JSON: identities sharing rules share regexps. */
  #ruleCache = new Map<string, CompiledRuleSet>();
  #synced = false;

  /** Whether a full snapshot has arrived. */
  get synced(): boolean {
    return this.#synced;
  }

  /**
   * Applies a message from the agent. A rule that does not compile (the agent validated
   * it, so this is a bug) throws before anything changes.
   */
  apply(m: EndpointsMessage): void {
    const next = m.upsert.map((ep) => this.#compile(ep));
    if (m.full) {
      this.#byId.clear();
      this.#byIp.clear();
    }
    for (const id of m.remove) this.#delete(id);
    for (const c of next) {
      this.#delete(c.id);
      this.#byId.set(c.id, c);
      this.#byIp.set(c.ip, c);
    }
    if (m.full) this.#synced = true;
    // Drop rule sets no endpoint uses any more (on a full set, or once enough piled up).
    if (m.full || this.#ruleCache.size > 2 * this.#byId.size + 64) {
      const used = new Set([...this.#byId.values()].flatMap((c) => c.compiled.map((x) => x.rules)));
      this.#ruleCache = new Map([...this.#ruleCache].filter(([, r]) => used.has(r)));
    }
  }

  endpointAt(ip: string): ProxyEndpoint | undefined {
    return this.#byIp.get(ip);
  }

  get size(): number {
    return this.#byId.size;
  }

  /** The entry the datapath redirected on, or undefined when none redirects this any more. */
  match(ep: ProxyEndpoint, direction: Direction, peer: number, port: number): EntryMatch | undefined {
    const c = this.#byId.get(ep.id);
    if (!c) return undefined;
    let best: (EntryMatch & { prefix: number }) | undefined;
    for (const x of c.compiled) {
      const e = x.entry;
      if (e.direction !== direction || (e.identity !== peer && e.identity !== 0) || !covers(e, port))
        continue;
      if (
        !best ||
        x.prefix > best.prefix ||
        (x.prefix === best.prefix && e.identity === peer && best.entry.identity !== peer)
      )
        best = x;
    }
    return best;
  }

  #delete(id: number): void {
    const old = this.#byId.get(id);
    if (!old) return;
    this.#byId.delete(id);
    if (this.#byIp.get(old.ip) === old) this.#byIp.delete(old.ip);
  }

  #compile(ep: ProxyEndpoint): Compiled {
    return {
      ...ep,
      compiled: ep.entries.map((entry, i) => {
        const key = JSON.stringify(entry.rules);
        let rules = this.#ruleCache.get(key);
        if (!rules) {
          try {
            rules = new CompiledRuleSet({ groups: [{ identities: [], rules: entry.rules }] });
          } catch (err) {
            throw new SyntaxError(`endpoint ${ep.id} entries[${i}]: ${(err as Error).message}`);
          }
          this.#ruleCache.set(key, rules);
        }
        return { entry, rules, prefix: prefixOf(entry) };
      }),
    };
  }
}
