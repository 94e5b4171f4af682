/**
 * OpenAPI v3 validation of custom resources, as kube-apiserver does it for CRDs: the
 * structural-schema subset, checked the way k8s.io/kube-openapi's validator checks it,
 * with its findings turned into field errors the way apiextensions-apiserver turns them
 * (`kubeOpenAPIResultToFieldErrors`), so that kubectl prints what it would print against a
 * real cluster. Quirks of that validator are kept where a user could notice them; each is
 * marked where it is implemented.
 *
 * API: `validateObject` (schema checks, then list-type uniqueness) and `pruneUnknown` (the
 * fields a schema does not know, reported as strict field validation reports them, and
 * optionally removed as the server removes them by default).
 */

/** One node of a CRD's `openAPIV3Schema` (apiextensions.k8s.io/v1 `JSONSchemaProps`). */
export interface JSONSchemaProps {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  format?: string;
  description?: string;
  title?: string;
  nullable?: boolean;
  default?: unknown;
  example?: unknown;
  enum?: unknown[];

  properties?: Record<string, JSONSchemaProps>;
  required?: string[];
  additionalProperties?: JSONSchemaProps | boolean;
  minProperties?: number;
  maxProperties?: number;

  items?: JSONSchemaProps;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;

  pattern?: string;
  minLength?: number;
  maxLength?: number;

  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  multipleOf?: number;

  oneOf?: JSONSchemaProps[];
  anyOf?: JSONSchemaProps[];
  allOf?: JSONSchemaProps[];
  not?: JSONSchemaProps;

  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-embedded-resource'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-map-type'?: 'granular' | 'atomic';
}

/** The `reason` kube-apiserver puts in `Status.details.causes[].reason`. */
export type FieldErrorType =
  | 'FieldValueRequired'
  | 'FieldValueInvalid'
  | 'FieldValueNotSupported'
  | 'FieldValueTypeInvalid'
  | 'FieldValueDuplicate'
  | 'FieldValueTooLong'
  | 'FieldValueTooMany'
  | 'FieldValueForbidden';

/** One entry of `Status.details.causes`: `field` is `<nil>` where Kubernetes has no path. */
export interface FieldError {
  type: FieldErrorType;
  /** Dotted path with indices, e.g. `spec.ingress[0].toPorts[0].ports[0].port`. */
  field: string;
  /** As kube-apiserver words it, e.g. `Unsupported value: "foo": supported values: "a", "b"`. */
  message: string;
}

/** Kubernetes prints a missing path (a `nil` field.Path) this way. */
const NO_PATH = '<nil>';

type JSONType = 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean' | 'null';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function jsonType(v: unknown): JSONType {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'boolean';
    case 'number':
      // Go decodes a JSON number without a fraction as int64: an integer.
      return Number.isInteger(v) ? 'integer' : 'number';
    default:
      return 'object';
  }
}

/** JSON with sorted keys, as Go's encoding/json prints a map. */
function goJSON(v: unknown): string {
  if (v === undefined) return 'null';
  return JSON.stringify(v, (_k, x: unknown) =>
    isObject(x)
      ? Object.fromEntries(
          Object.keys(x)
            .sort()
            .map((k) => [k, x[k]]),
        )
      : x,
  );
}

/** A bad value as field.Error prints it: `%q` for strings, `%v` for scalars, else JSON. */
function goValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return goJSON(v);
}

function fieldOf(name: string): string {
  if (name === '' || name === '.') return NO_PATH;
  return name.startsWith('.') ? name.slice(1) : name;
}

/** Collects findings; `matches` stands in for kube-openapi's MatchCount when picking among alternatives. */
class Result {
  errors: FieldError[] = [];
  matches = 0;

  add(type: FieldErrorType, name: string, message: string): void {
    this.errors.push({ type, field: fieldOf(name), message });
  }
  /** `field.Invalid(path, value, detail)`. */
  invalid(name: string, value: unknown, detail: string): void {
    this.add('FieldValueInvalid', name, `Invalid value: ${goValue(value)}: ${detail}`);
  }
  /** `field.TypeInvalid`: kube-openapi's value here is the JSON type name of the data. */
  typeInvalid(name: string, expected: string, actual: string): void {
    this.add(
      'FieldValueTypeInvalid',
      name,
      `Invalid value: ${goValue(actual)}: ${name} in body must be of type ${expected}: ${goValue(actual)}`,
    );
  }
  /** Errors kube-openapi raises without a path (composition, ranges) land on no field. */
  pathless(detail: string): void {
    this.errors.push({ type: 'FieldValueInvalid', field: NO_PATH, message: `Invalid value: "": ${detail}` });
  }
  merge(other: Result): void {
    for (const e of other.errors) this.errors.push(e);
    this.matches += other.matches;
  }
}

const patterns = new Map<string, RegExp | Error>();

/** Go RE2 patterns mostly read the same in JS; `u` where the pattern allows it, for `\p{..}`. */
function compilePattern(pattern: string): RegExp | Error {
  let re = patterns.get(pattern);
  if (re === undefined) {
    try {
      re = new RegExp(pattern, 'u');
    } catch {
      try {
        re = new RegExp(pattern);
      } catch (err) {
        re = err instanceof Error ? err : new Error(String(err));
      }
    }
    patterns.set(pattern, re);
  }
  return re;
}

function runeCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

// ---- formats ----------------------------------------------------------------------

/** Four decimal octets, leading zeros tolerated (Go's ParseIPSloppy). */
function isIPv4(s: string): boolean {
  const parts = s.split('.');
  return parts.length === 4 && parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255);
}

/** strfmt's ipv4: any address Go parses, written with a dot, so `::ffff:192.0.2.1` passes too. */
function isIPv4Format(s: string): boolean {
  return isIPv4(s) || (s.includes('.') && isIPv6Address(s));
}

/** An IPv6 address as Go parses it, including a dotted IPv4 tail. */
function isIPv6Address(s: string): boolean {
  if (!s.includes(':') || s.includes('%')) return false;
  // A dotted IPv4 tail stands for the last two groups.
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  let text = s;
  if (tail.includes('.')) {
    if (!isIPv4(tail)) return false;
    text = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return false;
  const groups = halves.flatMap((h) => (h === '' ? [] : h.split(':')));
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return false;
  return halves.length === 2 ? groups.length < 8 : groups.length === 8;
}

function isCIDR(s: string): boolean {
  const slash = s.indexOf('/');
  if (slash < 0) return false;
  const ip = s.slice(0, slash);
  const bits = s.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(bits)) return false;
  if (isIPv4(ip)) return Number(bits) <= 32;
  return isIPv6Address(ip) && Number(bits) <= 128;
}

function isDate(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const days = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  return mo >= 1 && mo <= 12 && d >= 1 && d <= days;
}

function isDateTime(s: string): boolean {
  const lower = s.toLowerCase();
  const t = lower.indexOf('t');
  if (s.length < 4 || t < 0 || !isDate(lower.slice(0, t))) return false;
  const m = /^([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(z|[+-][0-9]{2}:[0-9]{2})$/.exec(lower.slice(t + 1));
  return m !== null && m[1]! <= '23' && m[2]! <= '59' && m[3]! <= '59';
}

const FORMATS: Record<string, (s: string) => boolean> = {
  ipv4: isIPv4Format,
  ipv6: isIPv6Address,
  cidr: isCIDR,
  date: isDate,
  datetime: isDateTime,
  hostname: (s) =>
    s.length <= 255 &&
    /^[a-zA-Z0-9\p{L}]([a-zA-Z0-9\p{L}_-]{0,62})?(\.[a-zA-Z0-9\p{L}_]([a-zA-Z0-9\p{L}_-]{0,62})?)*\.?$/u.test(
      s,
    ),
  uuid: (s) => /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(s),
  mac: (s) => /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/.test(s),
  byte: (s) => /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s),
  password: () => true,
};

/** String formats kube-apiserver recognises (by name without dashes); it drops any other. */
const STRING_FORMATS = new Set([
  'bsonobjectid',
  'uri',
  'email',
  'hostname',
  'ipv4',
  'ipv6',
  'cidr',
  'mac',
  'uuid',
  'uuid3',
  'uuid4',
  'uuid5',
  'isbn',
  'isbn10',
  'isbn13',
  'creditcard',
  'ssn',
  'hexcolor',
  'rgbcolor',
  'byte',
  'password',
  'date',
  'duration',
  'datetime',
  'k8s-short-name',
  'k8s-long-name',
]);

/**
 * The format validation sees: apiextensions strips formats it does not support for the
 * node's type before validating, so `idn-hostname` or `int16` have no effect at all.
 */
function effectiveFormat(s: JSONSchemaProps): string {
  const f = s.format;
  if (!f) return '';
  const type = s['x-kubernetes-int-or-string'] ? '' : (s.type ?? '');
  switch (type) {
    case '':
    case 'string':
      return STRING_FORMATS.has(f.replaceAll('-', '')) || STRING_FORMATS.has(f) ? f : '';
    case 'integer':
      return f === 'int32' || f === 'int64' ? f : '';
    case 'number':
      return f === 'float' || f === 'double' ? f : '';
    default:
      return '';
  }
}

const INT32 = { min: -2147483648, max: 2147483647 };

// ---- validation -------------------------------------------------------------------

function child(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function schemaTypes(s: JSONSchemaProps): string[] {
  if (s['x-kubernetes-int-or-string']) return ['integer', 'string'];
  return s.type ? [s.type] : [];
}

/** kube-openapi's typeValidator, including its leniencies. */
function checkType(s: JSONSchemaProps, data: unknown, path: string, res: Result): void {
  const types = schemaTypes(s);
  const format = effectiveFormat(s);
  if (types.length === 0 && format === '') return;
  const t = jsonType(data);
  if (t === 'null') {
    if (types.length > 0 && !s.nullable) res.typeInvalid(path, types.join(','), 'null');
    return;
  }
  const fits = types.includes(t) || (t === 'integer' && types.includes('number'));
  if (t !== 'string' && t !== 'array' && format !== '' && !fits) {
    // Quirk: a mismatched non-string value is reported against the format, with Go's
    // name for the data's own numeric format.
    const actual = t === 'integer' ? 'int64' : t === 'number' ? 'float64' : '';
    res.typeInvalid(path, format, actual);
    return;
  }
  // Quirk: with a format and no numeric type, strings and arrays pass the type check.
  if (!types.includes('number') && !types.includes('integer') && format !== '') {
    if (t === 'string' || t === 'array') return;
  }
  if (!fits) res.typeInvalid(path, types.join(','), t);
}

function checkComposition(s: JSONSchemaProps, data: unknown, path: string, res: Result): void {
  if (s.anyOf?.length) {
    let best: Result | undefined;
    let ok = false;
    for (const alt of s.anyOf) {
      const r = run(alt, data, path);
      if (r.errors.length === 0) {
        ok = true;
        best = undefined;
        break;
      }
      if (best === undefined || r.matches > best.matches) best = r;
    }
    if (!ok) res.pathless(`${JSON.stringify(path)} must validate at least one schema (anyOf)`);
    if (best) res.merge(best);
  }
  if (s.oneOf?.length) {
    let best: Result | undefined;
    let valid = 0;
    for (const alt of s.oneOf) {
      const r = run(alt, data, path);
      if (r.errors.length === 0) {
        valid++;
        best = undefined;
        continue;
      }
      if (valid === 0 && (best === undefined || r.matches > best.matches)) best = r;
    }
    if (valid !== 1) {
      const found = valid === 0 ? 'Found none valid' : `Found ${valid} valid alternatives`;
      res.pathless(`${JSON.stringify(path)} must validate one and only one schema (oneOf). ${found}`);
      if (best) res.merge(best);
    }
  }
  if (s.allOf?.length) {
    let valid = 0;
    for (const alt of s.allOf) {
      const r = run(alt, data, path);
      if (r.errors.length === 0) valid++;
      res.merge(r);
    }
    if (valid !== s.allOf.length) {
      const none = valid === 0 ? '. None validated' : '';
      res.pathless(`${JSON.stringify(path)} must validate all the schemas (allOf)${none}`);
    }
  }
  if (s.not && run(s.not, data, path).errors.length === 0) {
    res.pathless(`${JSON.stringify(path)} must not validate the schema (not)`);
  }
}

/** Only the first failing string check is reported, as kube-openapi does. */
function checkString(s: JSONSchemaProps, data: string, path: string, res: Result): void {
  if (s.maxLength !== undefined && data.length > s.maxLength && runeCount(data) > s.maxLength) {
    const unit = s.maxLength === 1 ? 'byte' : 'bytes';
    res.add('FieldValueTooLong', path, `Too long: may not be more than ${s.maxLength} ${unit}`);
    return;
  }
  if (s.minLength !== undefined && runeCount(data) < s.minLength) {
    res.invalid(path, data, `${path} in body should be at least ${s.minLength} chars long`);
    return;
  }
  if (s.pattern !== undefined) {
    const re = compilePattern(s.pattern);
    if (re instanceof Error) {
      res.invalid(
        path,
        data,
        `${path} in body should match '${s.pattern}, but pattern is invalid: ${re.message}'`,
      );
    } else if (!re.test(data)) {
      res.invalid(path, data, `${path} in body should match '${s.pattern}'`);
    }
  }
}

/** Only the formats cheap to check are checked; the others are accepted as written. */
function checkFormat(s: JSONSchemaProps, data: string, path: string, res: Result): void {
  const format = effectiveFormat(s);
  if (!format) return;
  const check = FORMATS[format.replaceAll('-', '')];
  if (check && !check(data)) res.typeInvalid(path, format, data);
}

function checkNumber(s: JSONSchemaProps, data: number, path: string, res: Result): void {
  const types = schemaTypes(s);
  if (types.length === 1 && types[0] === 'integer' && effectiveFormat(s) === 'int32') {
    if (data < INT32.min || data > INT32.max) {
      res.pathless(`Checked value must be of type integer with format int32 in ${path}`);
    }
  }
  if (s.multipleOf !== undefined && s.multipleOf > 0 && !Number.isInteger(data / s.multipleOf)) {
    res.invalid(path, data, `${path} in body should be a multiple of ${s.multipleOf}`);
  }
  if (s.minimum !== undefined) {
    if (s.exclusiveMinimum ? data <= s.minimum : data < s.minimum) {
      const op = s.exclusiveMinimum ? 'greater than' : 'greater than or equal to';
      res.invalid(path, data, `${path} in body should be ${op} ${s.minimum}`);
    }
  }
  if (s.maximum !== undefined) {
    if (s.exclusiveMaximum ? data >= s.maximum : data > s.maximum) {
      const op = s.exclusiveMaximum ? 'less than' : 'less than or equal to';
      res.invalid(path, data, `${path} in body should be ${op} ${s.maximum}`);
    }
  }
}

function checkArray(s: JSONSchemaProps, data: unknown[], path: string, res: Result): void {
  if (s.items) {
    for (let i = 0; i < data.length; i++) walk(s.items, data[i], `${path}[${i}]`, res);
  }
  if (s.minItems !== undefined && data.length < s.minItems) {
    res.invalid(path, data.length, `${path} in body should have at least ${s.minItems} items`);
  }
  if (s.maxItems !== undefined && data.length > s.maxItems) {
    const unit = s.maxItems === 1 ? 'item' : 'items';
    res.add('FieldValueTooMany', path, `Too many: ${data.length}: must have at most ${s.maxItems} ${unit}`);
  }
  if (s.uniqueItems && data.some((x, i) => data.findIndex((y) => deepEqual(x, y)) !== i)) {
    res.invalid(path, '', `${path} in body shouldn't contain duplicates`);
  }
}

function checkEnum(s: JSONSchemaProps, data: unknown, path: string, res: Result): void {
  if (!s.enum?.length || s.enum.some((e) => deepEqual(e, data))) return;
  const supported = s.enum.map((e) => JSON.stringify(typeof e === 'string' ? e : goJSON(e))).join(', ');
  res.add(
    'FieldValueNotSupported',
    path,
    `Unsupported value: ${goValue(data)}: supported values: ${supported}`,
  );
}

function checkEmbedded(data: Record<string, unknown>, path: string, res: Result): void {
  for (const key of ['apiVersion', 'kind']) {
    const v = data[key];
    const at = child(path, key);
    if (!(key in data)) res.add('FieldValueRequired', at, 'Required value');
    else if (typeof v !== 'string') res.invalid(at, v, 'must be a string');
    else if (v === '') res.invalid(at, v, 'must not be empty');
  }
}

function checkObject(s: JSONSchemaProps, data: Record<string, unknown>, path: string, res: Result): void {
  const keys = Object.keys(data);
  if (s.minProperties !== undefined && keys.length < s.minProperties) {
    res.invalid(path, keys.length, `${path} in body should have at least ${s.minProperties} properties`);
  }
  if (s.maxProperties !== undefined && keys.length > s.maxProperties) {
    const unit = s.maxProperties === 1 ? 'item' : 'items';
    res.add(
      'FieldValueTooMany',
      path,
      `Too many: ${keys.length}: must have at most ${s.maxProperties} ${unit}`,
    );
  }
  const props = s.properties;
  const extra = s.additionalProperties;
  for (const key of keys) {
    const prop = props?.[key];
    if (prop !== undefined) walk(prop, data[key], child(path, key), res);
    else if (extra === false) res.invalid(path, key, `${path}.${key} in body is a forbidden property`);
    else if (typeof extra === 'object') walk(extra, data[key], `${path}.${key}`, res);
  }
  if (s.required) {
    for (const key of s.required) {
      if (!(key in data)) res.add('FieldValueRequired', `${path}.${key}`, 'Required value');
    }
  }
  if (s['x-kubernetes-embedded-resource']) checkEmbedded(data, path, res);
}

/** One schema node against one value; the order of checks follows kube-openapi's. */
function walk(s: JSONSchemaProps, data: unknown, path: string, res: Result): void {
  res.matches++;
  checkType(s, data, path, res);
  if (data === null || data === undefined) {
    checkEnum(s, null, path, res);
    return;
  }
  checkComposition(s, data, path, res);
  if (typeof data === 'string') {
    checkString(s, data, path, res);
    checkFormat(s, data, path, res);
  } else if (typeof data === 'number') {
    checkNumber(s, data, path, res);
  } else if (Array.isArray(data)) {
    checkArray(s, data, path, res);
  }
  checkEnum(s, data, path, res);
  if (isObject(data)) checkObject(s, data, path, res);
}

function run(s: JSONSchemaProps, data: unknown, path: string): Result {
  const res = new Result();
  walk(s, data, path, res);
  return res;
}

// ---- list types -------------------------------------------------------------------

const hasListTypes = new WeakMap<JSONSchemaProps, boolean>();

/** Whether any node below `s` is a set or map list; cached so most objects skip the second pass. */
function needsListPass(s: JSONSchemaProps): boolean {
  let v = hasListTypes.get(s);
  if (v === undefined) {
    hasListTypes.set(s, false); // guards against a schema that refers to itself
    const lt = s['x-kubernetes-list-type'];
    v =
      lt === 'set' ||
      lt === 'map' ||
      (s.items !== undefined && needsListPass(s.items)) ||
      (typeof s.additionalProperties === 'object' && needsListPass(s.additionalProperties)) ||
      Object.values(s.properties ?? {}).some(needsListPass);
    hasListTypes.set(s, v);
  }
  return v;
}

/** Canonical text of a value, for set membership (Go's JSON with sorted keys). */
function setKey(v: unknown): string {
  return goJSON(v ?? null);
}

/** Indices of second occurrences, the one entry apiextensions reports per duplicated value. */
function duplicates(keys: string[]): number[] {
  const seen = new Map<string, number>();
  const out: number[] = [];
  keys.forEach((k, i) => {
    const times = seen.get(k) ?? 0;
    if (times === 1) out.push(i);
    seen.set(k, times + 1);
  });
  return out;
}

function duplicate(field: string, value: unknown): FieldError {
  return { type: 'FieldValueDuplicate', field, message: `Duplicate value: ${goValue(value)}` };
}

/** apiextensions' listtype validation; its paths use field.Path, so map keys read `labels[key]`. */
function listTypes(s: JSONSchemaProps, data: unknown, path: string, out: FieldError[]): void {
  if (!needsListPass(s)) return;
  if (Array.isArray(data)) {
    const lt = s['x-kubernetes-list-type'];
    if (lt === 'set') {
      for (const i of duplicates(data.map(setKey))) out.push(duplicate(`${path}[${i}]`, data[i]));
    } else if (lt === 'map') {
      listMap(s, data, path, out);
    }
    if (s.items) for (let i = 0; i < data.length; i++) listTypes(s.items, data[i], `${path}[${i}]`, out);
  } else if (isObject(data)) {
    for (const [k, v] of Object.entries(data)) {
      const prop = s.properties?.[k];
      if (prop) listTypes(prop, v, path === '' ? k : `${path}.${k}`, out);
      else if (typeof s.additionalProperties === 'object') {
        listTypes(s.additionalProperties, v, `${path}[${k}]`, out);
      }
    }
  }
}

function listMap(s: JSONSchemaProps, data: unknown[], path: string, out: FieldError[]): void {
  const bad = data.findIndex((x) => x !== null && !isObject(x));
  if (bad >= 0) {
    out.push({
      type: 'FieldValueInvalid',
      field: `${path}[${bad}]`,
      message: `Invalid value: ${goValue(data[bad])}: must be an object for an array of list-type map`,
    });
    return;
  }
  const keyFields = s['x-kubernetes-list-map-keys'] ?? [];
  const keys = data.map((x) => {
    const key: Record<string, unknown> = {};
    if (isObject(x)) for (const f of keyFields) if (f in x) key[f] = x[f];
    return key;
  });
  for (const i of duplicates(keys.map(setKey))) out.push(duplicate(`${path}[${i}]`, keys[i]));
}

/**
 * Validates `obj` against `schema` and returns what kube-apiserver would list in
 * `Status.details.causes`, in the order it finds them, without repeats. `obj` should have
 * been through `pruneUnknown(..., { remove: true })` first, as the server prunes before
 * it validates.
 */
export function validateObject(schema: JSONSchemaProps, obj: unknown): FieldError[] {
  const res = run(schema, obj, '');
  listTypes(schema, obj, '', res.errors);
  const seen = new Set<string>();
  return res.errors.filter((e) => {
    const text = `${e.field}: ${e.message}`;
    if (seen.has(text)) return false;
    seen.add(text);
    return true;
  });
}

// ---- pruning ----------------------------------------------------------------------

const TYPE_META = new Set(['apiVersion', 'kind', 'metadata']);

/** ObjectMeta's fields: anything else under a resource's `metadata` is unknown. */
const OBJECT_META = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);

export interface PruneOptions {
  /** Delete the unknown fields (and nulls the schema does not allow) from `obj`, as the server stores it. */
  remove?: boolean;
  /** `obj` is a whole resource, so apiVersion, kind and metadata are known at its root. Default true. */
  resourceRoot?: boolean;
}

interface Pruner {
  remove: boolean;
  /** Unknown fields of the resource's own metadata, which Kubernetes lists first. */
  meta: string[];
  paths: string[];
}

function pruneMeta(meta: unknown, path: string, p: Pruner): void {
  if (!isObject(meta)) return;
  for (const k of Object.keys(meta)) {
    if (OBJECT_META.has(k)) continue;
    (path === 'metadata' ? p.meta : p.paths).push(`${path}.${k}`);
    if (p.remove) delete meta[k];
  }
}

/** Null where the schema allows no null and has no default to put there instead. */
function isPrunableNull(v: unknown, s: JSONSchemaProps | undefined): boolean {
  return v === null && s !== undefined && !s.nullable && s.default === undefined;
}

/**
 * apiextensions' pruning: a field is known if its object's schema lists it or has
 * additionalProperties. Under x-kubernetes-preserve-unknown-fields (`skip`), unlisted
 * fields stay, but listed ones are still pruned by their own schema.
 */
function pruneNode(
  s: JSONSchemaProps | undefined,
  x: unknown,
  path: string,
  p: Pruner,
  skip = s?.['x-kubernetes-preserve-unknown-fields'] === true,
): void {
  if (skip && s === undefined) return;
  if (isObject(x)) {
    const embedded = s?.['x-kubernetes-embedded-resource'] === true;
    for (const k of Object.keys(x)) {
      const at = path === '' ? k : `${path}.${k}`;
      if (embedded && TYPE_META.has(k)) {
        if (k === 'metadata') pruneMeta(x[k], at, p);
        continue;
      }
      const extra = s?.additionalProperties;
      const sub = s?.properties?.[k] ?? (typeof extra === 'object' ? extra : undefined);
      if (sub !== undefined || extra === true) {
        if (p.remove && isPrunableNull(x[k], sub)) delete x[k];
        else pruneNode(sub, x[k], at, p);
      } else if (!skip) {
        p.paths.push(at);
        if (p.remove) delete x[k];
      }
    }
  } else if (Array.isArray(x)) {
    x.forEach((v, i) => {
      const items = s?.items;
      pruneNode(
        items,
        v,
        `${path}[${i}]`,
        p,
        skip || items?.['x-kubernetes-preserve-unknown-fields'] === true,
      );
    });
  }
}

/**
 * Lists the fields of `obj` that `schema` does not know, each as strict field validation
 * reports it (`unknown field "spec.ingres"`), metadata first, then sorted. With
 * `remove`, also deletes them (and null values the schema does not allow), which is what
 * kube-apiserver does silently when field validation is not Strict.
 */
export function pruneUnknown(schema: JSONSchemaProps, obj: unknown, opts: PruneOptions = {}): string[] {
  const p: Pruner = { remove: opts.remove ?? false, meta: [], paths: [] };
  const root = (opts.resourceRoot ?? true) ? { ...schema, 'x-kubernetes-embedded-resource': true } : schema;
  pruneNode(root, obj, '', p);
  return [...p.meta, ...p.paths.sort()].map((x) => `unknown field ${JSON.stringify(x)}`);
}
