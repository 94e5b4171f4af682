/**
 * The scheduler, after kube-scheduler's default profile cut down to what a lab needs:
 * filter nodes (unschedulable, taints against tolerations, nodeSelector and required node
 * affinity; a node that is not Ready counts as tainted `node.kubernetes.io/not-ready`, as
 * the node lifecycle controller would taint it), score by fewest pods, and bind. A pod
 * that fits nowhere stays Pending with PodScheduled False and kube-scheduler's message,
 * and is tried again whenever a node changes.
 */
import { Controller, keyOf, type Outcome, splitKey } from './framework.js';
import {
  type Condition,
  isPodTerminal,
  type Node,
  type NodeSelectorRequirement,
  type NodeSelectorTerm,
  type Pod,
  podCondition,
  type Taint,
  type Toleration,
  timestamp,
} from './objects.js';
import { type ControllerContext, resourceOf } from './ownership.js';

export const SCHEDULER_NAME = 'default-scheduler';

/** Why a node does not fit, worded as kube-scheduler's filter plugins word it. */
export type Misfit =
  | { plugin: 'NodeUnschedulable' }
  | { plugin: 'TaintToleration'; taint: Taint }
  | { plugin: 'NodeAffinity' };

const misfitText = (m: Misfit): string => {
  switch (m.plugin) {
    case 'NodeUnschedulable':
      return 'node(s) were unschedulable';
    case 'TaintToleration':
      return `node(s) had untolerated taint {${m.taint.key}: ${m.taint.value ?? ''}}`;
    case 'NodeAffinity':
      return "node(s) didn't match Pod's node affinity/selector";
  }
};

export function tolerates(t: Toleration, taint: Taint): boolean {
  if (t.effect && t.effect !== taint.effect) return false;
  if (t.key && t.key !== taint.key) return false;
  if (t.operator === 'Exists') return true;
  return (t.operator ?? 'Equal') === 'Equal' && (t.value ?? '') === (taint.value ?? '');
}

/** The node's taints, with the one the node lifecycle controller puts on a node that is not Ready. */
function taintsOf(node: Node): Taint[] {
  const taints = [...(node.spec?.taints ?? [])];
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
  if (ready?.status !== 'True') {
    const key =
      ready?.status === 'Unknown' ? 'node.kubernetes.io/unreachable' : 'node.kubernetes.io/not-ready';
    if (!taints.some((t) => t.key === key && t.effect === 'NoSchedule'))
      taints.push({ key, effect: 'NoSchedule' });
  }
  return taints;
}

function requirementMatches(r: NodeSelectorRequirement, value: string | undefined): boolean {
  const values = r.values ?? [];
  switch (r.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
    case 'Lt': {
      const [bound] = values;
      if (value === undefined || bound === undefined || !/^-?\d+$/.test(value)) return false;
      return r.operator === 'Gt' ? Number(value) > Number(bound) : Number(value) < Number(bound);
    }
  }
}

function termMatches(term: NodeSelectorTerm, node: Node): boolean {
  const labels = node.metadata.labels ?? {};
  const exprs = term.matchExpressions ?? [];
  const fields = term.matchFields ?? [];
  // An empty term matches no node.
  if (exprs.length === 0 && fields.length === 0) return false;
  return (
    exprs.every((r) => requirementMatches(r, labels[r.key])) &&
    fields.every((r) => requirementMatches(r, r.key === 'metadata.name' ? node.metadata.name : undefined))
  );
}

/** Why `node` cannot take `pod`, in kube-scheduler's filter order; undefined when it can. */
export function misfit(pod: Pod, node: Node): Misfit | undefined {
  const tolerations = pod.spec.tolerations ?? [];
  if (node.spec?.unschedulable) {
    const taint: Taint = { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' };
    if (!tolerations.some((t) => tolerates(t, taint))) return { plugin: 'NodeUnschedulable' };
  }
  for (const taint of taintsOf(node)) {
    if (taint.effect === 'PreferNoSchedule') continue;
    if (!tolerations.some((t) => tolerates(t, taint))) return { plugin: 'TaintToleration', taint };
  }
  const labels = node.metadata.labels ?? {};
  const selector = pod.spec.nodeSelector ?? {};
  if (Object.entries(selector).some(([k, v]) => labels[k] !== v)) return { plugin: 'NodeAffinity' };
  const terms =
    pod.spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  if (terms && !terms.some((t) => termMatches(t, node))) return { plugin: 'NodeAffinity' };
  return undefined;
}

/** kube-scheduler's FitError message: a histogram of reasons, then preemption's verdict. */
export function unschedulableMessage(nodes: number, misfits: readonly Misfit[]): string {
  if (nodes === 0) return 'no nodes available to schedule pods';
  const counts = new Map<string, number>();
  for (const m of misfits) counts.set(misfitText(m), (counts.get(misfitText(m)) ?? 0) + 1);
  const reasons = [...counts].map(([text, n]) => `${n} ${text}`).sort();
  return (
    `0/${nodes} nodes are available: ${reasons.join(', ')}. ` +
    `preemption: 0/${nodes} nodes are available: ${nodes} Preemption is not helpful for scheduling.`
  );
}

export type Placement = { node: string } | { unschedulable: string };

/** Where `pod` goes: the fitting node with the fewest pods (by name among equals). */
export function place(pod: Pod, nodes: readonly Node[], podsOn: (node: string) => number): Placement {
  const fits: Node[] = [];
  const misfits: Misfit[] = [];
  for (const node of nodes) {
    const m = misfit(pod, node);
    if (m) misfits.push(m);
    else fits.push(node);
  }
  if (fits.length === 0) return { unschedulable: unschedulableMessage(nodes.length, misfits) };
  const score = (n: Node) => podsOn(n.metadata.name ?? '');
  const best = fits.reduce((a, b) =>
    score(b) < score(a) || (score(b) === score(a) && (b.metadata.name ?? '') < (a.metadata.name ?? ''))
      ? b
      : a,
  );
  return { node: best.metadata.name ?? '' };
}

const pending = (p: Pod) =>
  !p.spec.nodeName &&
  !p.metadata.deletionTimestamp &&
  !isPodTerminal(p) &&
  (p.spec.schedulerName ?? SCHEDULER_NAME) === SCHEDULER_NAME;

export function scheduler(ctx: ControllerContext): Controller {
  const { api } = ctx;
  const pods = ctx.informers.for<Pod>('', 'pods');
  const nodes = ctx.informers.for<Node>('', 'nodes');
  const podType = resourceOf(api, '', 'pods');
  const events = ctx.recorder(SCHEDULER_NAME);
  /** Pods per node, kept from pod events so scoring does not walk every pod. */
  const perNode = new Map<string, Set<string>>();

  const controller = new Controller({
    name: 'scheduler',
    reconcile: schedule,
    keys: () => pods.list().filter(pending).map(keyOf),
    onError: ctx.onError,
  });

  pods.on(({ type, object, old }) => {
    const key = keyOf(object);
    if (old?.spec.nodeName) perNode.get(old.spec.nodeName)?.delete(key);
    if (type !== 'DELETED' && object.spec.nodeName && !isPodTerminal(object)) {
      let set = perNode.get(object.spec.nodeName);
      if (!set) {
        set = new Set();
        perNode.set(object.spec.nodeName, set);
      }
      set.add(key);
    }
    if (type !== 'DELETED' && pending(object)) controller.enqueue(key);
  });
  // A node that appears or changes may fit pods that fit nowhere before.
  nodes.on(() => {
    for (const p of pods.list()) if (pending(p)) controller.enqueue(keyOf(p));
  });

  function schedule(key: string): Outcome {
    const { namespace, name } = splitKey(key);
    const pod = pods.get(namespace, name);
    if (!pod || !pending(pod)) return undefined;
    const where = place(pod, nodes.list(), (n) => perNode.get(n)?.size ?? 0);
    if ('node' in where) {
      const { object } = api.patch(podType, namespace, name, 'merge', {
        metadata: { resourceVersion: pod.metadata.resourceVersion },
        spec: { nodeName: where.node },
      });
      setScheduled(object as Pod, { type: 'PodScheduled', status: 'True' });
      events.event(pod, 'Normal', 'Scheduled', `Successfully assigned ${namespace}/${name} to ${where.node}`);
      return undefined;
    }
    const c: Condition = {
      type: 'PodScheduled',
      status: 'False',
      reason: 'Unschedulable',
      message: where.unschedulable,
    };
    // Said once per distinct verdict: a retry that changes nothing writes nothing.
    if (setScheduled(pod, c)) events.event(pod, 'Warning', 'FailedScheduling', where.unschedulable);
    return undefined;
  }

  /** Sets PodScheduled in the pod's status; whether it changed. */
  function setScheduled(pod: Pod, c: Condition): boolean {
    const current = podCondition(pod, 'PodScheduled');
    if (current?.status === c.status && current.reason === c.reason && current.message === c.message)
      return false;
    const next: Condition = {
      ...c,
      lastProbeTime: null,
      lastTransitionTime:
        current?.status === c.status && current.lastTransitionTime ? current.lastTransitionTime : timestamp(),
    };
    const conditions = [...(pod.status?.conditions ?? []).filter((x) => x.type !== 'PodScheduled'), next];
    api.patch(
      podType,
      pod.metadata.namespace,
      pod.metadata.name ?? '',
      'merge',
      { metadata: { resourceVersion: pod.metadata.resourceVersion }, status: { conditions } },
      { subresource: 'status' },
    );
    return true;
  }

  return controller;
}
