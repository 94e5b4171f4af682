/**
 * Kubernetes label selectors: `matchLabels` and `matchExpressions` (In, NotIn, Exists,
 * DoesNotExist), validated at the edge and matched against label maps.
 */
import { ValidationError } from '../errors.js';

export type Labels = Readonly<Record<string, string>>;

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

const OPERATORS = new Set(['In', 'NotIn', 'Exists', 'DoesNotExist']);
// Qualified names as Kubernetes allows them: an optional DNS prefix and a name of up to 63.
const KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

/** Label keys may carry a Cilium source prefix (`k8s:app`), which selectors accept. */
function checkKey(object: string, field: string, key: string): void {
  const bare = key.replace(/^(k8s|reserved|any|cidr|fqdn|unspec|container):/, '');
  if (!KEY.test(bare)) throw new ValidationError(object, field, `"${key}" is not a valid label key`);
}

/** Validates an untrusted selector object; returns it typed. */
export function parseSelector(object: string, field: string, raw: unknown): LabelSelector {
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw new ValidationError(object, field, 'must be a label selector object');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (k !== 'matchLabels' && k !== 'matchExpressions') {
      throw new ValidationError(
        object,
        `${field}.${k}`,
        'unknown field (a selector has matchLabels and matchExpressions)',
      );
    }
  }
  const out: LabelSelector = {};
  if (r.matchLabels !== undefined && r.matchLabels !== null) {
    if (typeof r.matchLabels !== 'object' || Array.isArray(r.matchLabels)) {
      throw new ValidationError(object, `${field}.matchLabels`, 'must be a map of label keys to values');
    }
    out.matchLabels = {};
    for (const [k, v] of Object.entries(r.matchLabels as Record<string, unknown>)) {
      checkKey(object, `${field}.matchLabels`, k);
      const value = typeof v === 'number' || typeof v === 'boolean' ? String(v) : v;
      if (typeof value !== 'string' || !VALUE.test(value)) {
        throw new ValidationError(
          object,
          `${field}.matchLabels.${k}`,
          `"${String(v)}" is not a valid label value`,
        );
      }
      out.matchLabels[k] = value;
    }
  }
  if (r.matchExpressions !== undefined && r.matchExpressions !== null) {
    if (!Array.isArray(r.matchExpressions))
      throw new ValidationError(object, `${field}.matchExpressions`, 'must be a list');
    out.matchExpressions = r.matchExpressions.map((e, i) => {
      const f = `${field}.matchExpressions[${i}]`;
      if (typeof e !== 'object' || e === null) throw new ValidationError(object, f, 'must be an object');
      const x = e as Record<string, unknown>;
      if (typeof x.key !== 'string') throw new ValidationError(object, `${f}.key`, 'is required');
      checkKey(object, `${f}.key`, x.key);
      if (typeof x.operator !== 'string' || !OPERATORS.has(x.operator)) {
        throw new ValidationError(
          object,
          `${f}.operator`,
          `"${String(x.operator)}" is not one of In, NotIn, Exists, DoesNotExist`,
        );
      }
      const op = x.operator as LabelSelectorRequirement['operator'];
      const values = x.values === undefined || x.values === null ? [] : x.values;
      if (!Array.isArray(values) || values.some((v) => typeof v !== 'string')) {
        throw new ValidationError(object, `${f}.values`, 'must be a list of strings');
      }
      if ((op === 'In' || op === 'NotIn') && values.length === 0) {
        throw new ValidationError(object, `${f}.values`, `must be non-empty for operator ${op}`);
      }
      if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
        throw new ValidationError(object, `${f}.values`, `must be empty for operator ${op}`);
      }
      return { key: x.key, operator: op, values: values as string[] };
    });
  }
  return out;
}

/** Whether labels satisfy the selector. An empty selector matches everything. */
export function matches(sel: LabelSelector, labels: Labels): boolean {
  if (sel.matchLabels) {
    for (const k in sel.matchLabels) if (labels[k] !== sel.matchLabels[k]) return false;
  }
  if (sel.matchExpressions) {
    for (const e of sel.matchExpressions) {
      const v = labels[e.key];
      switch (e.operator) {
        case 'In':
          if (v === undefined || !e.values!.includes(v)) return false;
          break;
        case 'NotIn':
          if (v !== undefined && e.values!.includes(v)) return false;
          break;
        case 'Exists':
          if (v === undefined) return false;
          break;
        case 'DoesNotExist':
          if (v !== undefined) return false;
          break;
      }
    }
  }
  return true;
}

export function isEmptySelector(sel: LabelSelector): boolean {
  return Object.keys(sel.matchLabels ?? {}).length === 0 && (sel.matchExpressions ?? []).length === 0;
}

/** A stable string for a selector: equal selectors give equal keys (for caches). */
export function selectorKey(sel: LabelSelector): string {
  const ml = Object.entries(sel.matchLabels ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const me = (sel.matchExpressions ?? [])
    .map((e) => `${e.key} ${e.operator} ${[...(e.values ?? [])].sort().join(',')}`)
    .sort();
  return JSON.stringify([ml, me]);
}

/** Human form, like kubectl prints selectors: `app=frontend,tier in (a,b)`. */
export function formatSelector(sel: LabelSelector): string {
  const parts = Object.entries(sel.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel.matchExpressions ?? []) {
    if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
    else parts.push(`${e.key} ${e.operator === 'In' ? 'in' : 'notin'} (${(e.values ?? []).join(',')})`);
  }
  return parts.join(',') || '<all>';
}
