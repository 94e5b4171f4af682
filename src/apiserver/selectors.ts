/**
 * Label and field selectors in their query-string form, as `?labelSelector=` and
 * `?fieldSelector=` carry them: `app=web,tier!=db,env in (a,b),!canary,release`.
 */
import { errors, isObject, type JsonObject } from './object.js';

export type Requirement =
  | { key: string; op: '=' | '!='; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | '!exists' };

/** Splits on commas that are not inside parentheses. */
function terms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '(') depth++;
    else if (s[i] === ')') depth--;
    else if (s[i] === ',' && depth === 0) {
      out.push(s.slice(start, i));
      start = i + 1;
    }
  }
  out.push(s.slice(start));
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

export function parseLabelSelector(s: string): Requirement[] {
  return terms(s).map((t) => {
    let m = /^(\S+?)\s+(in|notin)\s+\(([^)]*)\)$/.exec(t);
    if (m) {
      const values = m[3]!.split(',').map((v) => v.trim());
      return { key: m[1]!, op: m[2] as 'in' | 'notin', values };
    }
    m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(t);
    if (m) return { key: m[1]!, op: m[2] === '!=' ? '!=' : '=', value: m[3]! };
    m = /^!\s*([^=!\s]+)$/.exec(t);
    if (m) return { key: m[1]!, op: '!exists' };
    if (/^[^=!\s(),]+$/.test(t)) return { key: t, op: 'exists' };
    throw errors.badRequest(`unable to parse requirement: "${t}"`);
  });
}

export function labelsMatch(reqs: readonly Requirement[], labels: Readonly<Record<string, string>>): boolean {
  for (const r of reqs) {
    const v = labels[r.key];
    switch (r.op) {
      case '=':
        if (v !== r.value) return false;
        break;
      case '!=':
        if (v === r.value) return false;
        break;
      case 'in':
        if (v === undefined || !r.values.includes(v)) return false;
        break;
      case 'notin':
        if (v !== undefined && r.values.includes(v)) return false;
        break;
      case 'exists':
        if (v === undefined) return false;
        break;
      case '!exists':
        if (v !== undefined) return false;
        break;
    }
  }
  return true;
}

export interface FieldRequirement {
  path: string[];
  op: '=' | '!=';
  value: string;
}

export function parseFieldSelector(s: string): FieldRequirement[] {
  return terms(s).map((t) => {
    const m = /^([A-Za-z0-9_.\-/]+)\s*(==|=|!=)\s*(.*)$/.exec(t);
    if (!m) throw errors.badRequest(`invalid selector: '${t}'; can't understand '${t}'`);
    return { path: m[1]!.split('.'), op: m[2] === '!=' ? '!=' : '=', value: m[3]! };
  });
}

function fieldValue(obj: JsonObject, path: readonly string[]): string {
  let cur: unknown = obj;
  for (const p of path) {
    if (!isObject(cur)) return '';
    cur = cur[p];
  }
  return cur === undefined || cur === null ? '' : String(cur);
}

export function fieldsMatch(reqs: readonly FieldRequirement[], obj: JsonObject): boolean {
  return reqs.every((r) => (fieldValue(obj, r.path) === r.value) === (r.op === '='));
}
