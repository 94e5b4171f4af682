/**
 * A whole application from manifests, with no cluster: namespaces, pods, deployments
 * and services become endpoints and identities in a repository, and policies are
 * parsed into it. Bad documents are reported one by one; the good ones still load.
 */
import { ValidationError } from '../errors.js';
import { endpointLabels, MemoryAllocator } from '../identity/index.js';
import type { ManifestDoc } from '../k8s/manifests.js';
import { POLICY_KINDS, parsePolicy } from './parse.js';
import { type PolicyEndpoint, PolicyRepository } from './repository.js';

export interface OfflineProblem {
  file: string;
  index: number;
  object: string;
  field?: string;
  message: string;
}

export interface OfflineWorld {
  repo: PolicyRepository;
  /** Endpoints by `namespace/name` (pods and deployments' pods). */
  workloads: Map<string, PolicyEndpoint & { name: string; kind: string }>;
  errors: OfflineProblem[];
  warnings: OfflineProblem[];
  policyCount: number;
}

type Obj = Record<string, unknown>;

function podTemplate(doc: ManifestDoc): { labels: Record<string, string>; spec: Obj } | undefined {
  const o = doc.object;
  if (doc.kind === 'Pod') {
    return {
      labels: ((o.metadata as Obj)?.labels ?? {}) as Record<string, string>,
      spec: (o.spec ?? {}) as Obj,
    };
  }
  if (['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job'].includes(doc.kind)) {
    const t = ((o.spec as Obj)?.template ?? {}) as Obj;
    return {
      labels: ((t.metadata as Obj)?.labels ?? {}) as Record<string, string>,
      spec: (t.spec ?? {}) as Obj,
    };
  }
  return undefined;
}

function namedPorts(spec: Obj): Record<string, { port: number; protocol: string }> {
  const out: Record<string, { port: number; protocol: string }> = {};
  for (const c of (spec.containers ?? []) as Obj[]) {
    for (const p of (c.ports ?? []) as Obj[]) {
      if (typeof p.name === 'string' && typeof p.containerPort === 'number') {
        out[p.name] = {
          port: p.containerPort,
          protocol: typeof p.protocol === 'string' ? p.protocol : 'TCP',
        };
      }
    }
  }
  return out;
}

export function buildOfflineWorld(docs: ManifestDoc[]): OfflineWorld {
  const repo = new PolicyRepository();
  const alloc = new MemoryAllocator();
  const errors: OfflineProblem[] = [];
  const warnings: OfflineProblem[] = [];
  const nsLabels = new Map<string, Record<string, string>>();
  const where = (d: ManifestDoc) => ({
    file: d.file,
    index: d.index,
    object: `${d.kind} ${d.namespace ? `${d.namespace}/` : ''}${d.name}`,
  });
  for (const d of docs) {
    if (d.kind !== 'Namespace') continue;
    const labels = { ...(((d.object.metadata as Obj)?.labels ?? {}) as Record<string, string>) };
    labels['kubernetes.io/metadata.name'] = d.name;
    nsLabels.set(d.name, labels);
  }
  const workloads: OfflineWorld['workloads'] = new Map();
  let nextId = 1;
  let policyCount = 0;
  repo.bulk(() => {
    for (const d of docs) {
      const t = podTemplate(d);
      if (!t) continue;
      const namespace = d.namespace ?? 'default';
      const labels = endpointLabels({
        namespace,
        podLabels: t.labels,
        namespaceLabels: nsLabels.get(namespace) ?? { 'kubernetes.io/metadata.name': namespace },
        serviceAccount: typeof t.spec.serviceAccountName === 'string' ? t.spec.serviceAccountName : 'default',
      });
      const identity = alloc.allocate(labels).id;
      const ep = {
        id: nextId++,
        namespace,
        labels,
        identity,
        namedPorts: namedPorts(t.spec),
        name: `${namespace}/${d.name}`,
        kind: d.kind,
      };
      workloads.set(ep.name, ep);
      repo.upsertEndpoint(ep);
    }
    for (const d of docs) {
      if (d.kind !== 'Service') continue;
      const spec = (d.object.spec ?? {}) as Obj;
      const svc = {
        namespace: d.namespace ?? 'default',
        name: d.name,
        labels: ((d.object.metadata as Obj)?.labels ?? {}) as Record<string, string>,
      };
      repo.upsertService(spec.selector ? { ...svc, selector: spec.selector as Record<string, string> } : svc);
    }
    for (const d of docs) {
      if (!POLICY_KINDS.includes(d.kind as never)) continue;
      try {
        const parsed = parsePolicy(d.object);
        for (const p of parsed.policies) repo.upsertPolicy(p);
        policyCount += parsed.policies.length;
        for (const w of parsed.warnings) warnings.push({ ...where(d), message: w });
      } catch (err) {
        if (!(err instanceof ValidationError)) throw err;
        errors.push({ ...where(d), object: err.object, field: err.field, message: err.reason });
      }
    }
  });
  return { repo, workloads, errors, warnings, policyCount };
}

/** Finds a workload by `ns/name`, also accepting a pod name with a replica suffix. */
export function findWorkload(
  world: OfflineWorld,
  ref: string,
): (PolicyEndpoint & { name: string }) | undefined {
  const exact = world.workloads.get(ref);
  if (exact) return exact;
  const [ns, name] = ref.includes('/') ? ref.split('/', 2) : ['default', ref];
  for (const w of world.workloads.values()) {
    const [wns, wname] = w.name.split('/', 2);
    if (wns === ns && name!.startsWith(`${wname}-`)) return w;
  }
  return undefined;
}
