/**
 * The ReplicaSet controller, after kube-controller-manager's: it keeps `spec.replicas`
 * active pods made from the template (named `<replicaset>-<5 chars>`), deletes the least
 * valuable ones first when there are too many, and reports what it sees in the status.
 */
import { ApiError } from '../../../apiserver/index.js';
import { Controller, keyOf, type Outcome, splitKey } from './framework.js';
import {
  controllerKey,
  controllerOf,
  controllerRef,
  deepEqual,
  isPodActive,
  isPodAvailable,
  isPodReady,
  omitEmpty,
  type Pod,
  podCondition,
  type ReplicaSet,
  type ReplicaSetStatus,
  removeCondition,
  selects,
  setCondition,
  timestamp,
} from './objects.js';
import { type ControllerContext, claim, resourceOf } from './ownership.js';

/** At most this many pods are created or deleted in one sync (kube-controller-manager's burstReplicas). */
const BURST_REPLICAS = 500;

const PHASE_ORDER: Record<string, number> = { Pending: 0, Unknown: 1, Running: 2 };

/**
 * Orders pods for deletion, most expendable first, as controller.ActivePodsWithRanks:
 * unscheduled, then pending, then not ready, then doubled up on a node with related pods,
 * then ready for less time, then restarted more, then newer.
 */
export function deletionOrder(rank: ReadonlyMap<Pod, number>): (a: Pod, b: Pod) => number {
  const time = (ts: string | undefined) => (ts ? Date.parse(ts) : 0);
  // "After or zero": a missing time sorts first, then later times before earlier ones.
  const laterFirst = (a: number, b: number) => (a === 0 || b === 0 ? (a === 0 ? -1 : 1) : b - a);
  const restarts = (p: Pod) =>
    Math.max(0, ...(p.status?.containerStatuses ?? []).map((c) => c.restartCount ?? 0));
  return (a, b) => {
    const na = a.spec.nodeName ?? '';
    const nb = b.spec.nodeName ?? '';
    if (na !== nb && (na === '' || nb === '')) return na === '' ? -1 : 1;
    const pa = PHASE_ORDER[a.status?.phase ?? ''] ?? 0;
    const pb = PHASE_ORDER[b.status?.phase ?? ''] ?? 0;
    if (pa !== pb) return pa - pb;
    const ra = isPodReady(a);
    const rb = isPodReady(b);
    if (ra !== rb) return ra ? 1 : -1;
    const da = Number(a.metadata.annotations?.['controller.kubernetes.io/pod-deletion-cost'] ?? 0) || 0;
    const db = Number(b.metadata.annotations?.['controller.kubernetes.io/pod-deletion-cost'] ?? 0) || 0;
    if (da !== db) return da - db;
    const ka = rank.get(a) ?? 0;
    const kb = rank.get(b) ?? 0;
    if (ka !== kb) return kb - ka;
    if (ra && rb) {
      const ta = time(podCondition(a, 'Ready')?.lastTransitionTime);
      const tb = time(podCondition(b, 'Ready')?.lastTransitionTime);
      if (ta !== tb) return laterFirst(ta, tb);
    }
    const xa = restarts(a);
    const xb = restarts(b);
    if (xa !== xb) return xb - xa;
    const ca = time(a.metadata.creationTimestamp);
    const cb = time(b.metadata.creationTimestamp);
    if (ca !== cb) return laterFirst(ca, cb);
    return 0;
  };
}

export function replicaSetController(ctx: ControllerContext): Controller {
  const { api } = ctx;
  const replicaSets = ctx.informers.for<ReplicaSet>('apps', 'replicasets');
  const pods = ctx.informers.for<Pod>('', 'pods');
  const rsType = resourceOf(api, 'apps', 'replicasets');
  const podType = resourceOf(api, '', 'pods');
  const events = ctx.recorder('replicaset-controller');

  const controller = new Controller({
    name: 'replicaset',
    reconcile: sync,
    keys: () => replicaSets.list().map(keyOf),
    onError: ctx.onError,
  });

  replicaSets.on(({ object }) => controller.enqueue(keyOf(object)));
  pods.on(({ type, object, old }) => {
    for (const pod of old ? [object, old] : [object]) {
      const owner = controllerKey(pod, 'ReplicaSet');
      if (owner) controller.enqueue(owner);
      else if (type !== 'DELETED')
        // An orphan: whoever selects it may adopt it.
        for (const rs of replicaSets.list(pod.metadata.namespace))
          if (selects(rs.spec.selector, pod.metadata.labels)) controller.enqueue(keyOf(rs));
    }
  });

  /** Active pods `rs` controls, from the cache (which already holds this sync's writes). */
  const podsOf = (rs: ReplicaSet) =>
    pods
      .list(rs.metadata.namespace)
      .filter((p) => isPodActive(p) && controllerOf(p)?.uid === rs.metadata.uid);

  function sync(key: string): Outcome {
    const { namespace, name } = splitKey(key);
    const rs = replicaSets.get(namespace, name);
    if (!rs) return undefined;
    claim(api, podType, rs, rs.spec.selector, pods.list(namespace).filter(isPodActive));
    let failure: Error | undefined;
    if (!rs.metadata.deletionTimestamp) failure = manageReplicas(rs, podsOf(rs));
    const current = podsOf(rs);
    const status = calculateStatus(rs, current, failure);
    if (!deepEqual(rs.status ?? {}, status))
      api.update(rsType, namespace, name, { ...rs, status }, { subresource: 'status' });
    if (failure) throw failure;
    // Ready pods become available only after minReadySeconds: look again then.
    const minReady = rs.spec.minReadySeconds ?? 0;
    if (minReady > 0 && status.readyReplicas !== status.availableReplicas)
      return { requeueAfterMs: minReady * 1000 };
    return undefined;
  }

  /** Creates or deletes pods toward `spec.replicas`; returns the first failure, if any. */
  function manageReplicas(rs: ReplicaSet, active: Pod[]): Error | undefined {
    const diff = active.length - (rs.spec.replicas ?? 1);
    if (diff < 0) {
      for (let i = 0; i < Math.min(-diff, BURST_REPLICAS); i++) {
        const failure = createPod(rs);
        // Stop at the first failure, as slowStartBatch does: the rest would fail alike.
        if (failure) return failure;
      }
    } else if (diff > 0) {
      const victims = podsToDelete(rs, active, Math.min(diff, BURST_REPLICAS));
      let failure: Error | undefined;
      for (const pod of victims) {
        try {
          api.delete(podType, pod.metadata.namespace, pod.metadata.name ?? '');
          events.event(rs, 'Normal', 'SuccessfulDelete', `Deleted pod: ${pod.metadata.name}`);
        } catch (err) {
          if (err instanceof ApiError && err.code === 404) continue;
          events.event(rs, 'Warning', 'FailedDelete', `Error deleting: ${(err as Error).message}`);
          failure ??= err as Error;
        }
      }
      return failure;
    }
    return undefined;
  }

  function createPod(rs: ReplicaSet): Error | undefined {
    const t = rs.spec.template;
    const meta = t.metadata ?? {};
    const body = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        // The API server appends five random characters, as kube-apiserver does.
        generateName: `${rs.metadata.name}-`,
        namespace: rs.metadata.namespace,
        labels: { ...meta.labels },
        ...(meta.annotations ? { annotations: { ...meta.annotations } } : {}),
        ...(meta.finalizers ? { finalizers: [...meta.finalizers] } : {}),
        ownerReferences: [controllerRef(rs)],
      },
      spec: structuredClone(t.spec),
    };
    try {
      const { object } = api.create(podType, rs.metadata.namespace, body);
      events.event(rs, 'Normal', 'SuccessfulCreate', `Created pod: ${object.metadata.name}`);
      return undefined;
    } catch (err) {
      // A namespace being deleted takes the ReplicaSet with it: nothing to retry.
      if (err instanceof ApiError && err.code === 403 && /being terminated/.test(err.message))
        return undefined;
      events.event(rs, 'Warning', 'FailedCreate', `Error creating: ${(err as Error).message}`);
      return err as Error;
    }
  }

  /**
   * The `n` pods to delete. Pods doubled up on a node with pods of the same owner (sibling
   * ReplicaSets of one Deployment) go first, to keep the spread.
   */
  function podsToDelete(rs: ReplicaSet, active: Pod[], n: number): Pod[] {
    if (n >= active.length) return active;
    const owner = controllerOf(rs);
    const siblings = owner
      ? new Set(
          replicaSets
            .list(rs.metadata.namespace)
            .filter((x) => controllerOf(x)?.uid === owner.uid)
            .map((x) => x.metadata.uid),
        )
      : new Set([rs.metadata.uid]);
    const onNode = new Map<string, number>();
    for (const p of pods.list(rs.metadata.namespace)) {
      const ref = controllerOf(p);
      if (ref && siblings.has(ref.uid) && isPodActive(p))
        onNode.set(p.spec.nodeName ?? '', (onNode.get(p.spec.nodeName ?? '') ?? 0) + 1);
    }
    const rank = new Map(active.map((p) => [p, onNode.get(p.spec.nodeName ?? '') ?? 0]));
    return [...active].sort(deletionOrder(rank)).slice(0, n);
  }

  return controller;
}

function calculateStatus(rs: ReplicaSet, active: Pod[], failure: Error | undefined): ReplicaSetStatus {
  const now = Date.now();
  const template = Object.entries(rs.spec.template.metadata?.labels ?? {});
  let conditions = rs.status?.conditions;
  const failed = conditions?.find((c) => c.type === 'ReplicaFailure');
  if (failure && !failed) {
    const diff = active.length - (rs.spec.replicas ?? 1);
    conditions = setCondition(conditions, {
      type: 'ReplicaFailure',
      status: 'True',
      reason: diff < 0 ? 'FailedCreate' : 'FailedDelete',
      message: failure.message,
      lastTransitionTime: timestamp(now),
    });
  } else if (!failure && failed) conditions = removeCondition(conditions, 'ReplicaFailure');
  return {
    replicas: active.length,
    ...omitEmpty({
      fullyLabeledReplicas: active.filter((p) => template.every(([k, v]) => p.metadata.labels?.[k] === v))
        .length,
      readyReplicas: active.filter(isPodReady).length,
      availableReplicas: active.filter((p) => isPodAvailable(p, rs.spec.minReadySeconds ?? 0, now)).length,
      observedGeneration: rs.metadata.generation,
      conditions,
    }),
  };
}
