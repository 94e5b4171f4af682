/**
 * Cilium's DNS name selectors, shared by `toFQDNs` and the DNS proxy's `dns` rules:
 * `matchName` is an exact name; `matchPattern` uses `*` for any run of DNS characters
 * within one label, a lone `*` for every name, and a leading `**.` for one or more whole
 * labels. Names compare case-insensitively, with or without the trailing dot.
 */
import { canonicalName } from './message.js';

export interface DnsSelector {
  matchName?: string;
  matchPattern?: string;
}

const NAME_CHARS = /^[-a-zA-Z0-9_.]+$/;
const PATTERN_CHARS = /^[-a-zA-Z0-9_.*]+$/;

/** Why a selector is invalid, or undefined when it is fine. */
export function selectorProblem(s: DnsSelector): string | undefined {
  const set = [s.matchName, s.matchPattern].filter((x) => x !== undefined).length;
  if (set !== 1) return 'exactly one of matchName and matchPattern must be set';
  if (s.matchName !== undefined && !NAME_CHARS.test(s.matchName)) {
    return `matchName "${s.matchName}" may contain only letters, digits, '-', '_' and '.'`;
  }
  if (s.matchPattern !== undefined) {
    if (!PATTERN_CHARS.test(s.matchPattern)) {
      return `matchPattern "${s.matchPattern}" may contain only letters, digits, '-', '_', '.' and '*'`;
    }
    if (s.matchPattern.slice(s.matchPattern.startsWith('**.') ? 3 : 0).includes('**')) {
      return `matchPattern "${s.matchPattern}": '**' is allowed only as a leading '**.'`;
    }
  }
  return undefined;
}

/** Compiles a selector to a predicate over names. Throws on an invalid selector. */
export function compileSelector(s: DnsSelector): (name: string) => boolean {
  const problem = selectorProblem(s);
  if (problem) throw new SyntaxError(problem);
  if (s.matchName !== undefined) {
    const want = canonicalName(s.matchName);
    return (name) => canonicalName(name) === want;
  }
  const pattern = canonicalName(s.matchPattern!);
  if (pattern === '*') return () => true;
  let prefix = '';
  let rest = pattern;
  if (rest.startsWith('**.')) {
    prefix = '(?:[-a-z0-9_]+\\.)+';
    rest = rest.slice(3);
  }
  const body = rest
    .split('*')
    .map((part) => part.replace(/[.\\^$+?()[\]{}|-]/g, '\\$&'))
    .join('[-a-z0-9_]*');
  const re = new RegExp(`^${prefix}${body}$`);
  return (name) => re.test(canonicalName(name));
}
