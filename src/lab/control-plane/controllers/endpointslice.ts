/**
 * The EndpointSlice controller, after kube-controller-manager's reconciler: for each
 * Service with a selector, the selected pods that have an IP become endpoints, grouped by
 * the ports they resolve (a named targetPort is looked up in each pod, and a pod without
 * it is left out of that port), at most 100 to a slice. Existing slices are kept and
 * patched in place where they can be, so only the difference is written.
 */
import { ApiError } from '../../../apiserver/index.js';
import { Controller, keyOf, type Outcome, splitKey } from './framework.js';
import {
  canonical,
  controllerRef,
  type Endpoint,
  type EndpointPort,
  type EndpointSlice,
  isPodReady,
  isPodTerminal,
  type Labels,
  type Pod,
  type Service,
  type ServicePort,
} from './objects.js';
import { type ControllerContext, resourceOf } from './ownership.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'endpointslice-controller.k8s.io';
const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const MAX_ENDPOINTS_PER_SLICE = 100;

/** The pod port a Service port reaches, or undefined when the pod has no such named port (podutil.FindPort). */
export function findPort(pod: Pod, sp: ServicePort): number | undefined {
  const target = sp.targetPort ?? sp.port;
  if (typeof target === 'number') return target;
  const protocol = sp.protocol ?? 'TCP';
  for (const c of pod.spec.containers ?? [])
    for (const p of c.ports ?? [])
      if (p.name === target && (p.protocol ?? 'TCP') === protocol) return p.containerPort;
  return undefined;
}

export function endpointPorts(svc: Service, pod: Pod): EndpointPort[] {
  const out: EndpointPort[] = [];
  for (const sp of svc.spec?.ports ?? []) {
    const port = findPort(pod, sp);
    if (port === undefined) continue;
    out.push({
      name: sp.name ?? '',
      port,
      protocol: sp.protocol ?? 'TCP',
      ...(sp.appProtocol ? { appProtocol: sp.appProtocol } : {}),
    });
  }
  return out;
}

/** Whether a selected pod is an endpoint at all: it has an address and has not finished. */
const inEndpoints = (pod: Pod) => Boolean(pod.status?.podIP) && !isPodTerminal(pod);

export function podToEndpoint(pod: Pod, svc: Service): Endpoint {
  const publishNotReady = svc.spec?.publishNotReadyAddresses === true;
  const serving = publishNotReady || isPodReady(pod);
  const terminating = Boolean(pod.metadata.deletionTimestamp);
  const ep: Endpoint = {
    addresses: [pod.status?.podIP ?? ''],
    // A terminating pod is never ready (unless the Service publishes not-ready addresses).
    conditions: { ready: publishNotReady || (serving && !terminating), serving, terminating },
  };
  if (pod.spec.hostname && pod.spec.subdomain === svc.metadata.name) ep.hostname = pod.spec.hostname;
  if (pod.spec.nodeName) ep.nodeName = pod.spec.nodeName;
  ep.targetRef = {
    kind: 'Pod',
    namespace: pod.metadata.namespace ?? '',
    name: pod.metadata.name ?? '',
    uid: pod.metadata.uid ?? '',
  };
  return ep;
}

/** An endpoint's identity across updates: its addresses, hostname and pod (endpointsliceutil's hash). */
const endpointKey = (ep: Endpoint) =>
  canonical([
    [...ep.addresses].sort(),
    ep.hostname ?? '',
    ep.targetRef?.namespace ?? '',
    ep.targetRef?.name ?? '',
  ]);

const portsKey = (ports: readonly EndpointPort[] | null | undefined) => canonical(ports ?? []);

/** The slice labels: the Service's, plus the controller's own. */
export function sliceLabels(svc: Service): Labels {
  const labels: Labels = { ...svc.metadata.labels };
  delete labels[MANAGED_BY_LABEL];
  delete labels[SERVICE_NAME_LABEL];
  if (svc.spec?.clusterIP === 'None') labels[HEADLESS_LABEL] = '';
  labels[SERVICE_NAME_LABEL] = svc.metadata.name ?? '';
  labels[MANAGED_BY_LABEL] = MANAGED_BY;
  return labels;
}

/** The writes that take existing slices to the desired endpoints. */
export interface SlicePlan {
  create: EndpointSlice[];
  update: EndpointSlice[];
  delete: EndpointSlice[];
}

function newSlice(svc: Service, ports: EndpointPort[]): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      generateName: `${svc.metadata.name}-`,
      namespace: svc.metadata.namespace,
      labels: sliceLabels(svc),
      ownerReferences: [controllerRef(svc)],
    },
    addressType: 'IPv4',
    endpoints: [],
    ports: structuredClone(ports),
  };
}

/**
 * Plans the writes for one Service (the reconciler's reconcileByAddressType): per port
 * set, keep endpoints in the slice they are in, update those that changed, drop those no
 * longer wanted, fill slices being written anyway before others, and create slices only
 * for what does not fit. A Service with no endpoints keeps one empty placeholder slice.
 */
export function planSlices(
  svc: Service,
  pods: readonly Pod[],
  existing: readonly EndpointSlice[],
): SlicePlan {
  const plan: SlicePlan = { create: [], update: [], delete: [] };
  const labels = sliceLabels(svc);
  const uid = svc.metadata.uid;
  const existingByPorts = new Map<string, EndpointSlice[]>();
  for (const s of existing) {
    const owned = s.metadata.ownerReferences?.some((r) => r.uid === uid);
    if (!owned || s.addressType !== 'IPv4') plan.delete.push(s);
    else existingByPorts.set(portsKey(s.ports), [...(existingByPorts.get(portsKey(s.ports)) ?? []), s]);
  }

  const desired = new Map<string, { ports: EndpointPort[]; endpoints: Map<string, Endpoint> }>();
  for (const pod of [...pods].sort((a, b) => keyOf(a).localeCompare(keyOf(b)))) {
    if (!inEndpoints(pod)) continue;
    const ports = endpointPorts(svc, pod);
    const k = portsKey(ports);
    let group = desired.get(k);
    if (!group) {
      group = { ports, endpoints: new Map() };
      desired.set(k, group);
    }
    const ep = podToEndpoint(pod, svc);
    group.endpoints.set(endpointKey(ep), ep);
  }

  for (const [k, { ports, endpoints: want }] of desired) {
    const changed: EndpointSlice[] = [];
    const unchanged: EndpointSlice[] = [];
    for (const s of existingByPorts.get(k) ?? []) {
      const kept: Endpoint[] = [];
      let updated = false;
      for (const ep of s.endpoints ?? []) {
        const d = want.get(endpointKey(ep));
        if (!d) continue;
        kept.push(d);
        if (canonical(d) !== canonical(ep)) updated = true;
        want.delete(endpointKey(ep));
      }
      const relabel = canonical(s.metadata.labels ?? {}) !== canonical(labels);
      if (updated || kept.length !== (s.endpoints ?? []).length) {
        if (kept.length === 0) plan.delete.push(s);
        else changed.push({ ...s, metadata: { ...s.metadata, labels }, endpoints: kept });
      } else if (relabel) changed.push({ ...s, metadata: { ...s.metadata, labels }, endpoints: kept });
      else unchanged.push(s);
    }
    const rest = [...want.values()];
    // Fill the slices being written anyway, fullest first.
    for (const s of [...changed].sort((a, b) => (b.endpoints?.length ?? 0) - (a.endpoints?.length ?? 0))) {
      const endpoints = s.endpoints ?? [];
      while (rest.length > 0 && endpoints.length < MAX_ENDPOINTS_PER_SLICE) endpoints.push(rest.shift()!);
      s.endpoints = endpoints;
    }
    while (rest.length > 0) {
      // What is left may fit in one untouched slice: the one it fills most closely.
      let fill: EndpointSlice | undefined;
      if (rest.length < MAX_ENDPOINTS_PER_SLICE) {
        let closest = MAX_ENDPOINTS_PER_SLICE;
        for (const s of unchanged) {
          const room = MAX_ENDPOINTS_PER_SLICE - (rest.length + (s.endpoints?.length ?? 0));
          if (room >= 0 && room < closest) {
            closest = room;
            fill = s;
          }
        }
      }
      const target = fill ? { ...fill, endpoints: [...(fill.endpoints ?? [])] } : newSlice(svc, ports);
      const endpoints = target.endpoints ?? [];
      while (rest.length > 0 && endpoints.length < MAX_ENDPOINTS_PER_SLICE) endpoints.push(rest.shift()!);
      target.endpoints = endpoints;
      if (fill) {
        unchanged.splice(unchanged.indexOf(fill), 1);
        changed.push(target);
      } else plan.create.push(target);
    }
    plan.update.push(...changed);
  }
  for (const [k, slices] of existingByPorts) if (!desired.has(k)) plan.delete.push(...slices);

  // No endpoints at all: one empty slice stays, so the Service visibly has none.
  if (plan.delete.length === existing.length && plan.create.length === 0) {
    const only = plan.delete[0];
    const isPlaceholder =
      plan.delete.length === 1 &&
      only !== undefined &&
      only.addressType === 'IPv4' &&
      (only.endpoints ?? []).length === 0 &&
      (only.ports ?? []).length === 0 &&
      only.metadata.ownerReferences?.some((r) => r.uid === uid);
    if (isPlaceholder) plan.delete = [];
    else plan.create.push(newSlice(svc, []));
  }

  // Reuse slices about to be deleted for slices about to be created: one update, not two writes.
  while (plan.create.length > 0) {
    const i = plan.delete.findIndex(
      (s) => s.metadata.ownerReferences?.some((r) => r.uid === uid) && s.addressType === 'IPv4',
    );
    if (i < 0) break;
    const [old] = plan.delete.splice(i, 1);
    const fresh = plan.create.pop()!;
    if (!old) break;
    plan.update.push({ ...fresh, metadata: { ...old.metadata, labels: fresh.metadata.labels } });
  }
  return plan;
}

export function endpointSliceController(ctx: ControllerContext): Controller {
  const { api } = ctx;
  const services = ctx.informers.for<Service>('', 'services');
  const pods = ctx.informers.for<Pod>('', 'pods');
  const slices = ctx.informers.for<EndpointSlice>('discovery.k8s.io', 'endpointslices');
  const sliceType = resourceOf(api, 'discovery.k8s.io', 'endpointslices');

  const controller = new Controller({
    name: 'endpointslice',
    reconcile: sync,
    keys: () => services.list().map(keyOf),
    onError: ctx.onError,
  });

  const selector = (svc: Service): Labels | undefined => {
    const sel = svc.spec?.selector;
    return sel && Object.keys(sel).length > 0 ? sel : undefined;
  };
  const selectsPod = (svc: Service, pod: Pod) => {
    const sel = selector(svc);
    return sel !== undefined && Object.entries(sel).every(([k, v]) => pod.metadata.labels?.[k] === v);
  };

  services.on(({ object }) => controller.enqueue(keyOf(object)));
  pods.on(({ object, old }) => {
    for (const svc of services.list(object.metadata.namespace))
      if (selectsPod(svc, object) || (old && selectsPod(svc, old))) controller.enqueue(keyOf(svc));
  });
  // Someone else changing or deleting a slice of ours is repaired.
  slices.on(({ object }) => {
    const name = object.metadata.labels?.[SERVICE_NAME_LABEL];
    if (name && object.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY)
      controller.enqueue(`${object.metadata.namespace}/${name}`);
  });

  function sync(key: string): Outcome {
    const { namespace, name } = splitKey(key);
    const svc = services.get(namespace, name);
    // A deleted Service's slices go with it (owner references); one without a selector is not ours.
    if (!svc || svc.spec?.type === 'ExternalName' || !selector(svc)) return undefined;
    const selected = pods.list(namespace).filter((p) => selectsPod(svc, p));
    const existing = slices
      .list(namespace)
      .filter(
        (s) =>
          s.metadata.labels?.[SERVICE_NAME_LABEL] === name &&
          s.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY,
      );
    const plan = planSlices(svc, selected, existing);
    for (const s of plan.delete) {
      try {
        api.delete(sliceType, namespace, s.metadata.name ?? '');
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 404)) throw err;
      }
    }
    for (const s of plan.update) api.update(sliceType, namespace, s.metadata.name ?? '', s);
    for (const s of plan.create) api.create(sliceType, namespace, s);
    return undefined;
  }

  return controller;
}
