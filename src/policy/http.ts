/**
 * HTTP rules as Cilium defines them (`toPorts[].rules.http`): method, path and host are
 * POSIX-style regular expressions matched against the whole value (anchored); `headers`
 * lists headers that must be present ("Name" or "Name: value"); `headerMatches` compares
 * a header with a value, and on a mismatch either fails the rule (no mismatch action) or
 * lets it match while logging, adding, deleting or replacing the header. A request is
 * allowed when any rule for its source identity matches.
 */

export interface HeaderMatch {
  name: string;
  value?: string;
  mismatch?: 'LOG' | 'ADD' | 'DELETE' | 'REPLACE';
}

export interface HttpRule {
  method?: string;
  path?: string;
  host?: string;
  headers?: string[];
  headerMatches?: HeaderMatch[];
}

/** Rules for one (endpoint, port, direction) with the identities they apply to. */
export interface HttpRuleSet {
  /** Source (or, for egress, destination) identities each group admits; empty = any peer. */
  groups: { identities: number[]; rules: HttpRule[] }[];
}

/** The request as the matcher sees it. */
export interface HttpRequestView {
  method: string;
  /** The path without the query string. */
  path: string;
  host: string;
  /** Header name (lower-case) -> values. */
  headers: Map<string, string[]>;
}

export type HeaderEdit =
  | { kind: 'add'; name: string; value: string }
  | { kind: 'delete'; name: string }
  | { kind: 'replace'; name: string; value: string };

export interface MatchResult {
  allowed: boolean;
  /** Index of the group and rule that allowed it, for flows. */
  matched?: { group: number; rule: number };
  /** Header edits the matching rule asks for (mismatch actions). */
  edits: HeaderEdit[];
  /** Mismatches noted with action LOG (or fixed by an edit). */
  logged: string[];
}

/** A compiled rule: regular expressions built once. */
interface Compiled {
  method?: RegExp;
  path?: RegExp;
  host?: RegExp;
  headers: { name: string; value?: string }[];
  headerMatches: HeaderMatch[];
}

function anchored(source: string, flags = ''): RegExp {
  return new RegExp(`^(?:${source})$`, flags);
}

export class CompiledRuleSet {
  readonly #groups: { identities: Set<number>; rules: Compiled[] }[];

  /** Throws a SyntaxError naming the rule when a regular expression does not compile. */
  constructor(set: HttpRuleSet) {
    this.#groups = set.groups.map((g, gi) => ({
      identities: new Set(g.identities),
      rules: g.rules.map((r, ri) => {
        const re = (what: string, src: string | undefined, flags?: string) => {
          if (src === undefined || src === '') return undefined;
          try {
            return anchored(src, flags);
          } catch (err) {
            throw new SyntaxError(`groups[${gi}].rules[${ri}].${what}: ${(err as Error).message}`);
          }
        };
        const compiled: Compiled = {
          headers: (r.headers ?? []).map(parseHeader),
          headerMatches: r.headerMatches ?? [],
        };
        const m = re('method', r.method);
        const p = re('path', r.path);
        const h = re('host', r.host, 'i');
        if (m) compiled.method = m;
        if (p) compiled.path = p;
        if (h) compiled.host = h;
        return compiled;
      }),
    }));
  }

  match(identity: number, req: HttpRequestView): MatchResult {
    for (let gi = 0; gi < this.#groups.length; gi++) {
      const g = this.#groups[gi]!;
      if (g.identities.size > 0 && !g.identities.has(identity)) continue;
      for (let ri = 0; ri < g.rules.length; ri++) {
        const r = matchRule(g.rules[ri]!, req);
        if (r) return { allowed: true, matched: { group: gi, rule: ri }, ...r };
      }
    }
    return { allowed: false, edits: [], logged: [] };
  }
}

function parseHeader(h: string): { name: string; value?: string } {
  const i = h.indexOf(':');
  if (i < 0) return { name: h.trim().toLowerCase() };
  return { name: h.slice(0, i).trim().toLowerCase(), value: h.slice(i + 1).trim() };
}

function matchRule(r: Compiled, req: HttpRequestView): { edits: HeaderEdit[]; logged: string[] } | undefined {
  if (r.method && !r.method.test(req.method)) return undefined;
  if (r.path && !r.path.test(req.path)) return undefined;
  if (r.host && !r.host.test(req.host)) return undefined;
  for (const h of r.headers) {
    const values = req.headers.get(h.name);
    if (!values) return undefined;
    if (h.value !== undefined && !values.includes(h.value)) return undefined;
  }
  const edits: HeaderEdit[] = [];
  const logged: string[] = [];
  for (const m of r.headerMatches) {
    const name = m.name.toLowerCase();
    const values = req.headers.get(name);
    const ok = m.value === undefined ? values !== undefined : (values ?? []).includes(m.value);
    if (ok) continue;
    const what = `header ${m.name}${m.value === undefined ? '' : `: ${m.value}`} mismatch`;
    switch (m.mismatch) {
      case undefined:
        return undefined;
      case 'LOG':
        logged.push(what);
        break;
      case 'ADD':
        if (m.value !== undefined) edits.push({ kind: 'add', name, value: m.value });
        logged.push(what);
        break;
      case 'DELETE':
        edits.push({ kind: 'delete', name });
        logged.push(what);
        break;
      case 'REPLACE':
        if (m.value !== undefined) edits.push({ kind: 'replace', name, value: m.value });
        logged.push(what);
        break;
    }
  }
  return { edits, logged };
}
