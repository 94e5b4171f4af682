/**
 * The part of a v1 Pod the lab's kubelet reads, and its validation. Pods arrive as plain
 * JSON from the API server; `parsePod` checks them at this edge and returns a `PodDef`
 * whose types hold from then on.
 */
import { ValidationError } from '../../errors.js';

// --- the v1 shapes, as written in manifests (only the fields the lab acts on)

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid: string; labels?: Record<string, string> };
  spec: PodSpec;
}

export interface PodSpec {
  containers: Container[];
  restartPolicy?: RestartPolicy;
  terminationGracePeriodSeconds?: number;
  nodeName?: string;
  hostname?: string;
  hostNetwork?: boolean;
  dnsPolicy?: DnsPolicy;
  dnsConfig?: { nameservers?: string[]; searches?: string[]; options?: { name: string; value?: string }[] };
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: EnvVar[];
  ports?: ContainerPort[];
  readinessProbe?: Probe;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

export interface ContainerPort {
  containerPort: number;
  name?: string;
  protocol?: Protocol;
}

export interface Probe {
  httpGet?: {
    path?: string;
    port: number | string;
    host?: string;
    scheme?: 'HTTP' | 'HTTPS';
    httpHeaders?: { name: string; value: string }[];
  };
  tcpSocket?: { port: number | string; host?: string };
  exec?: { command: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
}

export type RestartPolicy = 'Always' | 'OnFailure' | 'Never';
export type DnsPolicy = 'ClusterFirst' | 'ClusterFirstWithHostNet' | 'Default' | 'None';
export type Protocol = 'TCP' | 'UDP' | 'SCTP';

// --- what the runtime works from

/** A validated pod. */
export interface PodDef {
  /** `namespace/name`. */
  readonly key: string;
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly hostname: string;
  /** Runs in the node's network namespace: no namespace of its own, no CNI. */
  readonly hostNetwork: boolean;
  readonly restartPolicy: RestartPolicy;
  /** terminationGracePeriodSeconds, when the pod sets it. */
  readonly gracePeriodMs: number | undefined;
  readonly dnsPolicy: DnsPolicy;
  readonly dnsConfig: {
    readonly nameservers: readonly string[];
    readonly searches: readonly string[];
    readonly options: readonly string[];
  };
  readonly containers: readonly ContainerDef[];
}

export interface ContainerDef {
  readonly name: string;
  readonly image: string;
  /**
   * `command` then `args`. Lab images have no entrypoint, so `args` alone is the command
   * (as for busybox); undefined when both are absent: the built-in server runs.
   */
  readonly argv: readonly string[] | undefined;
  readonly workingDir: string | undefined;
  readonly env: readonly EnvDef[];
  readonly ports: readonly PortDef[];
  readonly readiness: Readiness;
}

export type EnvDef =
  | { readonly name: string; readonly value: string }
  | { readonly name: string; readonly fieldPath: string };

export interface PortDef {
  readonly port: number;
  readonly protocol: Protocol;
  readonly name: string | undefined;
}

/** When a running container counts as ready. */
export type Readiness =
  /** As soon as it runs (no TCP ports, no probe). */
  | { readonly kind: 'running' }
  /** When every TCP containerPort accepts a connection (no probe). */
  | { readonly kind: 'ports'; readonly ports: readonly number[] }
  | { readonly kind: 'probe'; readonly action: ProbeAction; readonly timing: ProbeTiming };

export type ProbeAction =
  | {
      readonly kind: 'http';
      readonly scheme: 'http' | 'https';
      /** Undefined: the pod's IP. */
      readonly host: string | undefined;
      readonly port: number;
      readonly path: string;
      readonly headers: readonly { readonly name: string; readonly value: string }[];
    }
  | { readonly kind: 'tcp'; readonly host: string | undefined; readonly port: number }
  | { readonly kind: 'exec'; readonly command: readonly string[] };

export interface ProbeTiming {
  readonly initialDelayMs: number;
  readonly periodMs: number;
  readonly timeoutMs: number;
  readonly successThreshold: number;
  readonly failureThreshold: number;
}

export function podKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

// --- validation

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
/** IANA_SVC_NAME: lower-case letters, digits and inner single dashes, at least one letter. */
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*(?<!-)$/;
const FIELD_PATHS = new Set([
  'metadata.name',
  'metadata.namespace',
  'metadata.uid',
  'spec.nodeName',
  'spec.serviceAccountName',
  'status.podIP',
  'status.podIPs',
  'status.hostIP',
  'status.hostIPs',
]);
const LABEL_FIELD = /^metadata\.labels\['([^']+)'\]$/;

/** Reads untyped JSON, naming the object in every error. */
class Reader {
  constructor(readonly object: string) {}

  fail(field: string, reason: string): never {
    throw new ValidationError(this.object, field, reason);
  }

  record(v: unknown, field: string): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'must be an object');
    return v as Record<string, unknown>;
  }

  optRecord(v: unknown, field: string): Record<string, unknown> | undefined {
    return v === undefined || v === null ? undefined : this.record(v, field);
  }

  array(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v;
  }

  string(v: unknown, field: string): string {
    if (typeof v !== 'string' || v === '') this.fail(field, 'is required and must be a non-empty string');
    return v;
  }

  optString(v: unknown, field: string): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') this.fail(field, 'must be a string');
    return v;
  }

  strings(v: unknown, field: string): string[] {
    return this.array(v, field).map((s, i) => {
      if (typeof s !== 'string') this.fail(`${field}[${i}]`, 'must be a string');
      return s;
    });
  }

  bool(v: unknown, field: string): boolean {
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') this.fail(field, 'must be true or false');
    return v;
  }

  int(v: unknown, field: string, min: number, max: number, fallback: number): number {
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(field, `${JSON.stringify(v)} must be an integer from ${min} to ${max}`);
    }
    return v;
  }

  oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[], fallback: T): T {
    if (v === undefined || v === null) return fallback;
    if (!allowed.includes(v as T))
      this.fail(field, `${JSON.stringify(v)} must be one of ${allowed.join(', ')}`);
    return v as T;
  }

  name(v: unknown, field: string, pattern: RegExp, max: number): string {
    const s = this.string(v, field);
    if (s.length > max || !pattern.test(s)) {
      this.fail(field, `"${s}" must be at most ${max} lower-case letters, digits and '-' (RFC 1123)`);
    }
    return s;
  }
}

/** Validates a Pod (plain JSON) and returns what the runtime needs. Throws ValidationError. */
export function parsePod(input: unknown): PodDef {
  const top: Reader = new Reader('Pod');
  const pod = top.record(input, '(root)');
  if (pod.apiVersion !== undefined && pod.apiVersion !== 'v1') top.fail('apiVersion', 'must be v1');
  if (pod.kind !== undefined && pod.kind !== 'Pod') top.fail('kind', 'must be Pod');
  const meta = top.record(pod.metadata, 'metadata');
  const name = top.name(meta.name, 'metadata.name', DNS_SUBDOMAIN, 253);
  const namespace =
    meta.namespace === undefined ? 'default' : top.name(meta.namespace, 'metadata.namespace', DNS_LABEL, 63);
  const r: Reader = new Reader(`Pod ${namespace}/${name}`);
  const uid = r.string(meta.uid, 'metadata.uid');
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.optRecord(meta.labels, 'metadata.labels') ?? {})) {
    if (typeof v !== 'string') r.fail(`metadata.labels.${k}`, 'must be a string');
    labels[k] = v;
  }
  const spec = r.record(pod.spec, 'spec');
  const list = r.array(spec.containers, 'spec.containers');
  if (list.length === 0) r.fail('spec.containers', 'must name at least one container');
  const containers = list.map((c, i) => parseContainer(r, c, `spec.containers[${i}]`));
  const seen = new Set<string>();
  containers.forEach((c, i) => {
    if (seen.has(c.name)) r.fail(`spec.containers[${i}].name`, `"${c.name}" is used twice`);
    seen.add(c.name);
  });
  const grace = spec.terminationGracePeriodSeconds;
  const dnsConfig = r.optRecord(spec.dnsConfig, 'spec.dnsConfig') ?? {};
  const dnsPolicy = r.oneOf(
    spec.dnsPolicy,
    'spec.dnsPolicy',
    ['ClusterFirst', 'ClusterFirstWithHostNet', 'Default', 'None'],
    'ClusterFirst',
  );
  const nameservers = r.strings(dnsConfig.nameservers, 'spec.dnsConfig.nameservers');
  if (dnsPolicy === 'None' && nameservers.length === 0) {
    r.fail('spec.dnsConfig.nameservers', 'dnsPolicy None needs at least one nameserver');
  }
  return {
    key: podKey(namespace, name),
    name,
    namespace,
    uid,
    labels,
    hostname:
      spec.hostname === undefined ? name.slice(0, 63) : r.name(spec.hostname, 'spec.hostname', DNS_LABEL, 63),
    hostNetwork: r.bool(spec.hostNetwork, 'spec.hostNetwork'),
    restartPolicy: r.oneOf(
      spec.restartPolicy,
      'spec.restartPolicy',
      ['Always', 'OnFailure', 'Never'],
      'Always',
    ),
    gracePeriodMs:
      grace === undefined || grace === null
        ? undefined
        : r.int(grace, 'spec.terminationGracePeriodSeconds', 0, 86_400, 30) * 1000,
    dnsPolicy,
    dnsConfig: {
      nameservers,
      searches: r.strings(dnsConfig.searches, 'spec.dnsConfig.searches'),
      options: r.array(dnsConfig.options, 'spec.dnsConfig.options').map((o, i) => {
        const opt = r.record(o, `spec.dnsConfig.options[${i}]`);
        const n = r.string(opt.name, `spec.dnsConfig.options[${i}].name`);
        const v = r.optString(opt.value, `spec.dnsConfig.options[${i}].value`);
        return v === undefined ? n : `${n}:${v}`;
      }),
    },
    containers,
  };
}

function parseContainer(r: Reader, input: unknown, at: string): ContainerDef {
  const c = r.record(input, at);
  const name = r.name(c.name, `${at}.name`, DNS_LABEL, 63);
  const command = r.strings(c.command, `${at}.command`);
  const args = r.strings(c.args, `${at}.args`);
  const ports = r.array(c.ports, `${at}.ports`).map((p, i) => parsePort(r, p, `${at}.ports[${i}]`));
  const env = r.array(c.env, `${at}.env`).map((e, i) => parseEnv(r, e, `${at}.env[${i}]`));
  const probe = r.optRecord(c.readinessProbe, `${at}.readinessProbe`);
  const tcpPorts = ports.filter((p) => p.protocol === 'TCP').map((p) => p.port);
  let readiness: Readiness;
  if (probe !== undefined) readiness = parseProbe(r, probe, `${at}.readinessProbe`, ports);
  else if (tcpPorts.length > 0) readiness = { kind: 'ports', ports: tcpPorts };
  else readiness = { kind: 'running' };
  const argv = [...command, ...args];
  return {
    name,
    image: r.string(c.image, `${at}.image`),
    argv: argv.length === 0 ? undefined : argv,
    workingDir: r.optString(c.workingDir, `${at}.workingDir`),
    env,
    ports,
    readiness,
  };
}

function parsePort(r: Reader, input: unknown, at: string): PortDef {
  const p = r.record(input, at);
  const name = r.optString(p.name, `${at}.name`);
  if (name !== undefined && (name.length > 15 || !PORT_NAME.test(name))) {
    r.fail(
      `${at}.name`,
      `"${name}" must be an IANA service name: up to 15 lower-case letters, digits and '-'`,
    );
  }
  if (p.containerPort === undefined) r.fail(`${at}.containerPort`, 'is required');
  return {
    port: r.int(p.containerPort, `${at}.containerPort`, 1, 65535, 0),
    protocol: r.oneOf(p.protocol, `${at}.protocol`, ['TCP', 'UDP', 'SCTP'], 'TCP'),
    name,
  };
}

function parseEnv(r: Reader, input: unknown, at: string): EnvDef {
  const e = r.record(input, at);
  const name = r.string(e.name, `${at}.name`);
  if (!ENV_NAME.test(name)) r.fail(`${at}.name`, `"${name}" is not a valid environment variable name`);
  const from = r.optRecord(e.valueFrom, `${at}.valueFrom`);
  if (from === undefined) return { name, value: r.optString(e.value, `${at}.value`) ?? '' };
  if (e.value !== undefined) r.fail(`${at}.value`, 'may not be set together with valueFrom');
  const ref = r.optRecord(from.fieldRef, `${at}.valueFrom.fieldRef`);
  if (ref === undefined) {
    r.fail(`${at}.valueFrom`, 'only fieldRef is supported in the lab (no Secrets or ConfigMaps)');
  }
  const fieldPath = r.string(ref.fieldPath, `${at}.valueFrom.fieldRef.fieldPath`);
  if (!FIELD_PATHS.has(fieldPath) && !LABEL_FIELD.test(fieldPath)) {
    r.fail(`${at}.valueFrom.fieldRef.fieldPath`, `"${fieldPath}" is not a supported field`);
  }
  return { name, fieldPath };
}

function parseProbe(r: Reader, p: Record<string, unknown>, at: string, ports: readonly PortDef[]): Readiness {
  const handlers = (['httpGet', 'tcpSocket', 'exec'] as const).filter((h) => p[h] !== undefined);
  if (handlers.length !== 1) r.fail(at, 'must have exactly one of httpGet, tcpSocket and exec');
  const port = (v: unknown, field: string): number => {
    if (typeof v === 'string') {
      const named = ports.find((q) => q.name === v);
      if (named === undefined) r.fail(field, `no containerPort is named "${v}"`);
      return named.port;
    }
    return r.int(v, field, 1, 65535, 0);
  };
  let action: ProbeAction;
  if (p.httpGet !== undefined) {
    const h = r.record(p.httpGet, `${at}.httpGet`);
    const scheme = r.oneOf(h.scheme, `${at}.httpGet.scheme`, ['HTTP', 'HTTPS'], 'HTTP');
    const path = r.optString(h.path, `${at}.httpGet.path`) ?? '/';
    action = {
      kind: 'http',
      scheme: scheme === 'HTTPS' ? 'https' : 'http',
      host: r.optString(h.host, `${at}.httpGet.host`) || undefined,
      port: port(h.port, `${at}.httpGet.port`),
      path: path.startsWith('/') ? path : `/${path}`,
      headers: r.array(h.httpHeaders, `${at}.httpGet.httpHeaders`).map((x, i) => {
        const hh = r.record(x, `${at}.httpGet.httpHeaders[${i}]`);
        return {
          name: r.string(hh.name, `${at}.httpGet.httpHeaders[${i}].name`),
          value: r.optString(hh.value, `${at}.httpGet.httpHeaders[${i}].value`) ?? '',
        };
      }),
    };
  } else if (p.tcpSocket !== undefined) {
    const t = r.record(p.tcpSocket, `${at}.tcpSocket`);
    action = {
      kind: 'tcp',
      host: r.optString(t.host, `${at}.tcpSocket.host`) || undefined,
      port: port(t.port, `${at}.tcpSocket.port`),
    };
  } else {
    const e = r.record(p.exec, `${at}.exec`);
    const command = r.strings(e.command, `${at}.exec.command`);
    if (command.length === 0) r.fail(`${at}.exec.command`, 'must not be empty');
    action = { kind: 'exec', command };
  }
  // Kubernetes' defaults and minimums.
  return {
    kind: 'probe',
    action,
    timing: {
      initialDelayMs: r.int(p.initialDelaySeconds, `${at}.initialDelaySeconds`, 0, 86_400, 0) * 1000,
      periodMs: r.int(p.periodSeconds, `${at}.periodSeconds`, 1, 86_400, 10) * 1000,
      timeoutMs: r.int(p.timeoutSeconds, `${at}.timeoutSeconds`, 1, 86_400, 1) * 1000,
      successThreshold: r.int(p.successThreshold, `${at}.successThreshold`, 1, 1000, 1),
      failureThreshold: r.int(p.failureThreshold, `${at}.failureThreshold`, 1, 1000, 3),
    },
  };
}
