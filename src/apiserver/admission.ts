/**
 * What the API server does to an object before storing it, per kind: defaults (as
 * kube-apiserver fills them), allocations (Service ClusterIPs and NodePorts), and
 * validation that answers 422 with field causes. Policies are validated by Hypha's own
 * policy parser, so a policy that would not compile is refused at `kubectl apply` time.
 */
import { ValidationError } from '../errors.js';
import { POLICY_KINDS, parsePolicy } from '../policy/index.js';
import type { PolicyKind } from '../policy/model.js';
import { field, isObject, type JsonObject, type KObject, type StatusCause } from './object.js';
import type { ResourceType } from './resources.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;
const PROTOCOLS = ['TCP', 'UDP', 'SCTP'];

export interface AdmissionContext {
  /** Allocates a free ClusterIP (or checks a requested one); throws a cause when it cannot. */
  allocateClusterIp(requested: string | undefined, path: string): string;
  allocateNodePort(requested: number | undefined, path: string): number;
  /** Pod CIDRs of the cluster, which externalIPs may not fall in. */
  inPodCidr(ip: string): boolean;
}

const get = (o: unknown, k: string): unknown => (isObject(o) ? o[k] : undefined);
const objects = (v: unknown): JsonObject[] => (Array.isArray(v) ? v.filter(isObject) : []);

function validateName(r: ResourceType, name: string, causes: StatusCause[]): void {
  if (r.kind === 'Namespace' && !(DNS1123_LABEL.test(name) && name.length <= 63)) {
    causes.push(
      field.invalid(
        'metadata.name',
        name,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
      ),
    );
  } else if (r.kind === 'Service' && !(DNS1035_LABEL.test(name) && name.length <= 63)) {
    causes.push(
      field.invalid(
        'metadata.name',
        name,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
      ),
    );
  } else if (!(DNS1123_SUBDOMAIN.test(name) && name.length <= 253)) {
    causes.push(
      field.invalid(
        'metadata.name',
        name,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      ),
    );
  }
}

function validateLabels(labels: unknown, path: string, causes: StatusCause[]): void {
  if (labels === undefined) return;
  if (!isObject(labels)) {
    causes.push(field.invalid(path, labels, 'must be a map of strings'));
    return;
  }
  for (const [k, v] of Object.entries(labels)) {
    if (!LABEL_KEY.test(k))
      causes.push(
        field.invalid(
          path,
          k,
          "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ),
      );
    if (typeof v !== 'string' || !LABEL_VALUE.test(v))
      causes.push(
        field.invalid(
          `${path}.${k}`,
          v,
          "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ),
      );
  }
}

function validPort(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535;
}

// ------------------------------------------------------------------------- pods

function defaultPodSpec(spec: JsonObject): void {
  spec.restartPolicy ??= 'Always';
  spec.dnsPolicy ??= 'ClusterFirst';
  spec.terminationGracePeriodSeconds ??= 30;
  spec.schedulerName ??= 'default-scheduler';
  spec.securityContext ??= {};
  spec.enableServiceLinks ??= true;
  for (const c of objects(spec.containers)) {
    c.imagePullPolicy ??=
      String(c.image ?? '').endsWith(':latest') || !String(c.image ?? '').includes(':')
        ? 'Always'
        : 'IfNotPresent';
    c.terminationMessagePath ??= '/dev/termination-log';
    c.terminationMessagePolicy ??= 'File';
    c.resources ??= {};
    for (const p of objects(c.ports)) p.protocol ??= 'TCP';
  }
}

function validatePodSpec(spec: unknown, path: string, causes: StatusCause[]): void {
  if (!isObject(spec)) {
    causes.push(field.required(path));
    return;
  }
  const containers = objects(spec.containers);
  if (containers.length === 0) causes.push(field.required(`${path}.containers`));
  const names = new Set<string>();
  containers.forEach((c, i) => {
    const p = `${path}.containers[${i}]`;
    if (typeof c.name !== 'string' || !c.name) causes.push(field.required(`${p}.name`));
    else if (!DNS1123_LABEL.test(c.name))
      causes.push(
        field.invalid(
          `${p}.name`,
          c.name,
          "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
        ),
      );
    else if (names.has(c.name)) causes.push(field.duplicate(`${p}.name`, c.name));
    else names.add(c.name);
    if (typeof c.image !== 'string' || !c.image) causes.push(field.required(`${p}.image`));
    for (const k of ['command', 'args'] as const) {
      if (
        c[k] !== undefined &&
        (!Array.isArray(c[k]) || (c[k] as unknown[]).some((x) => typeof x !== 'string'))
      )
        causes.push(field.invalid(`${p}.${k}`, c[k], 'must be a list of strings'));
    }
    const portNames = new Set<string>();
    objects(c.ports).forEach((port, j) => {
      const pp = `${p}.ports[${j}]`;
      if (!validPort(port.containerPort))
        causes.push(
          field.invalid(`${pp}.containerPort`, port.containerPort, 'must be between 1 and 65535, inclusive'),
        );
      if (port.protocol !== undefined && !PROTOCOLS.includes(String(port.protocol)))
        causes.push(field.notSupported(`${pp}.protocol`, port.protocol, PROTOCOLS));
      if (port.name !== undefined) {
        if (
          typeof port.name !== 'string' ||
          !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(port.name) ||
          port.name.length > 15
        )
          causes.push(
            field.invalid(
              `${pp}.name`,
              port.name,
              'must be no more than 15 characters and a lowercase RFC 1123 label',
            ),
          );
        else if (portNames.has(port.name)) causes.push(field.duplicate(`${pp}.name`, port.name));
        else portNames.add(port.name);
      }
    });
    objects(c.env).forEach((e, j) => {
      if (typeof e.name !== 'string' || !e.name) causes.push(field.required(`${p}.env[${j}].name`));
    });
  });
  const rp = spec.restartPolicy;
  if (rp !== undefined && !['Always', 'OnFailure', 'Never'].includes(String(rp)))
    causes.push(field.notSupported(`${path}.restartPolicy`, rp, ['Always', 'OnFailure', 'Never']));
}

// --------------------------------------------------------------------- services

function admitService(
  o: KObject,
  old: KObject | undefined,
  ctx: AdmissionContext,
  causes: StatusCause[],
): void {
  if (!isObject(o.spec)) o.spec = {};
  const spec = o.spec as JsonObject;
  const oldSpec = isObject(old?.spec) ? old.spec : {};
  const types = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'];
  spec.type ??= 'ClusterIP';
  if (!types.includes(String(spec.type))) causes.push(field.notSupported('spec.type', spec.type, types));
  spec.sessionAffinity ??= 'None';
  if (!['None', 'ClientIP'].includes(String(spec.sessionAffinity)))
    causes.push(field.notSupported('spec.sessionAffinity', spec.sessionAffinity, ['ClientIP', 'None']));
  if (spec.sessionAffinity === 'ClientIP') {
    spec.sessionAffinityConfig ??= {};
    const cfg = spec.sessionAffinityConfig as JsonObject;
    cfg.clientIP ??= {};
    (cfg.clientIP as JsonObject).timeoutSeconds ??= 10800;
  }
  spec.internalTrafficPolicy ??= 'Cluster';
  if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') spec.externalTrafficPolicy ??= 'Cluster';
  const ports = objects(spec.ports);
  if (spec.type !== 'ExternalName' && ports.length === 0 && spec.clusterIP !== 'None')
    causes.push(field.required('spec.ports'));
  const seen = new Set<string>();
  const names = new Set<string>();
  const oldPorts = objects(oldSpec.ports);
  ports.forEach((p, i) => {
    const path = `spec.ports[${i}]`;
    p.protocol ??= 'TCP';
    if (!PROTOCOLS.includes(String(p.protocol)))
      causes.push(field.notSupported(`${path}.protocol`, p.protocol, PROTOCOLS));
    if (!validPort(p.port))
      causes.push(field.invalid(`${path}.port`, p.port, 'must be between 1 and 65535, inclusive'));
    p.targetPort ??= p.port;
    if (typeof p.targetPort === 'number' && !validPort(p.targetPort))
      causes.push(
        field.invalid(`${path}.targetPort`, p.targetPort, 'must be between 1 and 65535, inclusive'),
      );
    if (typeof p.targetPort === 'string' && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p.targetPort))
      causes.push(
        field.invalid(
          `${path}.targetPort`,
          p.targetPort,
          'must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
        ),
      );
    const key = `${String(p.port)}/${String(p.protocol)}`;
    if (seen.has(key)) causes.push(field.duplicate(path, { port: p.port, protocol: p.protocol }));
    seen.add(key);
    if (ports.length > 1 && (typeof p.name !== 'string' || !p.name))
      causes.push(field.required(`${path}.name`));
    if (typeof p.name === 'string' && p.name) {
      if (names.has(p.name)) causes.push(field.duplicate(`${path}.name`, p.name));
      names.add(p.name);
    }
    if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') {
      const before = oldPorts.find((q) => q.port === p.port && q.protocol === p.protocol)?.nodePort;
      try {
        p.nodePort = ctx.allocateNodePort(
          (p.nodePort as number | undefined) ?? (before as number | undefined),
          `${path}.nodePort`,
        );
      } catch (err) {
        causes.push(err as StatusCause);
      }
    } else if (p.nodePort !== undefined) {
      causes.push(field.forbidden(`${path}.nodePort`, "may not be used when `type` is 'ClusterIP'"));
    }
  });
  if (spec.type !== 'ExternalName') {
    const requested = (spec.clusterIP as string | undefined) ?? (oldSpec.clusterIP as string | undefined);
    if (requested === 'None') spec.clusterIP = 'None';
    else if (oldSpec.clusterIP && requested !== oldSpec.clusterIP)
      causes.push(field.invalid('spec.clusterIP', spec.clusterIP, 'field is immutable'));
    else if (oldSpec.clusterIP) spec.clusterIP = oldSpec.clusterIP;
    else {
      try {
        spec.clusterIP = ctx.allocateClusterIp(requested, 'spec.clusterIP');
      } catch (err) {
        causes.push(err as StatusCause);
      }
    }
    spec.clusterIPs = [spec.clusterIP];
    spec.ipFamilies ??= ['IPv4'];
    spec.ipFamilyPolicy ??= 'SingleStack';
  }
  const ext = spec.externalIPs;
  if (ext !== undefined) {
    if (!Array.isArray(ext))
      causes.push(field.invalid('spec.externalIPs', ext, 'must be a list of IP addresses'));
    else
      ext.forEach((ip, i) => {
        if (typeof ip !== 'string' || !/^(\d{1,3}\.){3}\d{1,3}$/.test(ip))
          causes.push(field.invalid(`spec.externalIPs[${i}]`, ip, 'must be a valid IP address'));
        else if (ctx.inPodCidr(ip))
          causes.push(field.invalid(`spec.externalIPs[${i}]`, ip, "may not be in the cluster's pod CIDR"));
      });
  }
  if (spec.selector !== undefined) validateLabels(spec.selector, 'spec.selector', causes);
  o.status ??= { loadBalancer: {} };
}

// ------------------------------------------------------------------ workloads

function admitWorkload(o: KObject, causes: StatusCause[]): void {
  if (!isObject(o.spec)) o.spec = {};
  const spec = o.spec as JsonObject;
  if (o.kind !== 'DaemonSet') {
    spec.replicas ??= 1;
    if (!Number.isInteger(spec.replicas) || (spec.replicas as number) < 0)
      causes.push(field.invalid('spec.replicas', spec.replicas, 'must be greater than or equal to 0'));
  } else {
    spec.updateStrategy ??= { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } };
    spec.revisionHistoryLimit ??= 10;
  }
  if (o.kind === 'Deployment') {
    spec.strategy ??= { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '25%', maxSurge: '25%' } };
    spec.revisionHistoryLimit ??= 10;
    spec.progressDeadlineSeconds ??= 600;
  }
  const selector = spec.selector;
  const template = isObject(spec.template) ? spec.template : undefined;
  const tlabels =
    isObject(template?.metadata) && isObject(template.metadata.labels) ? template.metadata.labels : {};
  if (!isObject(selector)) causes.push(field.required('spec.selector'));
  else {
    const ml = isObject(selector.matchLabels) ? selector.matchLabels : {};
    const exprs = objects(selector.matchExpressions);
    if (Object.keys(ml).length === 0 && exprs.length === 0)
      causes.push(field.invalid('spec.selector', selector, 'empty selector is invalid for deployment'));
    else if (Object.entries(ml).some(([k, v]) => tlabels[k] !== v))
      causes.push(
        field.invalid(
          'spec.template.metadata.labels',
          tlabels,
          '`selector` does not match template `labels`',
        ),
      );
  }
  if (!template) causes.push(field.required('spec.template'));
  else {
    validateLabels(tlabels, 'spec.template.metadata.labels', causes);
    validatePodSpec(template.spec, 'spec.template.spec', causes);
    if (isObject(template.spec)) defaultPodSpec(template.spec);
  }
  o.status ??= {};
}

// --------------------------------------------------------------------- policies

function admitPolicy(o: KObject, causes: StatusCause[]): void {
  try {
    parsePolicy(o as unknown as Record<string, unknown>);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    causes.push({ reason: 'FieldValueInvalid', message: `Invalid value: ${err.reason}`, field: err.field });
  }
}

// ------------------------------------------------------------------------ entry

/**
 * Defaults and validates `o` (a create when `old` is undefined) in place; returns the
 * field causes for a 422. Metadata bookkeeping (uid, timestamps, versions) is the API's.
 */
export function admit(
  r: ResourceType,
  o: KObject,
  old: KObject | undefined,
  ctx: AdmissionContext,
): StatusCause[] {
  const causes: StatusCause[] = [];
  if (o.metadata.name) validateName(r, o.metadata.name, causes);
  validateLabels(o.metadata.labels, 'metadata.labels', causes);
  if (o.metadata.annotations !== undefined && !isObject(o.metadata.annotations))
    causes.push(field.invalid('metadata.annotations', o.metadata.annotations, 'must be a map of strings'));
  switch (r.kind) {
    case 'Namespace':
      o.metadata.labels = { ...o.metadata.labels, 'kubernetes.io/metadata.name': o.metadata.name ?? '' };
      o.spec ??= { finalizers: ['kubernetes'] };
      o.status = { phase: o.metadata.deletionTimestamp ? 'Terminating' : 'Active' };
      break;
    case 'Pod': {
      validatePodSpec(o.spec, 'spec', causes);
      if (isObject(o.spec)) defaultPodSpec(o.spec);
      if (!old) o.status = { phase: 'Pending', qosClass: 'BestEffort' };
      else if (
        isObject(old.spec) &&
        isObject(o.spec) &&
        old.spec.nodeName &&
        o.spec.nodeName !== old.spec.nodeName
      )
        causes.push(
          field.invalid('spec.nodeName', o.spec.nodeName, 'field is immutable once the pod is bound'),
        );
      break;
    }
    case 'Service':
      admitService(o, old, ctx, causes);
      break;
    case 'Deployment':
    case 'ReplicaSet':
    case 'DaemonSet':
      admitWorkload(o, causes);
      break;
    case 'EndpointSlice': {
      const t = get(o, 'addressType');
      if (!['IPv4', 'IPv6', 'FQDN'].includes(String(t)))
        causes.push(field.notSupported('addressType', t, ['IPv4', 'IPv6', 'FQDN']));
      break;
    }
    case 'Node':
      o.spec ??= {};
      break;
    default:
      if (
        POLICY_KINDS.includes(r.kind as PolicyKind) &&
        (r.group === 'cilium.io' || r.group === 'networking.k8s.io')
      )
        admitPolicy(o, causes);
  }
  return causes;
}
