/**
 * The PATCH formats kubectl and controllers send: JSON Patch (RFC 6902), JSON Merge Patch
 * (RFC 7386) and Kubernetes' strategic merge patch, which merges lists of objects by a
 * key (containers by name, ports by port) and understands the `$patch`, `$retainKeys`,
 * `$setElementOrder/` and `$deleteFromPrimitiveList/` directives kubectl writes.
 */
import { ApiError, clone, errors, isObject, type JsonObject } from './object.js';

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw errors.badRequest(`the JSON patch path "${path}" must start with /`);
  return path
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(
  doc: unknown,
  parts: string[],
  path: string,
): { parent: JsonObject | unknown[]; key: string } {
  let cur: unknown = doc;
  for (const p of parts.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur)) cur = cur[p];
    else cur = undefined;
    if (cur === undefined) throw errors.badRequest(`the JSON patch path "${path}" does not exist`);
  }
  if (!Array.isArray(cur) && !isObject(cur))
    throw errors.badRequest(`the JSON patch path "${path}" does not exist`);
  return { parent: cur, key: parts[parts.length - 1] ?? '' };
}

function getAt(doc: unknown, path: string): unknown {
  let cur: unknown = doc;
  for (const p of pointer(path)) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur)) cur = cur[p];
    else return undefined;
  }
  return cur;
}

function index(arr: unknown[], key: string, path: string, forAdd: boolean): number {
  if (forAdd && key === '-') return arr.length;
  const i = Number(key);
  if (!/^\d+$/.test(key) || i > arr.length || (!forAdd && i >= arr.length))
    throw errors.badRequest(`the JSON patch index "${key}" in "${path}" is out of range`);
  return i;
}

export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw errors.badRequest('a JSON patch must be a list of operations');
  let out = clone(doc);
  for (const [n, raw] of ops.entries()) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string')
      throw errors.badRequest(`JSON patch operation ${n}: needs "op" and "path"`);
    const { op, path } = raw;
    const parts = pointer(path);
    const put = (value: unknown) => {
      if (parts.length === 0) {
        out = clone(value);
        return;
      }
      const { parent, key } = parentOf(out, parts, path);
      if (Array.isArray(parent)) parent.splice(index(parent, key, path, true), 0, clone(value));
      else parent[key] = clone(value);
    };
    const remove = () => {
      const { parent, key } = parentOf(out, parts, path);
      if (Array.isArray(parent)) parent.splice(index(parent, key, path, false), 1);
      else {
        if (!(key in parent)) throw errors.badRequest(`the JSON patch path "${path}" does not exist`);
        delete parent[key];
      }
    };
    switch (op) {
      case 'add':
        put(raw.value);
        break;
      case 'remove':
        remove();
        break;
      case 'replace':
        remove();
        put(raw.value);
        break;
      case 'move':
      case 'copy': {
        if (typeof raw.from !== 'string') throw errors.badRequest(`JSON patch operation ${n}: needs "from"`);
        const value = getAt(out, raw.from);
        if (value === undefined) throw errors.badRequest(`the JSON patch path "${raw.from}" does not exist`);
        if (op === 'move') {
          const from = pointer(raw.from);
          const { parent, key } = parentOf(out, from, raw.from);
          if (Array.isArray(parent)) parent.splice(Number(key), 1);
          else delete parent[key];
        }
        put(value);
        break;
      }
      case 'test':
        if (JSON.stringify(getAt(out, path)) !== JSON.stringify(raw.value))
          throw new ApiError(422, 'Invalid', `the JSON patch test at "${path}" failed`);
        break;
      default:
        throw errors.badRequest(`JSON patch operation ${n}: unknown op "${op}"`);
    }
  }
  return out;
}

/**
 * Merge keys of the list fields that Kubernetes merges by key rather than replacing,
 * by field name (the same names mean the same thing throughout the core kinds).
 * Lists of primitives with a merge strategy (finalizers) merge as sets.
 */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  imagePullSecrets: 'name',
  hostAliases: 'ip',
  ownerReferences: 'uid',
  conditions: 'type',
  topologySpreadConstraints: 'topologyKey',
  resourceClaims: 'name',
};
const MERGE_PRIMITIVES = new Set(['finalizers']);

/** The merge key for a list at `field`: ports merge by containerPort in containers, by port in services. */
function mergeKey(field: string, parentPath: string): string | undefined {
  if (field === 'ports') return /containers$/i.test(parentPath) ? 'containerPort' : 'port';
  return MERGE_KEYS[field];
}

const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

export function strategicMergePatch(target: unknown, patch: unknown, path = ''): unknown {
  if (!isObject(patch)) return clone(patch);
  if (patch.$patch === 'replace') {
    const { $patch: _, ...rest } = patch;
    return clone(rest);
  }
  if (patch.$patch === 'delete') return undefined;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  const retain = Array.isArray(patch.$retainKeys) ? new Set(patch.$retainKeys.map(String)) : undefined;
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys' || k.startsWith(SET_ORDER) || k.startsWith(DELETE_PRIMITIVE))
      continue;
    if (v === null) {
      delete out[k];
      continue;
    }
    const key = mergeKey(k, path);
    if (Array.isArray(v) && key) out[k] = mergeList(out[k], v, key, `${path}.${k}`);
    else if (Array.isArray(v) && MERGE_PRIMITIVES.has(k))
      out[k] = [...new Set([...(Array.isArray(out[k]) ? out[k] : []), ...v])];
    else if (isObject(v)) {
      const merged = strategicMergePatch(out[k], v, `${path}.${k}`);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    } else out[k] = clone(v);
  }
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith(DELETE_PRIMITIVE) && Array.isArray(v)) {
      const f = k.slice(DELETE_PRIMITIVE.length);
      if (Array.isArray(out[f])) out[f] = (out[f] as unknown[]).filter((x) => !v.includes(x));
    }
    if (k.startsWith(SET_ORDER) && Array.isArray(v)) {
      const f = k.slice(SET_ORDER.length);
      const list = out[f];
      const key = mergeKey(f, path);
      if (Array.isArray(list)) out[f] = reorder(list, v, key);
    }
  }
  if (retain) for (const k of Object.keys(out)) if (!retain.has(k)) delete out[k];
  return out;
}

function mergeList(target: unknown, patch: unknown[], key: string, path: string): unknown[] {
  const out: unknown[] = Array.isArray(target) ? [...target] : [];
  if (patch.some((p) => isObject(p) && p.$patch === 'replace'))
    return patch.filter((p) => !(isObject(p) && p.$patch === 'replace')).map((p) => clone(p));
  for (const item of patch) {
    if (!isObject(item) || !(key in item)) {
      out.push(clone(item));
      continue;
    }
    const at = out.findIndex((o) => isObject(o) && o[key] === item[key]);
    if (item.$patch === 'delete') {
      if (at >= 0) out.splice(at, 1);
      continue;
    }
    if (at >= 0) out[at] = strategicMergePatch(out[at], item, path);
    else out.push(strategicMergePatch({}, item, path));
  }
  return out;
}

function reorder(list: unknown[], order: unknown[], key: string | undefined): unknown[] {
  const id = (x: unknown) => (key && isObject(x) ? JSON.stringify(x[key]) : JSON.stringify(x));
  const rank = new Map(order.map((o, i) => [id(o), i]));
  return [...list].sort((a, b) => (rank.get(id(a)) ?? order.length) - (rank.get(id(b)) ?? order.length));
}
