/**
 * The kinds the API server serves: where each lives in the REST tree, how kubectl names
 * it (short names, categories), and the columns `kubectl get` prints for it (the server
 * renders Tables, as kube-apiserver does).
 */
import type { JsonObject, KObject } from './object.js';
import { isObject } from './object.js';

export interface Column {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  format?: string;
  description?: string;
  /** 0: always shown; 1: with `-o wide`. */
  priority: number;
  cell: (o: KObject, now: number) => unknown;
}

export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Whether `/status` is a subresource (status is then ignored on the main resource). */
  statusSubresource: boolean;
  columns: Column[];
  /** For custom resources: the CRD's name. */
  crd?: string;
}

export const apiVersionOf = (r: Pick<ResourceType, 'group' | 'version'>) =>
  r.group ? `${r.group}/${r.version}` : r.version;
export const resourceKey = (r: Pick<ResourceType, 'group' | 'plural'>) => `${r.group}/${r.plural}`;

/** kubectl's age: 45s, 5m10s, 3h, 2d5h. */
export function age(ts: unknown, now: number): string {
  if (typeof ts !== 'string') return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return h < 8 && m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return d < 8 && h % 24 ? `${d}d${h % 24}h` : `${d}d`;
}

const get = (o: unknown, ...path: (string | number)[]): unknown => {
  let cur = o;
  for (const p of path) {
    if (Array.isArray(cur) && typeof p === 'number') cur = cur[p];
    else if (isObject(cur) && typeof p === 'string') cur = cur[p];
    else return undefined;
  }
  return cur;
};
const list = (o: unknown, ...path: string[]): JsonObject[] => {
  const v = get(o, ...path);
  return Array.isArray(v) ? v.filter(isObject) : [];
};
const str = (v: unknown, dflt = '<none>') => (v === undefined || v === null || v === '' ? dflt : String(v));

const NAME: Column = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description: 'Name must be unique within a namespace.',
  priority: 0,
  cell: (o) => o.metadata.name,
};
const AGE: Column = {
  name: 'Age',
  type: 'string',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
  priority: 0,
  cell: (o, now) => age(o.metadata.creationTimestamp, now),
};
const col = (name: string, cell: Column['cell'], priority = 0, type: Column['type'] = 'string'): Column => ({
  name,
  type,
  priority,
  cell,
});

function selectorString(sel: unknown): string {
  if (!isObject(sel)) return '<none>';
  const parts = Object.entries(isObject(sel.matchLabels) ? sel.matchLabels : sel)
    .filter(([k]) => k !== 'matchExpressions')
    .map(([k, v]) => `${k}=${String(v)}`);
  for (const e of list(sel, 'matchExpressions')) {
    const vals = Array.isArray(e.values) ? e.values.join(',') : '';
    if (e.operator === 'Exists') parts.push(String(e.key));
    else if (e.operator === 'DoesNotExist') parts.push(`!${String(e.key)}`);
    else parts.push(`${String(e.key)} ${String(e.operator).toLowerCase()} (${vals})`);
  }
  return parts.length ? parts.join(',') : '<none>';
}

function podStatus(o: KObject): string {
  if (o.metadata.deletionTimestamp) return 'Terminating';
  for (const c of list(o.status, 'containerStatuses')) {
    const waiting = get(c, 'state', 'waiting', 'reason');
    if (typeof waiting === 'string') return waiting;
    const term = get(c, 'state', 'terminated', 'reason');
    if (typeof term === 'string' && get(o, 'status', 'phase') !== 'Succeeded') return term;
  }
  return str(get(o, 'status', 'phase'), 'Pending');
}

function podRestarts(o: KObject): string {
  const n = list(o.status, 'containerStatuses').reduce((s, c) => s + (Number(c.restartCount) || 0), 0);
  return String(n);
}

function servicePorts(o: KObject): string {
  const ports = list(o.spec, 'ports').map(
    (p) => `${String(p.port)}${p.nodePort ? `:${String(p.nodePort)}` : ''}/${str(p.protocol, 'TCP')}`,
  );
  return ports.length ? ports.join(',') : '<none>';
}

function externalIp(o: KObject): string {
  const type = get(o, 'spec', 'type');
  const ext = (get(o, 'spec', 'externalIPs') as string[] | undefined) ?? [];
  const lb = list(o.status, 'loadBalancer', 'ingress').map((i) => str(i.ip ?? i.hostname, ''));
  const all = [...lb, ...ext].filter(Boolean);
  if (all.length) return all.join(',');
  return type === 'LoadBalancer' ? '<pending>' : '<none>';
}

function npPodSelector(o: KObject): string {
  const s = selectorString(get(o, 'spec', 'podSelector'));
  return s === '<none>' ? '<none>' : s;
}

function nodeStatus(o: KObject): string {
  const ready = list(o.status, 'conditions').find((c) => c.type === 'Ready');
  const s = ready?.status === 'True' ? 'Ready' : 'NotReady';
  return get(o, 'spec', 'unschedulable') ? `${s},SchedulingDisabled` : s;
}

function nodeRoles(o: KObject): string {
  const roles = Object.keys(o.metadata.labels ?? {})
    .filter((k) => k.startsWith('node-role.kubernetes.io/'))
    .map((k) => k.slice('node-role.kubernetes.io/'.length));
  return roles.length ? roles.sort().join(',') : '<none>';
}

function endpointCount(o: KObject): string {
  const addrs = list(o, 'endpoints').flatMap((e) =>
    Array.isArray(e.addresses) ? e.addresses.map(String) : [],
  );
  if (!addrs.length) return '<unset>';
  return addrs.length > 3 ? `${addrs.slice(0, 3).join(',')} + ${addrs.length - 3} more...` : addrs.join(',');
}

function builtin(
  group: string,
  version: string,
  kind: string,
  plural: string,
  namespaced: boolean,
  shortNames: string[],
  columns: Column[],
  opts: { categories?: string[]; status?: boolean } = {},
): ResourceType {
  return {
    group,
    version,
    kind,
    listKind: `${kind}List`,
    plural,
    singular: kind.toLowerCase(),
    namespaced,
    shortNames,
    categories: opts.categories ?? [],
    statusSubresource: opts.status ?? false,
    columns: [NAME, ...columns],
  };
}

export const BUILTIN_RESOURCES: readonly ResourceType[] = [
  builtin(
    '',
    'v1',
    'Namespace',
    'namespaces',
    false,
    ['ns'],
    [col('Status', (o) => str(get(o, 'status', 'phase'), 'Active')), AGE],
    {
      status: true,
    },
  ),
  builtin(
    '',
    'v1',
    'Node',
    'nodes',
    false,
    ['no'],
    [
      col('Status', nodeStatus),
      col('Roles', nodeRoles),
      AGE,
      col('Version', (o) => str(get(o, 'status', 'nodeInfo', 'kubeletVersion'), '')),
      col(
        'Internal-IP',
        (o) => str(list(o.status, 'addresses').find((a) => a.type === 'InternalIP')?.address),
        1,
      ),
      col('External-IP', () => '<none>', 1),
      col('OS-Image', (o) => str(get(o, 'status', 'nodeInfo', 'osImage'), '<unknown>'), 1),
      col('Kernel-Version', (o) => str(get(o, 'status', 'nodeInfo', 'kernelVersion'), '<unknown>'), 1),
      col(
        'Container-Runtime',
        (o) => str(get(o, 'status', 'nodeInfo', 'containerRuntimeVersion'), '<unknown>'),
        1,
      ),
    ],
    { status: true },
  ),
  builtin(
    '',
    'v1',
    'Pod',
    'pods',
    true,
    ['po'],
    [
      col('Ready', (o) => {
        const cs = list(o.status, 'containerStatuses');
        const total = list(o.spec, 'containers').length;
        return `${cs.filter((c) => c.ready === true).length}/${total}`;
      }),
      col('Status', podStatus),
      col('Restarts', podRestarts, 0, 'string'),
      AGE,
      col('IP', (o) => str(get(o, 'status', 'podIP')), 1),
      col('Node', (o) => str(get(o, 'spec', 'nodeName')), 1),
      col('Nominated Node', () => '<none>', 1),
      col('Readiness Gates', () => '<none>', 1),
    ],
    { categories: ['all'], status: true },
  ),
  builtin(
    '',
    'v1',
    'Service',
    'services',
    true,
    ['svc'],
    [
      col('Type', (o) => str(get(o, 'spec', 'type'), 'ClusterIP')),
      col('Cluster-IP', (o) => str(get(o, 'spec', 'clusterIP'))),
      col('External-IP', externalIp),
      col('Port(s)', servicePorts),
      AGE,
      col('Selector', (o) => selectorString(get(o, 'spec', 'selector')), 1),
    ],
    { categories: ['all'], status: true },
  ),
  builtin(
    '',
    'v1',
    'Event',
    'events',
    true,
    ['ev'],
    [
      col('Last Seen', (o, now) => age(get(o, 'lastTimestamp') ?? o.metadata.creationTimestamp, now)),
      col('Type', (o) => str(get(o, 'type'))),
      col('Reason', (o) => str(get(o, 'reason'))),
      col(
        'Object',
        (o) =>
          `${String(get(o, 'involvedObject', 'kind')).toLowerCase()}/${String(get(o, 'involvedObject', 'name'))}`,
      ),
      col('Message', (o) => str(get(o, 'message'), '')),
    ],
  ),
  builtin(
    '',
    'v1',
    'ConfigMap',
    'configmaps',
    true,
    ['cm'],
    [col('Data', (o) => String(Object.keys(isObject(o.data) ? o.data : {}).length), 0, 'string'), AGE],
  ),
  builtin('', 'v1', 'ServiceAccount', 'serviceaccounts', true, ['sa'], [AGE]),
  builtin(
    'apps',
    'v1',
    'Deployment',
    'deployments',
    true,
    ['deploy'],
    [
      col(
        'Ready',
        (o) => `${Number(get(o, 'status', 'readyReplicas') ?? 0)}/${Number(get(o, 'spec', 'replicas') ?? 1)}`,
      ),
      col('Up-to-date', (o) => Number(get(o, 'status', 'updatedReplicas') ?? 0), 0, 'integer'),
      col('Available', (o) => Number(get(o, 'status', 'availableReplicas') ?? 0), 0, 'integer'),
      AGE,
      col(
        'Containers',
        (o) =>
          list(get(o, 'spec', 'template', 'spec'), 'containers')
            .map((c) => c.name)
            .join(','),
        1,
      ),
      col(
        'Images',
        (o) =>
          list(get(o, 'spec', 'template', 'spec'), 'containers')
            .map((c) => c.image)
            .join(','),
        1,
      ),
      col('Selector', (o) => selectorString(get(o, 'spec', 'selector')), 1),
    ],
    { categories: ['all'], status: true },
  ),
  builtin(
    'apps',
    'v1',
    'DaemonSet',
    'daemonsets',
    true,
    ['ds'],
    [
      col('Desired', (o) => Number(get(o, 'status', 'desiredNumberScheduled') ?? 0), 0, 'integer'),
      col('Current', (o) => Number(get(o, 'status', 'currentNumberScheduled') ?? 0), 0, 'integer'),
      col('Ready', (o) => Number(get(o, 'status', 'numberReady') ?? 0), 0, 'integer'),
      col('Up-to-date', (o) => Number(get(o, 'status', 'updatedNumberScheduled') ?? 0), 0, 'integer'),
      col('Available', (o) => Number(get(o, 'status', 'numberAvailable') ?? 0), 0, 'integer'),
      col('Node Selector', (o) => {
        const sel = get(o, 'spec', 'template', 'spec', 'nodeSelector');
        return isObject(sel) && Object.keys(sel).length
          ? Object.entries(sel)
              .map(([k, v]) => `${k}=${String(v)}`)
              .join(',')
          : '<none>';
      }),
      AGE,
    ],
    { categories: ['all'], status: true },
  ),
  builtin(
    'apps',
    'v1',
    'ReplicaSet',
    'replicasets',
    true,
    ['rs'],
    [
      col('Desired', (o) => Number(get(o, 'spec', 'replicas') ?? 1), 0, 'integer'),
      col('Current', (o) => Number(get(o, 'status', 'replicas') ?? 0), 0, 'integer'),
      col('Ready', (o) => Number(get(o, 'status', 'readyReplicas') ?? 0), 0, 'integer'),
      AGE,
    ],
    { categories: ['all'], status: true },
  ),
  builtin(
    'discovery.k8s.io',
    'v1',
    'EndpointSlice',
    'endpointslices',
    true,
    [],
    [
      col('AddressType', (o) => str(get(o, 'addressType'))),
      col('Ports', (o) => {
        const ports = list(o, 'ports').map((p) => String(p.port ?? ''));
        return ports.length ? ports.join(',') : '<unset>';
      }),
      col('Endpoints', endpointCount),
      AGE,
    ],
  ),
  builtin(
    'networking.k8s.io',
    'v1',
    'NetworkPolicy',
    'networkpolicies',
    true,
    ['netpol'],
    [col('Pod-Selector', npPodSelector), AGE],
  ),
  builtin(
    'apiextensions.k8s.io',
    'v1',
    'CustomResourceDefinition',
    'customresourcedefinitions',
    false,
    ['crd', 'crds'],
    [col('Created At', (o) => str(o.metadata.creationTimestamp), 0, 'date')],
    { categories: ['api-extensions'], status: true },
  ),
];

/** A JSONPath like `.status.phase` from a CRD's additionalPrinterColumns. */
function jsonPathCell(path: string): Column['cell'] {
  const parts = path
    .replace(/^\./, '')
    .split(/\.|\[(\d+)\]/)
    .filter((p) => p !== undefined && p !== '')
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  return (o) => {
    const v = get(o, ...parts);
    return v === undefined ? '<none>' : typeof v === 'object' ? JSON.stringify(v) : v;
  };
}

/** The resource a CustomResourceDefinition declares (its storage version). */
export function resourceFromCrd(crd: KObject): ResourceType | undefined {
  const spec = crd.spec;
  if (!isObject(spec) || !isObject(spec.names)) return undefined;
  const versions = Array.isArray(spec.versions) ? spec.versions.filter(isObject) : [];
  const v = versions.find((x) => x.storage === true) ?? versions[0];
  if (!v || typeof v.name !== 'string' || typeof spec.group !== 'string') return undefined;
  const names = spec.names;
  const kind = String(names.kind);
  const columns: Column[] = [NAME];
  const printer = Array.isArray(v.additionalPrinterColumns)
    ? v.additionalPrinterColumns.filter(isObject)
    : [];
  for (const c of printer) {
    const type = ['integer', 'number', 'boolean', 'date'].includes(String(c.type))
      ? (c.type as Column['type'])
      : 'string';
    const cell = jsonPathCell(String(c.jsonPath));
    columns.push({
      name: String(c.name),
      type,
      priority: Number(c.priority ?? 0),
      description: typeof c.description === 'string' ? c.description : '',
      cell: type === 'date' ? (o, now) => age(cell(o, now), now) : cell,
    });
  }
  if (!printer.some((c) => String(c.jsonPath) === '.metadata.creationTimestamp')) columns.push(AGE);
  return {
    group: spec.group,
    version: v.name,
    kind,
    listKind: typeof names.listKind === 'string' ? names.listKind : `${kind}List`,
    plural: String(names.plural),
    singular: typeof names.singular === 'string' ? names.singular : kind.toLowerCase(),
    namespaced: spec.scope !== 'Cluster',
    shortNames: Array.isArray(names.shortNames) ? names.shortNames.map(String) : [],
    categories: Array.isArray(names.categories) ? names.categories.map(String) : [],
    statusSubresource: isObject(v.subresources) && isObject(v.subresources.status),
    columns,
    crd: crd.metadata.name,
  };
}
