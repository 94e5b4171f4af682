/**
 * The shapes controllers read, as the API stores them after admission (types are trusted
 * past that edge, with every optional field treated as possibly absent), and the helpers
 * Kubernetes' controller utilities provide: readiness and availability, controller
 * references, selectors, conditions, and the pod-template hash.
 */
import type { KObject, OwnerReference } from '../../../apiserver/index.js';
import { type LabelSelector, matches } from '../../../k8s/selector.js';

export type Labels = Record<string, string>;
export type IntOrString = number | string;
export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
  lastUpdateTime?: string;
  lastProbeTime?: string | null;
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}

export interface Container {
  name: string;
  ports?: ContainerPort[];
  [field: string]: unknown;
}

export interface Toleration {
  key?: string;
  operator?: 'Exists' | 'Equal';
  value?: string;
  effect?: string;
}

export interface Taint {
  key: string;
  value?: string;
  effect: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
}

export interface NodeSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist' | 'Gt' | 'Lt';
  values?: string[];
}

export interface NodeSelectorTerm {
  matchExpressions?: NodeSelectorRequirement[];
  matchFields?: NodeSelectorRequirement[];
}

export interface PodSpec {
  nodeName?: string;
  nodeSelector?: Labels;
  tolerations?: Toleration[];
  affinity?: {
    nodeAffinity?: {
      requiredDuringSchedulingIgnoredDuringExecution?: { nodeSelectorTerms?: NodeSelectorTerm[] };
    };
  };
  schedulerName?: string;
  containers: Container[];
  restartPolicy?: string;
  hostname?: string;
  subdomain?: string;
  [field: string]: unknown;
}

export interface PodStatus {
  phase?: string;
  conditions?: Condition[];
  podIP?: string;
  podIPs?: { ip: string }[];
  containerStatuses?: { restartCount?: number }[];
  [field: string]: unknown;
}

export interface Pod extends KObject {
  spec: PodSpec;
  status?: PodStatus;
}

export interface PodTemplate {
  metadata?: { labels?: Labels; annotations?: Labels; finalizers?: string[]; [field: string]: unknown };
  spec: PodSpec;
}

export interface ReplicaSetStatus {
  replicas?: number;
  fullyLabeledReplicas?: number;
  readyReplicas?: number;
  availableReplicas?: number;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface ReplicaSet extends KObject {
  spec: {
    replicas?: number;
    minReadySeconds?: number;
    selector: LabelSelector;
    template: PodTemplate;
  };
  status?: ReplicaSetStatus;
}

export interface DeploymentStatus {
  observedGeneration?: number;
  replicas?: number;
  updatedReplicas?: number;
  readyReplicas?: number;
  availableReplicas?: number;
  unavailableReplicas?: number;
  collisionCount?: number;
  conditions?: Condition[];
}

export interface Deployment extends KObject {
  spec: {
    replicas?: number;
    selector: LabelSelector;
    template: PodTemplate;
    strategy?: {
      type?: 'RollingUpdate' | 'Recreate';
      rollingUpdate?: { maxSurge?: IntOrString; maxUnavailable?: IntOrString };
    };
    minReadySeconds?: number;
    revisionHistoryLimit?: number;
    paused?: boolean;
    progressDeadlineSeconds?: number;
  };
  status?: DeploymentStatus;
}

export interface Node extends KObject {
  spec?: { unschedulable?: boolean; taints?: Taint[] };
  status?: { conditions?: Condition[] };
}

export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: IntOrString;
  protocol?: string;
  appProtocol?: string;
}

export interface Service extends KObject {
  spec?: {
    selector?: Labels | null;
    ports?: ServicePort[];
    type?: string;
    clusterIP?: string;
    publishNotReadyAddresses?: boolean;
  };
}

export interface Endpoint {
  addresses: string[];
  conditions: { ready?: boolean; serving?: boolean; terminating?: boolean };
  hostname?: string;
  nodeName?: string;
  targetRef?: { kind: string; namespace?: string; name: string; uid?: string };
}

export interface EndpointPort {
  name?: string;
  port?: number;
  protocol?: string;
  appProtocol?: string;
}

export interface EndpointSlice extends KObject {
  addressType: string;
  endpoints?: Endpoint[];
  ports?: EndpointPort[] | null;
}

// ----------------------------------------------------------------------- time

/** RFC 3339 with second precision, as Kubernetes writes timestamps. */
export const timestamp = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');

const time = (ts: string | undefined) => (ts ? Date.parse(ts) : 0);

/** Oldest first, then by name: client-go's ByCreationTimestamp. */
export function byCreation(a: KObject, b: KObject): number {
  return (
    time(a.metadata.creationTimestamp) - time(b.metadata.creationTimestamp) ||
    (a.metadata.name ?? '').localeCompare(b.metadata.name ?? '')
  );
}

// ----------------------------------------------------------------------- pods

export function podCondition(pod: Pod, type: string): Condition | undefined {
  return pod.status?.conditions?.find((c) => c.type === type);
}

export const isPodReady = (pod: Pod) => podCondition(pod, 'Ready')?.status === 'True';

export const isPodTerminal = (pod: Pod) =>
  pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';

/** Neither finished nor being deleted: what a ReplicaSet counts. */
export const isPodActive = (pod: Pod) => !isPodTerminal(pod) && !pod.metadata.deletionTimestamp;

/** Ready for at least `minReadySeconds`; `now` in milliseconds. */
export function isPodAvailable(pod: Pod, minReadySeconds: number, now: number): boolean {
  if (!isPodReady(pod)) return false;
  if (minReadySeconds <= 0) return true;
  const since = time(podCondition(pod, 'Ready')?.lastTransitionTime);
  return since > 0 && since + minReadySeconds * 1000 < now;
}

// ----------------------------------------------------------------- ownership

export function controllerOf(o: KObject): OwnerReference | undefined {
  return o.metadata.ownerReferences?.find((r) => r.controller === true);
}

export function controllerRef(owner: KObject): OwnerReference {
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name ?? '',
    uid: owner.metadata.uid ?? '',
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The key of the object of `kind` that controls `o`, if any. */
export function controllerKey(o: KObject, kind: string): string | undefined {
  const ref = controllerOf(o);
  if (!ref || ref.kind !== kind) return undefined;
  return o.metadata.namespace ? `${o.metadata.namespace}/${ref.name}` : ref.name;
}

/** A stored selector (the API validated it); an empty one matches nothing, as for workloads. */
export function selects(selector: LabelSelector | undefined, labels: Labels | undefined): boolean {
  if (!selector) return false;
  const empty =
    Object.keys(selector.matchLabels ?? {}).length === 0 && (selector.matchExpressions ?? []).length === 0;
  return !empty && matches(selector, labels ?? {});
}

// ---------------------------------------------------------------- conditions

/**
 * Sets a condition as client-go's SetCondition helpers do: nothing changes when status and
 * reason are the same; the transition time moves only when the status does. Returns the
 * new list (the old one is left alone).
 */
export function setCondition(conditions: readonly Condition[] | undefined, c: Condition): Condition[] {
  const list = [...(conditions ?? [])];
  const current = list.find((x) => x.type === c.type);
  if (current && current.status === c.status && current.reason === c.reason) return list;
  const next = { ...c };
  if (current && current.status === c.status && current.lastTransitionTime)
    next.lastTransitionTime = current.lastTransitionTime;
  return [...list.filter((x) => x.type !== c.type), next];
}

export function removeCondition(conditions: readonly Condition[] | undefined, type: string): Condition[] {
  return (conditions ?? []).filter((c) => c.type !== type);
}

// ------------------------------------------------------------------- values

/** JSON with object keys sorted: equal values give equal strings. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : x,
  );
}

export const deepEqual = (a: unknown, b: unknown) => canonical(a) === canonical(b);

/**
 * An int, or a percentage of `total` rounded up or down, as intstr's
 * GetScaledValueFromIntOrPercent.
 */
export function scaledValue(v: IntOrString | undefined, total: number, roundUp: boolean): number {
  if (v === undefined) return 0;
  if (typeof v === 'number') return v;
  const m = /^(\d+)%$/.exec(v);
  if (!m) return Number.parseInt(v, 10) || 0;
  const x = (Number(m[1]) * total) / 100;
  return roundUp ? Math.ceil(x) : Math.floor(x);
}

/** Drops fields that Go's `omitempty` leaves out (zero numbers, empty lists). */
export function omitEmpty<T extends object>(o: T): T {
  return Object.fromEntries(
    Object.entries(o).filter(
      ([, v]) => v !== undefined && v !== 0 && v !== '' && !(Array.isArray(v) && v.length === 0),
    ),
  ) as T;
}

// ------------------------------------------------------------ template hash

const SAFE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

/** FNV-1a, 32 bits, as Go's hash/fnv New32a. */
function fnv32a(bytes: Uint8Array, h = 0x811c9dc5): number {
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/**
 * The `pod-template-hash` of a template, as the deployment controller's ComputeHash: an
 * FNV-1a of the template (here its canonical JSON) and the collision count, printed in
 * decimal and mapped onto the alphabet without vowels (`rand.SafeEncodeString`), so
 * names read like `web-7854ff8877`.
 */
export function podTemplateHash(template: PodTemplate, collisionCount?: number): string {
  let h = fnv32a(new TextEncoder().encode(canonical(template)));
  if (collisionCount !== undefined) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, collisionCount >>> 0, true);
    h = fnv32a(b, h);
  }
  return [...String(h)].map((c) => SAFE_ALPHABET[c.charCodeAt(0) % SAFE_ALPHABET.length]).join('');
}
