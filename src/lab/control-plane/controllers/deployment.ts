/**
 * The Deployment controller, after kube-controller-manager's (`sync.go`, `rolling.go`,
 * `recreate.go`, `progress.go`): one ReplicaSet per pod template, named
 * `<deployment>-<pod-template-hash>`; scaling spread proportionally over the ReplicaSets
 * that have pods; rolling replacement bounded by maxSurge and maxUnavailable, counting
 * only available pods; old ReplicaSets kept at zero up to revisionHistoryLimit; and a
 * status with Kubernetes' conditions and reasons.
 */
import { ApiError } from '../../../apiserver/index.js';
import type { LabelSelector } from '../../../k8s/selector.js';
import type { EventRecorder } from './events.js';
import { Controller, type Informer, keyOf, type Outcome, splitKey } from './framework.js';
import {
  byCreation,
  type Condition,
  type ConditionStatus,
  canonical,
  controllerKey,
  controllerOf,
  controllerRef,
  type Deployment,
  type DeploymentStatus,
  deepEqual,
  isPodTerminal,
  omitEmpty,
  type Pod,
  type PodTemplate,
  podTemplateHash,
  type ReplicaSet,
  removeCondition,
  scaledValue,
  selects,
  setCondition,
  timestamp,
} from './objects.js';
import { type ControllerContext, claim, resourceOf } from './ownership.js';

export const REVISION = 'deployment.kubernetes.io/revision';
const REVISION_HISTORY = 'deployment.kubernetes.io/revision-history';
export const DESIRED_REPLICAS = 'deployment.kubernetes.io/desired-replicas';
export const MAX_REPLICAS = 'deployment.kubernetes.io/max-replicas';
export const POD_TEMPLATE_HASH = 'pod-template-hash';
/** Deployment annotations that are the controller's own, never copied onto ReplicaSets. */
const NOT_COPIED = new Set([
  'kubectl.kubernetes.io/last-applied-configuration',
  REVISION,
  REVISION_HISTORY,
  DESIRED_REPLICAS,
  MAX_REPLICAS,
  'deprecated.deployment.rollback.to',
]);
const MAX_REVISION_HISTORY_CHARS = 2000;

/** Condition reasons, as deploymentutil names them. */
const Reason = {
  newRSCreated: 'NewReplicaSetCreated',
  foundNewRS: 'FoundNewReplicaSet',
  rsUpdated: 'ReplicaSetUpdated',
  newRSAvailable: 'NewReplicaSetAvailable',
  timedOut: 'ProgressDeadlineExceeded',
  paused: 'DeploymentPaused',
  resumed: 'DeploymentResumed',
  minAvailable: 'MinimumReplicasAvailable',
  minUnavailable: 'MinimumReplicasUnavailable',
  failedRSCreate: 'ReplicaSetCreateError',
} as const;

// ------------------------------------------------------------- pure helpers

const desired = (d: Deployment) => d.spec.replicas ?? 1;
const specReplicas = (rs: ReplicaSet) => rs.spec.replicas ?? 1;
const isRolling = (d: Deployment) => (d.spec.strategy?.type ?? 'RollingUpdate') === 'RollingUpdate';
const hasProgressDeadline = (d: Deployment) =>
  d.spec.progressDeadlineSeconds !== undefined && d.spec.progressDeadlineSeconds !== 2 ** 31 - 1;
const isActive = (rs: ReplicaSet) => specReplicas(rs) > 0;

/** maxSurge rounded up and maxUnavailable rounded down; both zero would stall, so one may be unavailable. */
function fenceposts(d: Deployment): { surge: number; unavailable: number } {
  const ru = d.spec.strategy?.rollingUpdate;
  const surge = scaledValue(ru?.maxSurge ?? '25%', desired(d), true);
  const unavailable = scaledValue(ru?.maxUnavailable ?? '25%', desired(d), false);
  return surge === 0 && unavailable === 0 ? { surge, unavailable: 1 } : { surge, unavailable };
}

export const maxSurge = (d: Deployment) => (isRolling(d) ? fenceposts(d).surge : 0);

export function maxUnavailable(d: Deployment): number {
  if (!isRolling(d) || desired(d) === 0) return 0;
  return Math.min(fenceposts(d).unavailable, desired(d));
}

const sum = (list: readonly ReplicaSet[], f: (rs: ReplicaSet) => number | undefined) =>
  list.reduce((n, rs) => n + (f(rs) ?? 0), 0);
const specCount = (list: readonly ReplicaSet[]) => sum(list, specReplicas);
const actualCount = (list: readonly ReplicaSet[]) => sum(list, (rs) => rs.status?.replicas);
const availableCount = (list: readonly ReplicaSet[]) => sum(list, (rs) => rs.status?.availableReplicas);

function revisionOf(rs: ReplicaSet): number {
  const n = Number(rs.metadata.annotations?.[REVISION] ?? 0);
  return Number.isInteger(n) ? n : 0;
}

/** Templates equal but for the pod-template-hash label (deploymentutil.EqualIgnoreHash). */
export function equalIgnoreHash(a: PodTemplate, b: PodTemplate): boolean {
  const strip = (t: PodTemplate) => {
    const c = structuredClone(t);
    if (c.metadata?.labels) {
      delete c.metadata.labels[POD_TEMPLATE_HASH];
      if (Object.keys(c.metadata.labels).length === 0) delete c.metadata.labels;
    }
    return canonical(c);
  };
  return strip(a) === strip(b);
}

/** The oldest ReplicaSet whose template is the Deployment's. */
const findNewReplicaSet = (d: Deployment, list: readonly ReplicaSet[]) =>
  [...list].sort(byCreation).find((rs) => equalIgnoreHash(rs.spec.template, d.spec.template));

/**
 * How many replicas the new ReplicaSet may have now (deploymentutil.NewRSNewReplicas).
 * A ReplicaSet just scaled down still has its surplus pods until the ReplicaSet
 * controller deletes them, and this controller may run again first: those count too
 * (`status.replicas` above `spec.replicas`), so pods never exceed replicas + maxSurge.
 */
function newRSNewReplicas(d: Deployment, all: readonly ReplicaSet[], newRS: ReplicaSet): number {
  if (!isRolling(d)) return desired(d);
  const current = sum(all, (rs) => Math.max(specReplicas(rs), rs.status?.replicas ?? 0));
  const maxTotal = desired(d) + maxSurge(d);
  if (current >= maxTotal) return specReplicas(newRS);
  return specReplicas(newRS) + Math.min(maxTotal - current, desired(d) - specReplicas(newRS));
}

function replicasAnnotationsNeedUpdate(rs: ReplicaSet, want: number, max: number): boolean {
  const a = rs.metadata.annotations ?? {};
  return a[DESIRED_REPLICAS] !== String(want) || a[MAX_REPLICAS] !== String(max);
}

function setReplicasAnnotations(rs: ReplicaSet, want: number, max: number): boolean {
  if (!replicasAnnotationsNeedUpdate(rs, want, max)) return false;
  rs.metadata.annotations = {
    ...rs.metadata.annotations,
    [DESIRED_REPLICAS]: String(want),
    [MAX_REPLICAS]: String(max),
  };
  return true;
}

/** Copies the Deployment's annotations and moves the revision forward; whether anything changed. */
function setNewReplicaSetAnnotations(
  d: Deployment,
  rs: ReplicaSet,
  revision: number,
  exists: boolean,
): boolean {
  const a = { ...rs.metadata.annotations };
  let changed = false;
  for (const [k, v] of Object.entries(d.metadata.annotations ?? {})) {
    if (NOT_COPIED.has(k) || a[k] === v) continue;
    a[k] = v;
    changed = true;
  }
  const old = a[REVISION];
  const oldRevision = old === undefined || old === '' ? 0 : Number(old);
  if (Number.isInteger(oldRevision) && oldRevision < revision) {
    a[REVISION] = String(revision);
    changed = true;
    if (old) {
      const history = (a[REVISION_HISTORY] ?? '').split(',').filter(Boolean);
      history.push(old);
      while (history.join(',').length > MAX_REVISION_HISTORY_CHARS) history.shift();
      a[REVISION_HISTORY] = history.join(',');
    }
  }
  rs.metadata.annotations = a;
  if (!exists && setReplicasAnnotations(rs, desired(d), desired(d) + maxSurge(d))) changed = true;
  return changed;
}

function condition(type: string, status: ConditionStatus, reason: string, message: string): Condition {
  const now = timestamp();
  return { type, status, lastUpdateTime: now, lastTransitionTime: now, reason, message };
}

const progressingOf = (s: DeploymentStatus | undefined) =>
  s?.conditions?.find((c) => c.type === 'Progressing');

/** The rollout is done: every replica updated and available, and the spec observed. */
function deploymentComplete(d: Deployment, s: DeploymentStatus): boolean {
  const n = desired(d);
  return (
    (s.updatedReplicas ?? 0) === n &&
    (s.replicas ?? 0) === n &&
    (s.availableReplicas ?? 0) === n &&
    (s.observedGeneration ?? 0) >= (d.metadata.generation ?? 0)
  );
}

/** The new status shows progress over the stored one. */
function deploymentProgressing(d: Deployment, s: DeploymentStatus): boolean {
  const old = d.status ?? {};
  const oldOld = (old.replicas ?? 0) - (old.updatedReplicas ?? 0);
  const newOld = (s.replicas ?? 0) - (s.updatedReplicas ?? 0);
  return (
    (s.updatedReplicas ?? 0) > (old.updatedReplicas ?? 0) ||
    newOld < oldOld ||
    (s.readyReplicas ?? 0) > (old.readyReplicas ?? 0) ||
    (s.availableReplicas ?? 0) > (old.availableReplicas ?? 0)
  );
}

function deploymentTimedOut(d: Deployment, s: DeploymentStatus): boolean {
  if (!hasProgressDeadline(d)) return false;
  const c = progressingOf(s);
  if (!c || c.reason === Reason.newRSAvailable) return false;
  if (c.reason === Reason.timedOut) return true;
  const from = c.lastUpdateTime ? Date.parse(c.lastUpdateTime) : 0;
  return from + (d.spec.progressDeadlineSeconds ?? 0) * 1000 < Date.now();
}

/** The status the ReplicaSets add up to (before Progressing is judged). */
function calculateStatus(
  all: readonly ReplicaSet[],
  newRS: ReplicaSet | undefined,
  d: Deployment,
): DeploymentStatus {
  const available = availableCount(all);
  const status: DeploymentStatus = omitEmpty({
    observedGeneration: d.metadata.generation,
    replicas: actualCount(all),
    updatedReplicas: newRS?.status?.replicas,
    readyReplicas: sum(all, (rs) => rs.status?.readyReplicas),
    availableReplicas: available,
    unavailableReplicas: Math.max(0, specCount(all) - available),
  });
  if (d.status?.collisionCount !== undefined) status.collisionCount = d.status.collisionCount;
  status.conditions = setCondition(
    d.status?.conditions,
    available >= desired(d) - maxUnavailable(d)
      ? condition('Available', 'True', Reason.minAvailable, 'Deployment has minimum availability.')
      : condition(
          'Available',
          'False',
          Reason.minUnavailable,
          'Deployment does not have minimum availability.',
        ),
  );
  return status;
}

/** Larger first; among equals, newer first when scaling up and older first when scaling down. */
function bySize(newerFirst: boolean): (a: ReplicaSet, b: ReplicaSet) => number {
  return (a, b) => specReplicas(b) - specReplicas(a) || (newerFirst ? byCreation(b, a) : byCreation(a, b));
}

/** Go's math.Round: halves away from zero. */
const round = (x: number) => Math.sign(x) * Math.round(Math.abs(x));

/** This ReplicaSet's share of a resize (deploymentutil.GetProportion). */
function proportion(rs: ReplicaSet, d: Deployment, toAdd: number, added: number): number {
  if (specReplicas(rs) === 0 || toAdd === 0 || toAdd === added) return 0;
  let fraction: number;
  if (desired(d) === 0) fraction = -specReplicas(rs);
  else {
    const max = desired(d) + maxSurge(d);
    let before = Number(rs.metadata.annotations?.[MAX_REPLICAS] ?? 0) || 0;
    if (before === 0) before = d.status?.replicas ?? 0;
    fraction = before === 0 ? 0 : round((specReplicas(rs) * max) / before) - specReplicas(rs);
  }
  const allowed = toAdd - added;
  return toAdd > 0 ? Math.min(fraction, allowed) : Math.max(fraction, allowed);
}

// ---------------------------------------------------------------- controller

interface Shared {
  ctx: ControllerContext;
  deployments: Informer<Deployment>;
  replicaSets: Informer<ReplicaSet>;
  pods: Informer<Pod>;
  events: EventRecorder;
}

export function deploymentController(ctx: ControllerContext): Controller {
  const s: Shared = {
    ctx,
    deployments: ctx.informers.for<Deployment>('apps', 'deployments'),
    replicaSets: ctx.informers.for<ReplicaSet>('apps', 'replicasets'),
    pods: ctx.informers.for<Pod>('', 'pods'),
    events: ctx.recorder('deployment-controller'),
  };
  const controller = new Controller({
    name: 'deployment',
    reconcile: (key) => {
      const { namespace, name } = splitKey(key);
      const d = s.deployments.get(namespace, name);
      return d ? new DeploymentSync(s, d).run() : undefined;
    },
    keys: () => s.deployments.list().map(keyOf),
    onError: ctx.onError,
  });

  const selecting = (o: ReplicaSet) =>
    s.deployments.list(o.metadata.namespace).filter((d) => selects(d.spec.selector, o.metadata.labels));

  s.deployments.on(({ object }) => controller.enqueue(keyOf(object)));
  s.replicaSets.on(({ type, object, old }) => {
    for (const rs of old ? [object, old] : [object]) {
      const owner = controllerKey(rs, 'Deployment');
      if (owner) controller.enqueue(owner);
      else if (type !== 'DELETED') for (const d of selecting(rs)) controller.enqueue(keyOf(d));
    }
  });
  // A Recreate rollout waits for the old pods to be gone.
  s.pods.on(({ type, object }) => {
    if (type !== 'DELETED') return;
    const rsKey = controllerKey(object, 'ReplicaSet');
    const rs = rsKey && s.replicaSets.get(object.metadata.namespace, splitKey(rsKey).name);
    const owner = rs && controllerKey(rs, 'Deployment');
    if (owner) controller.enqueue(owner);
  });
  return controller;
}

/** One sync of one Deployment; `d` is always the latest stored version after our writes. */
class DeploymentSync {
  d: Deployment;
  readonly #s: Shared;

  constructor(s: Shared, d: Deployment) {
    this.#s = s;
    this.d = d;
  }

  get #api() {
    return this.#s.ctx.api;
  }

  #resource(plural: 'deployments' | 'replicasets') {
    return resourceOf(this.#api, 'apps', plural);
  }

  run(): Outcome {
    const d = this.d;
    claim(
      this.#api,
      this.#resource('replicasets'),
      d,
      d.spec.selector,
      this.#s.replicaSets.list(d.metadata.namespace),
    );
    if (d.metadata.deletionTimestamp) {
      const { newRS } = this.#replicaSets(false);
      return this.#syncStatus(newRS);
    }
    this.#checkPausedConditions();
    if (this.d.spec.paused || this.#isScalingEvent()) return this.#syncScale();
    return isRolling(this.d) ? this.#rolloutRolling() : this.#rolloutRecreate();
  }

  // ------------------------------------------------------------- reading

  /** The ReplicaSets this Deployment controls, from the (always current) cache. */
  #owned(): ReplicaSet[] {
    return this.#s.replicaSets
      .list(this.d.metadata.namespace)
      .filter((rs) => controllerOf(rs)?.uid === this.d.metadata.uid);
  }

  #fresh(rs: ReplicaSet): ReplicaSet {
    return this.#s.replicaSets.get(rs.metadata.namespace, rs.metadata.name ?? '') ?? rs;
  }

  // ------------------------------------------------------------- writing

  #event(type: 'Normal' | 'Warning', reason: string, message: string): void {
    this.#s.events.event(this.d, type, reason, message);
  }

  #writeStatus(status: DeploymentStatus): void {
    if (deepEqual(this.d.status ?? {}, status)) return;
    const r = this.#resource('deployments');
    const { object } = this.#api.update(
      r,
      this.d.metadata.namespace,
      this.d.metadata.name ?? '',
      { ...this.d, status },
      { subresource: 'status' },
    );
    this.d = object as Deployment;
  }

  /** The Deployment's revision annotation follows its newest ReplicaSet's. */
  #setRevision(revision: string | undefined): void {
    if (revision === undefined || this.d.metadata.annotations?.[REVISION] === revision) return;
    const { object } = this.#api.patch(
      this.#resource('deployments'),
      this.d.metadata.namespace,
      this.d.metadata.name ?? '',
      'merge',
      {
        metadata: { annotations: { [REVISION]: revision }, resourceVersion: this.d.metadata.resourceVersion },
      },
    );
    this.d = object as Deployment;
  }

  #setProgressing(c: Condition): void {
    this.#writeStatus({ ...this.d.status, conditions: setCondition(this.d.status?.conditions, c) });
  }

  #updateReplicaSet(rs: ReplicaSet): ReplicaSet {
    return this.#api.update(this.#resource('replicasets'), rs.metadata.namespace, rs.metadata.name ?? '', rs)
      .object as ReplicaSet;
  }

  // ------------------------------------------------------- the new ReplicaSet

  /** The new ReplicaSet (made when `create` and missing) and all the others, revisions synced. */
  #replicaSets(create: boolean): { newRS: ReplicaSet | undefined; oldRSs: ReplicaSet[] } {
    const list = this.#owned();
    const existing = findNewReplicaSet(this.d, list);
    const oldRSs = list.filter((rs) => rs !== existing);
    const newRS = this.#newReplicaSet(existing, oldRSs, create);
    return { newRS, oldRSs: oldRSs.map((rs) => this.#fresh(rs)) };
  }

  #newReplicaSet(
    existing: ReplicaSet | undefined,
    oldRSs: ReplicaSet[],
    create: boolean,
  ): ReplicaSet | undefined {
    const d = this.d;
    const revision = Math.max(0, ...oldRSs.map(revisionOf)) + 1;
    if (existing) {
      const copy = structuredClone(existing);
      const annotated = setNewReplicaSetAnnotations(d, copy, revision, true);
      if (annotated || (copy.spec.minReadySeconds ?? 0) !== (d.spec.minReadySeconds ?? 0)) {
        if (d.spec.minReadySeconds) copy.spec.minReadySeconds = d.spec.minReadySeconds;
        else delete copy.spec.minReadySeconds;
        return this.#updateReplicaSet(copy);
      }
      this.#setRevision(copy.metadata.annotations?.[REVISION]);
      if (hasProgressDeadline(this.d) && !progressingOf(this.d.status))
        this.#setProgressing(
          condition(
            'Progressing',
            'True',
            Reason.foundNewRS,
            `Found new replica set "${copy.metadata.name}"`,
          ),
        );
      return copy;
    }
    if (!create) return undefined;

    const template = structuredClone(d.spec.template);
    const hash = podTemplateHash(template, d.status?.collisionCount);
    template.metadata = {
      ...template.metadata,
      labels: { ...template.metadata?.labels, [POD_TEMPLATE_HASH]: hash },
    };
    const selector: LabelSelector = {
      ...d.spec.selector,
      matchLabels: { ...d.spec.selector.matchLabels, [POD_TEMPLATE_HASH]: hash },
    };
    const rs: ReplicaSet = {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: `${d.metadata.name}-${hash}`,
        namespace: d.metadata.namespace,
        labels: { ...template.metadata.labels },
        ownerReferences: [controllerRef(d)],
      },
      spec: {
        replicas: 0,
        ...(d.spec.minReadySeconds ? { minReadySeconds: d.spec.minReadySeconds } : {}),
        selector,
        template,
      },
    };
    rs.spec.replicas = newRSNewReplicas(d, [...oldRSs, rs], rs);
    setNewReplicaSetAnnotations(d, rs, revision, false);
    const name = rs.metadata.name ?? '';
    let created: ReplicaSet;
    let alreadyExisted = false;
    try {
      created = this.#api.create(this.#resource('replicasets'), d.metadata.namespace, rs)
        .object as ReplicaSet;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.reason === 'AlreadyExists') {
        const found = this.#s.replicaSets.get(d.metadata.namespace, name);
        if (
          !found ||
          controllerOf(found)?.uid !== d.metadata.uid ||
          !equalIgnoreHash(d.spec.template, found.spec.template)
        ) {
          // A hash collision: another template already has this name. Hash again with a new count.
          this.#writeStatus({ ...d.status, collisionCount: (d.status?.collisionCount ?? 0) + 1 });
          throw err;
        }
        created = found;
        alreadyExisted = true;
      } else if (err.code === 403 && /being terminated/.test(err.message)) {
        throw err;
      } else {
        const message = `Failed to create new replica set "${name}": ${err.message}`;
        if (hasProgressDeadline(d))
          this.#setProgressing(condition('Progressing', 'False', Reason.failedRSCreate, message));
        this.#event('Warning', Reason.failedRSCreate, message);
        throw err;
      }
    }
    const replicas = specReplicas(created);
    if (!alreadyExisted && replicas > 0)
      this.#event('Normal', 'ScalingReplicaSet', `Scaled up replica set ${name} from 0 to ${replicas}`);
    this.#setRevision(String(revision));
    if (!alreadyExisted && hasProgressDeadline(this.d))
      this.#setProgressing(
        condition('Progressing', 'True', Reason.newRSCreated, `Created new replica set "${name}"`),
      );
    return created;
  }

  // ------------------------------------------------------------------ scaling

  /** Scales `rs` and records it; whether the size changed, and the stored ReplicaSet. */
  #scale(rs: ReplicaSet, replicas: number, direction?: 'up' | 'down'): { scaled: boolean; rs: ReplicaSet } {
    const d = this.d;
    const max = desired(d) + maxSurge(d);
    const from = specReplicas(rs);
    const resize = from !== replicas;
    if (!resize && !replicasAnnotationsNeedUpdate(rs, desired(d), max)) return { scaled: false, rs };
    const copy = structuredClone(rs);
    copy.spec.replicas = replicas;
    setReplicasAnnotations(copy, desired(d), max);
    const updated = this.#updateReplicaSet(copy);
    if (resize) {
      const how = direction ?? (from < replicas ? 'up' : 'down');
      this.#event(
        'Normal',
        'ScalingReplicaSet',
        `Scaled ${how} replica set ${rs.metadata.name} from ${from} to ${replicas}`,
      );
    }
    return { scaled: resize, rs: updated };
  }

  #scaleAndRecord(rs: ReplicaSet, replicas: number): { scaled: boolean; rs: ReplicaSet } {
    if (specReplicas(rs) === replicas) return { scaled: false, rs };
    return this.#scale(rs, replicas);
  }

  /** `spec.replicas` changed while no ReplicaSet has been told (their desired-replicas annotation). */
  #isScalingEvent(): boolean {
    const { newRS, oldRSs } = this.#replicaSets(false);
    const all = newRS ? [...oldRSs, newRS] : oldRSs;
    return all.filter(isActive).some((rs) => {
      const want = rs.metadata.annotations?.[DESIRED_REPLICAS];
      return want !== undefined && Number(want) !== desired(this.d);
    });
  }

  /** A resize or a paused Deployment: scale, keep history bounded, report. */
  #syncScale(): Outcome {
    const { newRS, oldRSs } = this.#replicaSets(false);
    this.#resize(newRS, oldRSs);
    if (this.d.spec.paused) this.#cleanup(oldRSs);
    return this.#syncStatus(newRS);
  }

  #resize(newRS: ReplicaSet | undefined, oldRSs: ReplicaSet[]): void {
    const d = this.d;
    const active = (newRS ? [...oldRSs, newRS] : oldRSs).filter(isActive);
    // One ReplicaSet with pods (or none: then the newest) takes the whole size.
    if (active.length <= 1) {
      const target = active[0] ?? newRS ?? [...oldRSs].sort(byCreation).at(-1);
      if (target && specReplicas(target) !== desired(d)) this.#scaleAndRecord(target, desired(d));
      return;
    }
    const saturated =
      newRS &&
      specReplicas(newRS) === desired(d) &&
      newRS.metadata.annotations?.[DESIRED_REPLICAS] === String(desired(d)) &&
      (newRS.status?.availableReplicas ?? 0) === desired(d);
    if (saturated) {
      for (const rs of oldRSs.filter(isActive)) this.#scaleAndRecord(rs, 0);
      return;
    }
    if (!isRolling(d)) return;
    // Spread the change over the ReplicaSets in proportion to their sizes.
    const allowed = desired(d) > 0 ? desired(d) + maxSurge(d) : 0;
    const toAdd = allowed - specCount(active);
    const direction = toAdd > 0 ? 'up' : 'down';
    const sorted = [...active].sort(bySize(toAdd > 0));
    const sizes = new Map<ReplicaSet, number>();
    let added = 0;
    for (const rs of sorted) {
      const p = toAdd !== 0 ? proportion(rs, d, toAdd, added) : 0;
      sizes.set(rs, specReplicas(rs) + p);
      added += p;
    }
    sorted.forEach((rs, i) => {
      let size = sizes.get(rs) ?? specReplicas(rs);
      // Leftovers go to the largest.
      if (i === 0 && toAdd !== 0) size = Math.max(0, size + toAdd - added);
      this.#scale(rs, size, direction);
    });
  }

  // ------------------------------------------------------------------ rolling

  #rolloutRolling(): Outcome {
    const { newRS, oldRSs } = this.#replicaSets(true);
    if (!newRS) return undefined;
    if (this.#reconcileNewReplicaSet(newRS, oldRSs)) return this.#syncRolloutStatus(newRS);
    if (this.#reconcileOldReplicaSets(this.#fresh(newRS), oldRSs)) return this.#syncRolloutStatus(newRS);
    if (deploymentComplete(this.d, this.d.status ?? {})) this.#cleanup(oldRSs);
    return this.#syncRolloutStatus(newRS);
  }

  #reconcileNewReplicaSet(newRS: ReplicaSet, oldRSs: ReplicaSet[]): boolean {
    const want = desired(this.d);
    if (specReplicas(newRS) === want) return false;
    if (specReplicas(newRS) > want) return this.#scaleAndRecord(newRS, want).scaled;
    return this.#scaleAndRecord(newRS, newRSNewReplicas(this.d, [...oldRSs, newRS], newRS)).scaled;
  }

  /**
   * Scales old ReplicaSets down as far as availability allows: first their unhealthy pods
   * (which serve nothing), then healthy ones while more than the minimum are available.
   */
  #reconcileOldReplicaSets(newRS: ReplicaSet, oldRSs: ReplicaSet[]): boolean {
    const active = oldRSs.filter(isActive);
    if (specCount(active) === 0) return false;
    const minAvailable = desired(this.d) - maxUnavailable(this.d);
    const newUnavailable = specReplicas(newRS) - (newRS.status?.availableReplicas ?? 0);
    const maxScaledDown = specCount([...active, newRS]) - minAvailable - newUnavailable;
    if (maxScaledDown <= 0) return false;
    let cleaned = 0;
    const old = [...active].sort(byCreation);
    for (let i = 0; i < old.length && cleaned < maxScaledDown; i++) {
      const rs = old[i]!;
      const unhealthy = specReplicas(rs) - (rs.status?.availableReplicas ?? 0);
      if (specReplicas(rs) === 0 || unhealthy <= 0) continue;
      const n = Math.min(maxScaledDown - cleaned, unhealthy);
      old[i] = this.#scaleAndRecord(rs, specReplicas(rs) - n).rs;
      cleaned += n;
    }
    return cleaned + this.#scaleDownOldForRollingUpdate(newRS, old) > 0;
  }

  #scaleDownOldForRollingUpdate(newRS: ReplicaSet, old: ReplicaSet[]): number {
    const minAvailable = desired(this.d) - maxUnavailable(this.d);
    const available = availableCount([...old, newRS]);
    if (available <= minAvailable) return 0;
    const total = available - minAvailable;
    let scaled = 0;
    for (const rs of old) {
      if (scaled >= total) break;
      if (specReplicas(rs) === 0) continue;
      const n = Math.min(specReplicas(rs), total - scaled);
      this.#scaleAndRecord(rs, specReplicas(rs) - n);
      scaled += n;
    }
    return scaled;
  }

  // ----------------------------------------------------------------- recreate

  #rolloutRecreate(): Outcome {
    let { newRS, oldRSs } = this.#replicaSets(false);
    let scaledDown = false;
    for (const rs of oldRSs.filter(isActive)) scaledDown = this.#scaleAndRecord(rs, 0).scaled || scaledDown;
    if (scaledDown || this.#oldPodsRunning(newRS, oldRSs)) return this.#syncRolloutStatus(newRS);
    if (!newRS) ({ newRS, oldRSs } = this.#replicaSets(true));
    if (newRS) this.#scaleAndRecord(this.#fresh(newRS), desired(this.d));
    if (deploymentComplete(this.d, this.d.status ?? {})) this.#cleanup(oldRSs);
    return this.#syncRolloutStatus(newRS);
  }

  #oldPodsRunning(newRS: ReplicaSet | undefined, oldRSs: ReplicaSet[]): boolean {
    if (actualCount(oldRSs) > 0) return true;
    const old = new Set(oldRSs.map((rs) => rs.metadata.uid));
    return this.#s.pods.list(this.d.metadata.namespace).some((p) => {
      const uid = controllerOf(p)?.uid;
      return uid !== undefined && uid !== newRS?.metadata.uid && old.has(uid) && !isPodTerminal(p);
    });
  }

  // ------------------------------------------------------------------ history

  /** Deletes the oldest idle ReplicaSets beyond revisionHistoryLimit. */
  #cleanup(oldRSs: ReplicaSet[]): void {
    const limit = this.d.spec.revisionHistoryLimit;
    if (limit === undefined) return;
    const alive = oldRSs.map((rs) => this.#fresh(rs)).filter((rs) => !rs.metadata.deletionTimestamp);
    const excess = alive.length - limit;
    if (excess <= 0) return;
    const byRevision = alive.sort((a, b) => revisionOf(a) - revisionOf(b) || byCreation(a, b));
    for (const rs of byRevision.slice(0, excess)) {
      const busy =
        (rs.status?.replicas ?? 0) !== 0 ||
        specReplicas(rs) !== 0 ||
        (rs.metadata.generation ?? 0) > (rs.status?.observedGeneration ?? 0);
      if (busy) continue;
      try {
        this.#api.delete(this.#resource('replicasets'), rs.metadata.namespace, rs.metadata.name ?? '');
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 404)) throw err;
      }
    }
  }

  // ------------------------------------------------------------------- status

  #checkPausedConditions(): void {
    if (!hasProgressDeadline(this.d)) return;
    const c = progressingOf(this.d.status);
    if (c?.reason === Reason.timedOut) return;
    const pausedCondition = c?.reason === Reason.paused;
    if (this.d.spec.paused && !pausedCondition)
      this.#setProgressing(condition('Progressing', 'Unknown', Reason.paused, 'Deployment is paused'));
    else if (!this.d.spec.paused && pausedCondition)
      this.#setProgressing(condition('Progressing', 'Unknown', Reason.resumed, 'Deployment is resumed'));
  }

  #syncStatus(newRS: ReplicaSet | undefined): Outcome {
    const all = this.#owned();
    this.#writeStatus(
      calculateStatus(all, newRS && all.find((rs) => rs.metadata.uid === newRS.metadata.uid), this.d),
    );
    return undefined;
  }

  /** Status with the Progressing verdict: complete, progressing, or past its deadline. */
  #syncRolloutStatus(newRSBefore: ReplicaSet | undefined): Outcome {
    const d = this.d;
    const all = this.#owned();
    const newRS = newRSBefore && all.find((rs) => rs.metadata.uid === newRSBefore.metadata.uid);
    const status = calculateStatus(all, newRS, d);
    if (!hasProgressDeadline(d)) status.conditions = removeCondition(status.conditions, 'Progressing');
    const current = progressingOf(d.status);
    const complete = status.replicas === status.updatedReplicas && current?.reason === Reason.newRSAvailable;
    const subject = newRS ? `ReplicaSet "${newRS.metadata.name}"` : `Deployment "${d.metadata.name}"`;
    if (hasProgressDeadline(d) && !complete) {
      if (deploymentComplete(d, status)) {
        status.conditions = setCondition(
          status.conditions,
          condition('Progressing', 'True', Reason.newRSAvailable, `${subject} has successfully progressed.`),
        );
      } else if (deploymentProgressing(d, status)) {
        const c = condition('Progressing', 'True', Reason.rsUpdated, `${subject} is progressing.`);
        if (current?.status === 'True' && current.lastTransitionTime)
          c.lastTransitionTime = current.lastTransitionTime;
        status.conditions = setCondition(removeCondition(status.conditions, 'Progressing'), c);
      } else if (deploymentTimedOut(d, status)) {
        status.conditions = setCondition(
          status.conditions,
          condition('Progressing', 'False', Reason.timedOut, `${subject} has timed out progressing.`),
        );
      }
    }
    // A ReplicaSet that cannot make pods says so on the Deployment (the new one's failure first).
    const failure = [newRS, ...all]
      .flatMap((rs) => rs?.status?.conditions ?? [])
      .find((c) => c.type === 'ReplicaFailure');
    status.conditions = failure
      ? setCondition(status.conditions, {
          type: 'ReplicaFailure',
          status: failure.status,
          reason: failure.reason ?? '',
          message: failure.message ?? '',
          lastUpdateTime: failure.lastTransitionTime ?? timestamp(),
          lastTransitionTime: failure.lastTransitionTime ?? timestamp(),
        })
      : removeCondition(status.conditions, 'ReplicaFailure');
    if (deepEqual(d.status ?? {}, status)) return this.#requeueStuck(status);
    this.#writeStatus(status);
    return undefined;
  }

  /** A rollout that shows no progress is looked at again when its deadline passes. */
  #requeueStuck(status: DeploymentStatus): Outcome {
    const c = progressingOf(this.d.status);
    if (!hasProgressDeadline(this.d) || !c) return undefined;
    if (deploymentComplete(this.d, status) || c.reason === Reason.timedOut) return undefined;
    const from = c.lastUpdateTime ? Date.parse(c.lastUpdateTime) : Date.now();
    const after = from + (this.d.spec.progressDeadlineSeconds ?? 0) * 1000 - Date.now();
    return { requeueAfterMs: Math.max(after, 1000) };
  }
}
