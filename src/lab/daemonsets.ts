/**
 * The DaemonSet controller: one pod of each DaemonSet on every node it fits (node
 * selector, taints against tolerations), bound directly to its node as Kubernetes' own
 * controller does, and the DaemonSet's status. The lab's agents run this way, as the
 * `cilium` DaemonSet in kube-system.
 */
import { type Api, ApiError, type KObject, randomSuffix } from '../apiserver/index.js';
import { errorMessage } from '../errors.js';

interface Toleration {
  key?: string;
  operator?: string;
  value?: string;
  effect?: string;
}
interface Taint {
  key: string;
  value?: string;
  effect: string;
}

function tolerates(tolerations: Toleration[], t: Taint): boolean {
  return tolerations.some(
    (x) =>
      (x.effect === undefined || x.effect === '' || x.effect === t.effect) &&
      (x.operator === 'Exists'
        ? x.key === undefined || x.key === '' || x.key === t.key
        : x.key === t.key && (x.value ?? '') === (t.value ?? '')),
  );
}

function fits(template: KObject['spec'], node: KObject): boolean {
  const spec = (template ?? {}) as { nodeSelector?: Record<string, string>; tolerations?: Toleration[] };
  const labels = node.metadata.labels ?? {};
  if (Object.entries(spec.nodeSelector ?? {}).some(([k, v]) => labels[k] !== v)) return false;
  const taints = ((node.spec as { taints?: Taint[] } | undefined)?.taints ?? []).filter(
    (t) => t.effect === 'NoSchedule' || t.effect === 'NoExecute',
  );
  return taints.every((t) => tolerates(spec.tolerations ?? [], t));
}

const ready = (p: KObject) =>
  ((p.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []).some(
    (c) => c.type === 'Ready' && c.status === 'True',
  );

export function startDaemonSets(api: Api, log: (line: string) => void): { close(): void } {
  const ds = api.resource('apps', 'daemonsets')!;
  const pods = api.resource('', 'pods')!;
  const nodes = api.resource('', 'nodes')!;
  let timer: NodeJS.Timeout | undefined;
  const reconcileAll = () => {
    timer = undefined;
    for (const d of api.list(ds, undefined).items) {
      try {
        reconcile(d);
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 409))
          log(`daemonset ${d.metadata.namespace}/${d.metadata.name}: ${errorMessage(err)}`);
        schedule();
      }
    }
  };
  const schedule = () => {
    timer ??= setTimeout(reconcileAll, 20);
  };
  const reconcile = (d: KObject) => {
    if (d.metadata.deletionTimestamp) return;
    const ns = d.metadata.namespace!;
    const spec = d.spec as {
      template: { metadata?: { labels?: Record<string, string> }; spec: KObject['spec'] };
    };
    const owned = api
      .list(pods, ns)
      .items.filter((p) =>
        (p.metadata.ownerReferences ?? []).some((r) => r.uid === d.metadata.uid && r.controller),
      );
    const eligible = api.list(nodes, undefined).items.filter((n) => fits(spec.template.spec, n));
    const want = new Set(eligible.map((n) => n.metadata.name!));
    for (const p of owned) {
      const node = (p.spec as { nodeName?: string }).nodeName ?? '';
      if (!want.has(node) && !p.metadata.deletionTimestamp) api.delete(pods, ns, p.metadata.name!);
    }
    for (const n of eligible) {
      if (
        owned.some(
          (p) =>
            (p.spec as { nodeName?: string }).nodeName === n.metadata.name && !p.metadata.deletionTimestamp,
        )
      )
        continue;
      let name: string;
      do name = `${d.metadata.name}-${randomSuffix()}`;
      while (api.tryGet(pods, ns, name));
      api.create(pods, ns, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace: ns,
          labels: {
            ...spec.template.metadata?.labels,
            'controller-revision-hash': String(d.metadata.generation ?? 1),
          },
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'DaemonSet',
              name: d.metadata.name!,
              uid: d.metadata.uid!,
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
        spec: { ...(spec.template.spec as object), nodeName: n.metadata.name },
      });
    }
    const live = api
      .list(pods, ns)
      .items.filter(
        (p) =>
          (p.metadata.ownerReferences ?? []).some((r) => r.uid === d.metadata.uid) &&
          !p.metadata.deletionTimestamp,
      );
    const status = {
      desiredNumberScheduled: eligible.length,
      currentNumberScheduled: live.length,
      updatedNumberScheduled: live.length,
      numberReady: live.filter(ready).length,
      numberAvailable: live.filter(ready).length,
      numberUnavailable: Math.max(0, eligible.length - live.filter(ready).length),
      numberMisscheduled: 0,
      observedGeneration: d.metadata.generation ?? 1,
    };
    api.patch(ds, ns, d.metadata.name!, 'merge', { status }, { subresource: 'status' });
  };
  const stops = [
    api.watch(ds, undefined, {}, schedule),
    api.watch(nodes, undefined, {}, schedule),
    api.watch(pods, undefined, {}, (ev) => {
      if ((ev.object as KObject).metadata.ownerReferences?.some((r) => r.kind === 'DaemonSet')) schedule();
    }),
  ];
  schedule();
  return {
    close: () => {
      for (const s of stops) s();
      clearTimeout(timer);
    },
  };
}
