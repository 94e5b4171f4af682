/**
 * Parsing and validation of NetworkPolicy, CiliumNetworkPolicy and
 * CiliumClusterwideNetworkPolicy into the policy model. Every problem is a
 * ValidationError naming the object (`CiliumNetworkPolicy production/catalog-l7-policy`),
 * the field path and the reason; warnings (things Cilium accepts but that rarely do what
 * was meant) are returned beside the policy.
 */
import { isIP } from 'node:net';
import { type DnsSelector, selectorProblem } from '../dns/pattern.js';
import { ValidationError } from '../errors.js';
import { NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX } from '../identity/index.js';
import { type LabelSelector, parseSelector } from '../k8s/selector.js';
import { CompiledRuleSet, type HeaderMatch, type HttpRule } from './http.js';
import {
  type Direction,
  ENTITIES,
  type Entity,
  type L7Rules,
  type Peer,
  type Policy,
  type PolicyKind,
  type PortGroup,
  type PortSpec,
  type Protocol,
  type Rule,
} from './model.js';

export interface Parsed {
  /** One policy, or one per entry of a Cilium policy's `specs`. */
  policies: Policy[];
  warnings: string[];
}

type Obj = Record<string, unknown>;

class Ctx {
  readonly warnings: string[] = [];
  constructor(
    readonly object: string,
    readonly kind: PolicyKind,
    readonly namespace: string | undefined,
  ) {}
  fail(field: string, reason: string): never {
    throw new ValidationError(this.object, field, reason);
  }
  obj(v: unknown, field: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'must be an object');
    return v as Obj;
  }
  list(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v;
  }
  str(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }
  known(o: Obj, field: string, allowed: readonly string[]): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k))
        this.fail(field ? `${field}.${k}` : k, `unknown field (allowed: ${allowed.join(', ')})`);
    }
  }
}

export const POLICY_KINDS: readonly PolicyKind[] = [
  'NetworkPolicy',
  'CiliumNetworkPolicy',
  'CiliumClusterwideNetworkPolicy',
];

/** Parses one manifest object of a policy kind. Throws ValidationError. */
export function parsePolicy(doc: Obj): Parsed {
  const kind = doc.kind as PolicyKind;
  const meta = (doc.metadata ?? {}) as Obj;
  const name = typeof meta.name === 'string' ? meta.name : '';
  const namespaced = kind !== 'CiliumClusterwideNetworkPolicy';
  const namespace = namespaced
    ? typeof meta.namespace === 'string'
      ? meta.namespace
      : 'default'
    : undefined;
  const ctx = new Ctx(`${kind} ${namespace ? `${namespace}/` : ''}${name || '(no name)'}`, kind, namespace);
  if (!POLICY_KINDS.includes(kind)) ctx.fail('kind', `"${String(doc.kind)}" is not a policy kind`);
  const expectedApi = kind === 'NetworkPolicy' ? 'networking.k8s.io/v1' : 'cilium.io/v2';
  if (doc.apiVersion !== expectedApi)
    ctx.fail('apiVersion', `${kind} is ${expectedApi}, not "${String(doc.apiVersion)}"`);
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name))
    ctx.fail('metadata.name', `"${name}" is not a valid name`);
  if (!namespaced && meta.namespace !== undefined)
    ctx.warnings.push(`${ctx.object}: metadata.namespace is ignored on a cluster-wide policy`);
  const origin = { kind, name, ...(namespace ? { namespace } : {}) };
  const labels =
    meta.labels && typeof meta.labels === 'object' ? (meta.labels as Record<string, string>) : undefined;
  const policies =
    kind === 'NetworkPolicy' ? [parseNetworkPolicy(ctx, doc, origin)] : parseCiliumPolicy(ctx, doc, origin);
  if (labels) for (const p of policies) p.labels = labels;
  return { policies, warnings: ctx.warnings };
}

// ---------------------------------------------------------------- NetworkPolicy

function parseNetworkPolicy(ctx: Ctx, doc: Obj, origin: Policy['origin']): Policy {
  const spec = ctx.obj(doc.spec ?? {}, 'spec');
  ctx.known(spec, 'spec', ['podSelector', 'ingress', 'egress', 'policyTypes']);
  if (spec.podSelector === undefined)
    ctx.fail('spec.podSelector', 'is required ({} selects every pod of the namespace)');
  const subject = parseSelector(ctx.object, 'spec.podSelector', spec.podSelector);
  const types = ctx.list(spec.policyTypes, 'spec.policyTypes').map((t, i) => {
    if (t !== 'Ingress' && t !== 'Egress')
      ctx.fail(`spec.policyTypes[${i}]`, `"${String(t)}" is not Ingress or Egress`);
    return t;
  });
  // Omitted policyTypes: Ingress always, Egress when the policy has egress rules.
  const enforces = {
    ingress: spec.policyTypes === undefined ? true : types.includes('Ingress'),
    egress: spec.policyTypes === undefined ? spec.egress !== undefined : types.includes('Egress'),
  };
  const rules: Rule[] = [];
  for (const direction of ['ingress', 'egress'] as const) {
    const peersKey = direction === 'ingress' ? 'from' : 'to';
    ctx.list(spec[direction], `spec.${direction}`).forEach((r, i) => {
      const path = `spec.${direction}[${i}]`;
      const rule = ctx.obj(r, path);
      ctx.known(rule, path, [peersKey, 'ports']);
      const rawPeers = rule[peersKey];
      const peers: Peer[] | 'all' =
        rawPeers === undefined || (Array.isArray(rawPeers) && rawPeers.length === 0)
          ? 'all'
          : ctx
              .list(rawPeers, `${path}.${peersKey}`)
              .map((p, j) => npPeer(ctx, p, `${path}.${peersKey}[${j}]`));
      const ports = ctx
        .list(rule.ports, `${path}.ports`)
        .map((p, j) => npPort(ctx, p, `${path}.ports[${j}]`));
      rules.push({
        direction,
        deny: false,
        peers,
        requires: [],
        portGroups: ports.length ? [{ ports }] : [],
        icmps: [],
        path,
      });
    });
  }
  return { origin, subject: { selector: subject, namespace: ctx.namespace! }, rules, enforces };
}

/** Namespace selectors select through the namespace labels Cilium gives every endpoint. */
function namespaceScoped(sel: LabelSelector, prefix: string): LabelSelector {
  const out: LabelSelector = {};
  if (sel.matchLabels) {
    out.matchLabels = Object.fromEntries(Object.entries(sel.matchLabels).map(([k, v]) => [prefix + k, v]));
  }
  if (sel.matchExpressions)
    out.matchExpressions = sel.matchExpressions.map((e) => ({ ...e, key: prefix + e.key }));
  return out;
}

function merge(a: LabelSelector, b: LabelSelector): LabelSelector {
  return {
    matchLabels: { ...a.matchLabels, ...b.matchLabels },
    matchExpressions: [...(a.matchExpressions ?? []), ...(b.matchExpressions ?? [])],
  };
}

const IS_POD: LabelSelector = {
  matchExpressions: [{ key: NAMESPACE_LABEL, operator: 'Exists', values: [] }],
};

function npPeer(ctx: Ctx, raw: unknown, path: string): Peer {
  const p = ctx.obj(raw, path);
  ctx.known(p, path, ['podSelector', 'namespaceSelector', 'ipBlock']);
  if (p.ipBlock !== undefined) {
    if (p.podSelector !== undefined || p.namespaceSelector !== undefined) {
      ctx.fail(path, 'ipBlock cannot be combined with podSelector or namespaceSelector');
    }
    const b = ctx.obj(p.ipBlock, `${path}.ipBlock`);
    ctx.known(b, `${path}.ipBlock`, ['cidr', 'except']);
    const cidr = parseCidr(ctx, b.cidr, `${path}.ipBlock.cidr`);
    const except = ctx.list(b.except, `${path}.ipBlock.except`).map((e, i) => {
      const c = parseCidr(ctx, e, `${path}.ipBlock.except[${i}]`);
      if (!cidrContains(cidr, c)) ctx.fail(`${path}.ipBlock.except[${i}]`, `${c} is not inside ${cidr}`);
      return c;
    });
    return { type: 'cidr', cidr, except };
  }
  if (p.podSelector === undefined && p.namespaceSelector === undefined) {
    ctx.fail(path, 'a peer needs podSelector, namespaceSelector or ipBlock');
  }
  const pod = parseSelector(ctx.object, `${path}.podSelector`, p.podSelector);
  let sel = merge(IS_POD, pod);
  if (p.namespaceSelector !== undefined) {
    const ns = parseSelector(ctx.object, `${path}.namespaceSelector`, p.namespaceSelector);
    sel = merge(sel, namespaceScoped(ns, NAMESPACE_LABELS_PREFIX));
  } else {
    sel = merge(sel, { matchLabels: { [NAMESPACE_LABEL]: ctx.namespace! } });
  }
  return { type: 'endpoints', selector: sel };
}

function npPort(ctx: Ctx, raw: unknown, path: string): PortSpec {
  const p = ctx.obj(raw, path);
  ctx.known(p, path, ['protocol', 'port', 'endPort']);
  const protocol = (p.protocol ?? 'TCP') as string;
  if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') {
    ctx.fail(`${path}.protocol`, `"${protocol}" is not TCP, UDP or SCTP`);
  }
  const spec: PortSpec = { protocol };
  if (p.port !== undefined) {
    if (typeof p.port === 'number') spec.port = checkPortNumber(ctx, p.port, `${path}.port`, false);
    else if (typeof p.port === 'string' && /^\d+$/.test(p.port))
      ctx.fail(`${path}.port`, 'a port number must not be quoted in a NetworkPolicy');
    else spec.port = checkPortName(ctx, p.port, `${path}.port`);
  }
  if (p.endPort !== undefined) {
    if (typeof spec.port !== 'number') ctx.fail(`${path}.endPort`, 'needs a numeric port');
    const end = checkPortNumber(ctx, p.endPort, `${path}.endPort`, false);
    if (end < spec.port) ctx.fail(`${path}.endPort`, `${end} is below port ${spec.port}`);
    spec.endPort = end;
  }
  return spec;
}

// ------------------------------------------------------------- Cilium policies

function parseCiliumPolicy(ctx: Ctx, doc: Obj, origin: Policy['origin']): Policy[] {
  if (doc.spec === undefined && doc.specs === undefined) ctx.fail('spec', 'spec or specs is required');
  const out: Policy[] = [];
  if (doc.spec !== undefined) out.push(ciliumSpec(ctx, ctx.obj(doc.spec, 'spec'), 'spec', origin));
  // Each entry of `specs` has its own selector: one policy each, told apart by `part`.
  for (const [i, s] of ctx.list(doc.specs, 'specs').entries()) {
    out.push(ciliumSpec(ctx, ctx.obj(s, `specs[${i}]`), `specs[${i}]`, { ...origin, part: i }));
  }
  return out;
}

const RULE_FIELDS: Record<Direction, string[]> = {
  ingress: [
    'fromEndpoints',
    'fromRequires',
    'fromEntities',
    'fromCIDR',
    'fromCIDRSet',
    'fromNodes',
    'fromGroups',
  ],
  egress: [
    'toEndpoints',
    'toRequires',
    'toEntities',
    'toCIDR',
    'toCIDRSet',
    'toFQDNs',
    'toServices',
    'toNodes',
    'toGroups',
  ],
};

function ciliumSpec(ctx: Ctx, spec: Obj, base: string, origin: Policy['origin']): Policy {
  ctx.known(spec, base, [
    'endpointSelector',
    'nodeSelector',
    'ingress',
    'ingressDeny',
    'egress',
    'egressDeny',
    'labels',
    'description',
    'enableDefaultDeny',
  ]);
  if (spec.endpointSelector !== undefined && spec.nodeSelector !== undefined) {
    ctx.fail(base, 'endpointSelector and nodeSelector are mutually exclusive');
  }
  if (spec.endpointSelector === undefined && spec.nodeSelector === undefined) {
    ctx.fail(`${base}.endpointSelector`, 'is required (or nodeSelector for host policies)');
  }
  if (spec.nodeSelector !== undefined && ctx.kind !== 'CiliumClusterwideNetworkPolicy') {
    ctx.fail(`${base}.nodeSelector`, 'is only allowed in a CiliumClusterwideNetworkPolicy');
  }
  const subjectSel = ciliumSelector(
    ctx,
    spec.endpointSelector ?? spec.nodeSelector,
    `${base}.${spec.endpointSelector !== undefined ? 'endpointSelector' : 'nodeSelector'}`,
  );
  const rules: Rule[] = [];
  const has = { ingress: false, egress: false };
  for (const [field, direction, deny] of [
    ['ingress', 'ingress', false],
    ['ingressDeny', 'ingress', true],
    ['egress', 'egress', false],
    ['egressDeny', 'egress', true],
  ] as const) {
    if (spec[field] === undefined) continue;
    const list = ctx.list(spec[field], `${base}.${field}`);
    if (list.length) has[direction] = true;
    for (const [i, r] of list.entries())
      rules.push(ciliumRule(ctx, r, `${base}.${field}[${i}]`, direction, deny));
  }
  const dd =
    spec.enableDefaultDeny === undefined ? {} : ctx.obj(spec.enableDefaultDeny, `${base}.enableDefaultDeny`);
  ctx.known(dd, `${base}.enableDefaultDeny`, ['ingress', 'egress']);
  const enforces = {
    ingress: has.ingress && dd.ingress !== false,
    egress: has.egress && dd.egress !== false,
  };
  for (const d of ['ingress', 'egress'] as const) {
    if (dd[d] !== undefined && typeof dd[d] !== 'boolean')
      ctx.fail(`${base}.enableDefaultDeny.${d}`, 'must be true or false');
  }
  const subject: Policy['subject'] = { selector: subjectSel };
  if (ctx.namespace) subject.namespace = ctx.namespace;
  if (spec.nodeSelector !== undefined) subject.nodeSelector = subjectSel;
  const description =
    spec.description === undefined ? undefined : ctx.str(spec.description, `${base}.description`);
  // FQDN rules only see IPs the DNS proxy learns: warn when no DNS rule feeds them.
  if (rules.some((r) => r.peers !== 'all' && r.peers.some((p) => p.type === 'fqdn'))) {
    const hasDns = rules.some((r) => r.portGroups.some((g) => g.l7?.dns?.length));
    if (!hasDns) {
      ctx.warnings.push(
        `${ctx.object}: toFQDNs without a dns rule in the same policy: IPs are learned only from DNS traffic a dns rule sends through the proxy`,
      );
    }
  }
  return { origin, subject, rules, enforces, ...(description === undefined ? {} : { description }) };
}

/** A Cilium endpoint selector: `k8s:`/`any:` prefixes dropped, `reserved:` kept. */
function ciliumSelector(ctx: Ctx, raw: unknown, field: string): LabelSelector {
  const sel = parseSelector(ctx.object, field, raw);
  const strip = (k: string) => k.replace(/^(k8s|any):/, '');
  const out: LabelSelector = {};
  if (sel.matchLabels)
    out.matchLabels = Object.fromEntries(Object.entries(sel.matchLabels).map(([k, v]) => [strip(k), v]));
  if (sel.matchExpressions)
    out.matchExpressions = sel.matchExpressions.map((e) => ({ ...e, key: strip(e.key) }));
  return out;
}

function mentionsNamespace(sel: LabelSelector): boolean {
  return (
    sel.matchLabels?.[NAMESPACE_LABEL] !== undefined ||
    (sel.matchExpressions ?? []).some((e) => e.key === NAMESPACE_LABEL)
  );
}

/** Cilium scopes a namespaced policy's endpoint selectors to its namespace unless they name one. */
function scopedEndpoints(ctx: Ctx, sel: LabelSelector): LabelSelector {
  if (sel.matchLabels && Object.keys(sel.matchLabels).some((k) => k.startsWith('reserved:'))) return sel;
  if (ctx.namespace && !mentionsNamespace(sel))
    return merge(sel, { matchLabels: { [NAMESPACE_LABEL]: ctx.namespace } });
  return merge(IS_POD, sel);
}

function ciliumRule(ctx: Ctx, raw: unknown, path: string, direction: Direction, deny: boolean): Rule {
  const r = ctx.obj(raw, path);
  ctx.known(r, path, [...RULE_FIELDS[direction], 'toPorts', 'icmps', 'authentication']);
  const dir = direction === 'ingress' ? 'from' : 'to';
  const peers: Peer[] = [];
  let anyL3 = false;
  for (const [i, s] of ctx.list(r[`${dir}Endpoints`], `${path}.${dir}Endpoints`).entries()) {
    anyL3 = true;
    peers.push({
      type: 'endpoints',
      selector: scopedEndpoints(ctx, ciliumSelector(ctx, s, `${path}.${dir}Endpoints[${i}]`)),
    });
  }
  for (const [i, e] of ctx.list(r[`${dir}Entities`], `${path}.${dir}Entities`).entries()) {
    anyL3 = true;
    if (!ENTITIES.includes(e as Entity))
      ctx.fail(`${path}.${dir}Entities[${i}]`, `"${String(e)}" is not an entity (${ENTITIES.join(', ')})`);
    peers.push({ type: 'entity', entity: e as Entity });
  }
  for (const [i, c] of ctx.list(r[`${dir}CIDR`], `${path}.${dir}CIDR`).entries()) {
    anyL3 = true;
    peers.push({ type: 'cidr', cidr: parseCidr(ctx, c, `${path}.${dir}CIDR[${i}]`), except: [] });
  }
  for (const [i, s] of ctx.list(r[`${dir}CIDRSet`], `${path}.${dir}CIDRSet`).entries()) {
    anyL3 = true;
    const f = `${path}.${dir}CIDRSet[${i}]`;
    const o = ctx.obj(s, f);
    ctx.known(o, f, ['cidr', 'except', 'cidrGroupRef', 'cidrGroupSelector']);
    if (o.cidrGroupRef !== undefined || o.cidrGroupSelector !== undefined) {
      ctx.fail(f, 'CiliumCIDRGroup references are not supported by Hypha yet');
    }
    const cidr = parseCidr(ctx, o.cidr, `${f}.cidr`);
    const except = ctx.list(o.except, `${f}.except`).map((e, j) => {
      const x = parseCidr(ctx, e, `${f}.except[${j}]`);
      if (!cidrContains(cidr, x)) ctx.fail(`${f}.except[${j}]`, `${x} is not inside ${cidr}`);
      return x;
    });
    peers.push({ type: 'cidr', cidr, except });
  }
  for (const k of ['fromNodes', 'toNodes', 'fromGroups', 'toGroups']) {
    if (r[k] !== undefined) ctx.fail(`${path}.${k}`, 'is not supported by Hypha yet');
  }
  if (direction === 'egress') {
    for (const [i, s] of ctx.list(r.toFQDNs, `${path}.toFQDNs`).entries()) {
      anyL3 = true;
      if (deny)
        ctx.fail(`${path}.toFQDNs`, 'is not allowed in egressDeny (Cilium does not support FQDN deny rules)');
      peers.push({ type: 'fqdn', selector: dnsSelector(ctx, s, `${path}.toFQDNs[${i}]`) });
    }
    for (const [i, s] of ctx.list(r.toServices, `${path}.toServices`).entries()) {
      anyL3 = true;
      const f = `${path}.toServices[${i}]`;
      const o = ctx.obj(s, f);
      ctx.known(o, f, ['k8sService', 'k8sServiceSelector']);
      if (o.k8sService !== undefined) {
        const svc = ctx.obj(o.k8sService, `${f}.k8sService`);
        ctx.known(svc, `${f}.k8sService`, ['serviceName', 'namespace']);
        peers.push({
          type: 'service',
          name: ctx.str(svc.serviceName, `${f}.k8sService.serviceName`),
          namespace:
            svc.namespace === undefined
              ? (ctx.namespace ?? 'default')
              : ctx.str(svc.namespace, `${f}.k8sService.namespace`),
        });
      } else if (o.k8sServiceSelector !== undefined) {
        const ss = ctx.obj(o.k8sServiceSelector, `${f}.k8sServiceSelector`);
        ctx.known(ss, `${f}.k8sServiceSelector`, ['selector', 'namespace']);
        peers.push({
          type: 'service',
          namespace:
            ss.namespace === undefined
              ? (ctx.namespace ?? 'default')
              : ctx.str(ss.namespace, `${f}.k8sServiceSelector.namespace`),
          selector: parseSelector(ctx.object, `${f}.k8sServiceSelector.selector`, ss.selector),
        });
      } else {
        ctx.fail(f, 'needs k8sService or k8sServiceSelector');
      }
    }
  }
  const requires = ctx
    .list(r[`${dir}Requires`], `${path}.${dir}Requires`)
    .map((s, i) => scopedEndpoints(ctx, ciliumSelector(ctx, s, `${path}.${dir}Requires[${i}]`)));
  const portGroups = ctx
    .list(r.toPorts, `${path}.toPorts`)
    .map((g, i) => portGroup(ctx, g, `${path}.toPorts[${i}]`, deny, direction));
  const icmps = ctx
    .list(r.icmps, `${path}.icmps`)
    .flatMap((g, i) => icmpFields(ctx, g, `${path}.icmps[${i}]`));
  // No L3 field: with ports it allows every peer; with nothing at all it selects none
  // (`ingress: [{}]` turns on default deny and allows nothing, as in Cilium).
  const restrictsL4 = portGroups.length > 0 || icmps.length > 0;
  const rule: Rule = {
    direction,
    deny,
    peers: anyL3 ? peers : restrictsL4 ? 'all' : [],
    requires,
    portGroups,
    icmps,
    path,
  };
  if (r.authentication !== undefined) {
    const a = ctx.obj(r.authentication, `${path}.authentication`);
    ctx.known(a, `${path}.authentication`, ['mode']);
    const modes: Record<string, number | undefined> = {
      disabled: undefined,
      required: 1,
      'test-always-fail': 2,
    };
    if (typeof a.mode !== 'string' || !(a.mode in modes)) {
      ctx.fail(
        `${path}.authentication.mode`,
        `"${String(a.mode)}" is not one of disabled, required, test-always-fail`,
      );
    }
    if (deny) ctx.fail(`${path}.authentication`, 'is not allowed on deny rules');
    const t = modes[a.mode];
    if (t !== undefined) rule.authType = t;
  }
  return rule;
}

function dnsSelector(ctx: Ctx, raw: unknown, path: string): DnsSelector {
  const o = ctx.obj(raw, path);
  ctx.known(o, path, ['matchName', 'matchPattern']);
  const s: DnsSelector = {};
  if (o.matchName !== undefined) s.matchName = ctx.str(o.matchName, `${path}.matchName`);
  if (o.matchPattern !== undefined) s.matchPattern = ctx.str(o.matchPattern, `${path}.matchPattern`);
  const problem = selectorProblem(s);
  if (problem) ctx.fail(path, problem);
  return s;
}

function portGroup(ctx: Ctx, raw: unknown, path: string, deny: boolean, direction: Direction): PortGroup {
  const g = ctx.obj(raw, path);
  ctx.known(g, path, ['ports', 'rules', 'terminatingTLS', 'originatingTLS', 'serverNames', 'listener']);
  for (const k of ['terminatingTLS', 'originatingTLS', 'serverNames', 'listener']) {
    if (g[k] !== undefined) ctx.fail(`${path}.${k}`, 'is not supported by Hypha yet');
  }
  const ports = ctx.list(g.ports, `${path}.ports`).map((p, i) => cnpPort(ctx, p, `${path}.ports[${i}]`));
  const group: PortGroup = { ports };
  if (g.rules !== undefined) {
    if (deny) ctx.fail(`${path}.rules`, 'L7 rules are not allowed on deny rules');
    const rules = ctx.obj(g.rules, `${path}.rules`);
    ctx.known(rules, `${path}.rules`, ['http', 'dns', 'kafka', 'l7proto', 'l7']);
    for (const k of ['kafka', 'l7proto', 'l7'])
      if (rules[k] !== undefined) ctx.fail(`${path}.rules.${k}`, 'is not supported by Hypha yet');
    const l7: L7Rules = {};
    if (rules.http !== undefined) {
      if (ports.some((p) => p.protocol === 'UDP'))
        ctx.fail(`${path}.rules.http`, 'HTTP rules need TCP ports, not UDP');
      l7.http = ctx
        .list(rules.http, `${path}.rules.http`)
        .map((h, i) => httpRule(ctx, h, `${path}.rules.http[${i}]`));
    }
    if (rules.dns !== undefined) {
      if (direction !== 'egress') ctx.fail(`${path}.rules.dns`, 'DNS rules apply to egress only');
      l7.dns = ctx
        .list(rules.dns, `${path}.rules.dns`)
        .map((d, i) => dnsSelector(ctx, d, `${path}.rules.dns[${i}]`));
      if (!ports.some((p) => p.port === 53 || p.port === undefined)) {
        ctx.warnings.push(`${ctx.object}: ${path}.rules.dns applies to ports other than 53`);
      }
    }
    if (l7.http && l7.dns) ctx.fail(`${path}.rules`, 'one port group carries one kind of L7 rule');
    group.l7 = l7;
  }
  return group;
}

function httpRule(ctx: Ctx, raw: unknown, path: string): HttpRule {
  const h = ctx.obj(raw, path);
  ctx.known(h, path, ['method', 'path', 'host', 'headers', 'headerMatches']);
  const rule: HttpRule = {};
  for (const k of ['method', 'path', 'host'] as const) {
    if (h[k] === undefined) continue;
    rule[k] = ctx.str(h[k], `${path}.${k}`);
  }
  if (h.headers !== undefined)
    rule.headers = ctx.list(h.headers, `${path}.headers`).map((x, i) => ctx.str(x, `${path}.headers[${i}]`));
  if (h.headerMatches !== undefined) {
    rule.headerMatches = ctx.list(h.headerMatches, `${path}.headerMatches`).map((x, i) => {
      const f = `${path}.headerMatches[${i}]`;
      const m = ctx.obj(x, f);
      ctx.known(m, f, ['name', 'value', 'mismatch', 'secret']);
      if (m.secret !== undefined) ctx.fail(`${f}.secret`, 'secrets are not supported by Hypha yet');
      const hm: HeaderMatch = { name: ctx.str(m.name, `${f}.name`) };
      if (m.value !== undefined) hm.value = ctx.str(m.value, `${f}.value`);
      if (m.mismatch !== undefined) {
        if (!['LOG', 'ADD', 'DELETE', 'REPLACE'].includes(m.mismatch as string)) {
          ctx.fail(`${f}.mismatch`, `"${String(m.mismatch)}" is not LOG, ADD, DELETE or REPLACE`);
        }
        hm.mismatch = m.mismatch as HeaderMatch['mismatch'] & string;
      }
      return hm;
    });
  }
  // Compile once here so a bad regular expression is a validation error, not a proxy crash.
  try {
    new CompiledRuleSet({ groups: [{ identities: [], rules: [rule] }] });
  } catch (err) {
    ctx.fail(
      path,
      `regular expression does not compile: ${(err as Error).message.replace(/^groups\[0\]\.rules\[0\]\./, '')}`,
    );
  }
  return rule;
}

function cnpPort(ctx: Ctx, raw: unknown, path: string): PortSpec {
  const p = ctx.obj(raw, path);
  ctx.known(p, path, ['port', 'endPort', 'protocol']);
  const protocol = (p.protocol ?? 'ANY') as string;
  if (!['TCP', 'UDP', 'SCTP', 'ANY'].includes(protocol))
    ctx.fail(`${path}.protocol`, `"${protocol}" is not TCP, UDP, SCTP or ANY`);
  const spec: PortSpec = { protocol: protocol as Protocol };
  if (p.port !== undefined) {
    const s = typeof p.port === 'number' ? String(p.port) : ctx.str(p.port, `${path}.port`);
    if (/^\d+$/.test(s)) {
      const n = checkPortNumber(ctx, Number(s), `${path}.port`, true);
      if (n !== 0) spec.port = n; // "0" means every port, as in Cilium
    } else {
      spec.port = checkPortName(ctx, s, `${path}.port`);
    }
  }
  if (p.endPort !== undefined) {
    if (typeof spec.port !== 'number') ctx.fail(`${path}.endPort`, 'needs a numeric port');
    const end = checkPortNumber(ctx, p.endPort, `${path}.endPort`, false);
    if (end < spec.port) ctx.fail(`${path}.endPort`, `${end} is below port ${spec.port}`);
    spec.endPort = end;
  }
  return spec;
}

const ICMP4_TYPES: Record<string, number> = {
  EchoReply: 0,
  DestinationUnreachable: 3,
  Redirect: 5,
  Echo: 8,
  EchoRequest: 8,
  RouterAdvertisement: 9,
  RouterSelection: 10,
  TimeExceeded: 11,
  ParameterProblem: 12,
  Timestamp: 13,
  TimestampReply: 14,
};
const ICMP6_TYPES: Record<string, number> = {
  DestinationUnreachable: 1,
  PacketTooBig: 2,
  TimeExceeded: 3,
  ParameterProblem: 4,
  EchoRequest: 128,
  EchoReply: 129,
  MulticastListenerQuery: 130,
  RouterSolicitation: 133,
  RouterAdvertisement: 134,
  NeighborSolicitation: 135,
  NeighborAdvertisement: 136,
};

function icmpFields(ctx: Ctx, raw: unknown, path: string): { family: 4 | 6; type: number }[] {
  const g = ctx.obj(raw, path);
  ctx.known(g, path, ['fields']);
  return ctx.list(g.fields, `${path}.fields`).map((x, i) => {
    const f = `${path}.fields[${i}]`;
    const o = ctx.obj(x, f);
    ctx.known(o, f, ['type', 'family']);
    const fam = o.family ?? 'IPv4';
    if (fam !== 'IPv4' && fam !== 'IPv6') ctx.fail(`${f}.family`, `"${String(fam)}" is not IPv4 or IPv6`);
    const names = fam === 'IPv4' ? ICMP4_TYPES : ICMP6_TYPES;
    let type: number;
    if (typeof o.type === 'number') type = o.type;
    else if (typeof o.type === 'string' && /^\d+$/.test(o.type)) type = Number(o.type);
    else if (typeof o.type === 'string' && names[o.type] !== undefined) type = names[o.type]!;
    else
      ctx.fail(
        `${f}.type`,
        `"${String(o.type)}" is not an ICMP${fam === 'IPv6' ? 'v6' : ''} type number or name`,
      );
    if (!Number.isInteger(type) || type < 0 || type > 255) ctx.fail(`${f}.type`, `${type} is not 0 to 255`);
    return { family: fam === 'IPv4' ? 4 : 6, type };
  });
}

// ------------------------------------------------------------------ shared bits

function checkPortNumber(ctx: Ctx, v: unknown, field: string, allowZero: boolean): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    ctx.fail(field, `${JSON.stringify(v)} is not a port number (${allowZero ? 0 : 1} to 65535)`);
  }
  return v;
}

function checkPortName(ctx: Ctx, v: unknown, field: string): string {
  if (typeof v !== 'string' || !/^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/.test(v) || !/[a-z]/.test(v)) {
    ctx.fail(
      field,
      `${JSON.stringify(v)} is neither a port number nor a port name (IANA_SVC_NAME, 1-15 characters)`,
    );
  }
  return v;
}

export function parseCidr(ctx: Pick<Ctx, 'fail'>, v: unknown, field: string): string {
  if (typeof v !== 'string') ctx.fail(field, 'must be a CIDR string');
  const [addr, len, extra] = v.split('/');
  const fam = isIP(addr ?? '');
  const max = fam === 6 ? 128 : 32;
  if (fam === 0 || len === undefined || extra !== undefined || !/^\d{1,3}$/.test(len) || Number(len) > max) {
    ctx.fail(field, `"${v}" is not a CIDR (like 10.0.0.0/8)`);
  }
  if (fam === 4) {
    // Normalise to the network address, as Kubernetes and Cilium compare prefixes.
    const n = ipv4ToInt(addr!);
    const l = Number(len);
    const mask = l === 0 ? 0 : (~0 << (32 - l)) >>> 0;
    return `${intToIpv4((n & mask) >>> 0)}/${l}`;
  }
  return `${addr}/${len}`;
}

export function ipv4ToInt(a: string): number {
  return a.split('.').reduce((n, o) => (n << 8) + Number(o), 0) >>> 0;
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Whether prefix `inner` lies within `outer` (IPv4; IPv6 by string prefix of equal form). */
export function cidrContains(outer: string, inner: string): boolean {
  const [oa, ol] = outer.split('/');
  const [ia, il] = inner.split('/');
  if (isIP(oa ?? '') !== isIP(ia ?? '')) return false;
  if (Number(il) < Number(ol)) return false;
  if (isIP(oa ?? '') === 4) {
    const l = Number(ol);
    const mask = l === 0 ? 0 : (~0 << (32 - l)) >>> 0;
    return (ipv4ToInt(oa!) & mask) >>> 0 === (ipv4ToInt(ia!) & mask) >>> 0;
  }
  return ia!.startsWith(oa!.replace(/::$/, ''));
}
