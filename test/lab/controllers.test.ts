/**
 * The lab's controller manager against an in-process API: nodes are objects, and a fake
 * kubelet marks bound pods Running and Ready with an address and finishes deletions.
 * Deployments roll out as Kubernetes' do, pods land where kube-scheduler would put them,
 * Services get EndpointSlices, and a converged cluster is left alone.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { Api, type KObject, type ResourceType, Store } from '../../src/apiserver/index.js';
import {
  type ControllerManager,
  type Deployment,
  deletionOrder,
  type EndpointSlice,
  type Pod,
  podTemplateHash,
  type ReplicaSet,
  startControllers,
} from '../../src/lab/control-plane/controllers/index.js';

const SAFE = '[bcdfghjklmnpqrstvwxz2456789]';
const WORKERS = ['lab-worker', 'lab-worker2'];

function resource(api: Api, group: string, plural: string): ResourceType {
  const r = api.resource(group, plural);
  assert.ok(r, `${group}/${plural}`);
  return r;
}

async function until<T>(what: string, fn: () => T | undefined | false, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What a kubelet does that the controllers depend on: bound pods run and get ready; deletions finish. */
class FakeKubelet {
  /** Pods (by name) the kubelet reports not ready. */
  readonly notReady = new Set<string>();
  /** While set, pods being deleted stay Terminating. */
  holdDeletions = false;
  readonly #api: Api;
  readonly #pods: ResourceType;
  readonly #pending = new Set<string>();
  readonly #ips = new Map<string, number>();
  readonly #stop: () => void;
  #timer: NodeJS.Timeout | undefined;

  constructor(api: Api) {
    this.#api = api;
    this.#pods = resource(api, '', 'pods');
    this.#stop = api.watch(this.#pods, undefined, {}, (ev) => {
      const o = ev.object as KObject;
      if (ev.type !== 'DELETED') this.poke(`${o.metadata.namespace}/${o.metadata.name}`);
    });
  }

  poke(key: string): void {
    this.#pending.add(key);
    // Asynchronous, like a real kubelet: controllers see pods pending before they run.
    this.#timer ??= setTimeout(() => this.#run(), 2);
  }

  pokeAll(): void {
    for (const p of this.#api.list(this.#pods, undefined).items)
      this.poke(`${p.metadata.namespace}/${p.metadata.name}`);
  }

  close(): void {
    this.#stop();
    clearTimeout(this.#timer);
  }

  #run(): void {
    this.#timer = undefined;
    const keys = [...this.#pending];
    this.#pending.clear();
    for (const key of keys) {
      const [ns, name] = key.split('/') as [string, string];
      const pod = this.#api.tryGet(this.#pods, ns, name) as Pod | undefined;
      if (!pod?.spec.nodeName) continue;
      if (pod.metadata.deletionTimestamp) {
        if (!this.holdDeletions) this.#api.delete(this.#pods, ns, name, { gracePeriodSeconds: 0 });
        continue;
      }
      const ready = !this.notReady.has(name);
      const readyNow = pod.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
      if (pod.status?.podIP && ready === readyNow) continue;
      const node = pod.spec.nodeName;
      const ip = pod.status?.podIP ?? this.#allocate(node);
      const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      const flag = ready ? 'True' : 'False';
      const keep = (pod.status?.conditions ?? []).filter((c) => c.type === 'PodScheduled');
      this.#api.patch(
        this.#pods,
        ns,
        name,
        'merge',
        {
          status: {
            phase: 'Running',
            podIP: ip,
            podIPs: [{ ip }],
            hostIP: '10.240.0.2',
            conditions: [
              ...keep,
              { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: now },
              { type: 'ContainersReady', status: flag, lastProbeTime: null, lastTransitionTime: now },
              { type: 'Ready', status: flag, lastProbeTime: null, lastTransitionTime: now },
            ],
            containerStatuses: pod.spec.containers.map((c) => ({
              name: c.name,
              ready,
              restartCount: 0,
              started: true,
              state: { running: { startedAt: now } },
              image: c.image,
              imageID: '',
            })),
          },
        },
        { subresource: 'status' },
      );
    }
  }

  #allocate(node: string): string {
    const n = (this.#ips.get(node) ?? 1) + 1;
    this.#ips.set(node, n);
    return `10.244.${node === 'lab-worker' ? 1 : node === 'lab-worker2' ? 2 : 0}.${n}`;
  }
}

interface Lab {
  api: Api;
  r: Record<
    'pods' | 'nodes' | 'services' | 'events' | 'deployments' | 'replicasets' | 'slices',
    ResourceType
  >;
  controllers: ControllerManager;
  kubelet: FakeKubelet;
  errors: string[];
  close(): void;
}

function node(name: string, controlPlane: boolean): KObject {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        ...(controlPlane ? { 'node-role.kubernetes.io/control-plane': '' } : {}),
      },
    },
    spec: controlPlane
      ? { taints: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }] }
      : {},
    status: {
      conditions: [
        { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' },
      ],
      addresses: [{ type: 'InternalIP', address: '10.240.0.1' }],
    },
    lastHeartbeatTime: now,
  };
}

function startLab(): Lab {
  const api = new Api({ store: new Store() });
  const r = {
    pods: resource(api, '', 'pods'),
    nodes: resource(api, '', 'nodes'),
    services: resource(api, '', 'services'),
    events: resource(api, '', 'events'),
    deployments: resource(api, 'apps', 'deployments'),
    replicasets: resource(api, 'apps', 'replicasets'),
    slices: resource(api, 'discovery.k8s.io', 'endpointslices'),
  };
  const namespaces = resource(api, '', 'namespaces');
  api.create(namespaces, undefined, { metadata: { name: 'default' } });
  api.create(r.nodes, undefined, node('lab-control-plane', true));
  for (const w of WORKERS) api.create(r.nodes, undefined, node(w, false));
  const errors: string[] = [];
  const controllers = startControllers(api, {
    resyncSeconds: 0,
    onError: (c, key, err) => errors.push(`${c} ${key}: ${(err as Error).stack}`),
  });
  const kubelet = new FakeKubelet(api);
  return {
    api,
    r,
    controllers,
    kubelet,
    errors,
    close() {
      controllers.close();
      kubelet.close();
    },
  };
}

function deployment(name: string, replicas: number, extra: Record<string, unknown> = {}): KObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels: { app: name } },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          containers: [{ name: 'web', image: 'nginx:1.25', ports: [{ name: 'http', containerPort: 8080 }] }],
        },
      },
      ...extra,
    },
  };
}

const get = <T extends KObject>(lab: Lab, r: ResourceType, name: string) =>
  lab.api.tryGet(r, 'default', name) as T | undefined;
const list = <T extends KObject>(lab: Lab, r: ResourceType, labelSelector?: string) =>
  lab.api.list(r, 'default', labelSelector ? { labelSelector } : {}).items as T[];
const ready = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
const live = (pods: Pod[]) => pods.filter((p) => !p.metadata.deletionTimestamp);
const events = (lab: Lab) =>
  list<
    KObject & { reason: string; message: string; count: number; type: string; source: { component: string } }
  >(lab, lab.r.events);

/** The Deployment's rollout is complete: every replica updated and available, and observed. */
function rolledOut(lab: Lab, name: string): Deployment | undefined {
  const d = get<Deployment>(lab, lab.r.deployments, name);
  const s = d?.status;
  const n = d?.spec.replicas ?? 1;
  if (!d || !s || s.observedGeneration !== d.metadata.generation) return undefined;
  if ((s.updatedReplicas ?? 0) !== n || (s.availableReplicas ?? 0) !== n || (s.replicas ?? 0) !== n)
    return undefined;
  if (s.conditions?.find((c) => c.type === 'Progressing')?.reason !== 'NewReplicaSetAvailable')
    return undefined;
  if (live(list<Pod>(lab, lab.r.pods, `app=${name},pod-template-hash`)).length !== n) return undefined;
  return d;
}

let lab: Lab;
afterEach(() => {
  lab.close();
  assert.deepEqual(lab.errors, []);
});

describe('deployment controller', () => {
  test("a Deployment of 3 gets a ReplicaSet and 3 pods named like Kubernetes', on workers", async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('web', 3));
    const d = await until('rollout', () => rolledOut(lab, 'web'));

    const [rs, ...more] = list<ReplicaSet>(lab, lab.r.replicasets);
    assert.ok(rs);
    assert.equal(more.length, 0);
    const hash = rs.metadata.labels?.['pod-template-hash'] ?? '';
    assert.match(hash, new RegExp(`^${SAFE}{6,10}$`));
    assert.equal(rs.metadata.name, `web-${hash}`);
    assert.equal(hash, podTemplateHash(d.spec.template));
    assert.equal(rs.spec.template.metadata?.labels?.['pod-template-hash'], hash);
    assert.equal(rs.spec.selector.matchLabels?.['pod-template-hash'], hash);
    assert.deepEqual(rs.metadata.ownerReferences, [
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        name: 'web',
        uid: d.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    assert.equal(rs.metadata.annotations?.['deployment.kubernetes.io/revision'], '1');
    assert.equal(rs.metadata.annotations?.['deployment.kubernetes.io/desired-replicas'], '3');
    assert.equal(rs.metadata.annotations?.['deployment.kubernetes.io/max-replicas'], '4');
    assert.equal(d.metadata.annotations?.['deployment.kubernetes.io/revision'], '1');

    const pods = list<Pod>(lab, lab.r.pods);
    assert.equal(pods.length, 3);
    for (const p of pods) {
      assert.match(p.metadata.name ?? '', new RegExp(`^web-${hash}-${SAFE}{5}$`));
      assert.equal(p.metadata.labels?.['pod-template-hash'], hash);
      assert.equal(p.metadata.ownerReferences?.[0]?.uid, rs.metadata.uid);
      assert.ok(WORKERS.includes(p.spec.nodeName ?? ''), `${p.metadata.name} on ${p.spec.nodeName}`);
      assert.equal(p.status?.conditions?.find((c) => c.type === 'PodScheduled')?.status, 'True');
    }
    // Fewest pods first: the two workers share them 2 and 1.
    const perNode = WORKERS.map((w) => pods.filter((p) => p.spec.nodeName === w).length).sort();
    assert.deepEqual(perNode, [1, 2]);

    await until(
      'ReplicaSet status',
      () =>
        rs &&
        get<ReplicaSet>(lab, lab.r.replicasets, rs.metadata.name ?? '')?.status?.availableReplicas === 3,
    );
    const rsStatus = get<ReplicaSet>(lab, lab.r.replicasets, rs.metadata.name ?? '')?.status;
    assert.deepEqual(rsStatus, {
      replicas: 3,
      fullyLabeledReplicas: 3,
      readyReplicas: 3,
      availableReplicas: 3,
      observedGeneration: 1,
    });
    const s = d.status;
    assert.equal(s?.readyReplicas, 3);
    assert.equal(s?.unavailableReplicas, undefined);
    assert.deepEqual(
      s?.conditions?.map((c) => [c.type, c.status, c.reason, c.message]),
      [
        ['Available', 'True', 'MinimumReplicasAvailable', 'Deployment has minimum availability.'],
        [
          'Progressing',
          'True',
          'NewReplicaSetAvailable',
          `ReplicaSet "web-${hash}" has successfully progressed.`,
        ],
      ],
    );

    const evs = events(lab);
    const scaled = evs.find((e) => e.reason === 'ScalingReplicaSet');
    assert.equal(scaled?.message, `Scaled up replica set web-${hash} from 0 to 3`);
    assert.equal(scaled?.source.component, 'deployment-controller');
    assert.equal(scaled?.type, 'Normal');
    const created = evs.filter((e) => e.reason === 'SuccessfulCreate').map((e) => e.message);
    assert.deepEqual(created.sort(), pods.map((p) => `Created pod: ${p.metadata.name}`).sort());
    const scheduled = evs.filter((e) => e.reason === 'Scheduled');
    assert.deepEqual(
      scheduled.map((e) => e.message).sort(),
      pods.map((p) => `Successfully assigned default/${p.metadata.name} to ${p.spec.nodeName}`).sort(),
    );
    assert.ok(scheduled.every((e) => e.source.component === 'default-scheduler'));
  });

  test('scales down to 1 and back up to 3 with the same ReplicaSet', async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('web', 3));
    await until('rollout', () => rolledOut(lab, 'web'));
    const rsName = list<ReplicaSet>(lab, lab.r.replicasets)[0]?.metadata.name;
    const scale = (replicas: number) =>
      lab.api.patch(lab.r.deployments, 'default', 'web', 'merge', { spec: { replicas } });

    for (let round = 1; round <= 2; round++) {
      scale(1);
      await until('scale to 1', () => rolledOut(lab, 'web') && list(lab, lab.r.pods).length === 1);
      scale(3);
      await until('scale to 3', () => rolledOut(lab, 'web') && list(lab, lab.r.pods).length === 3);
    }
    const rss = list<ReplicaSet>(lab, lab.r.replicasets);
    assert.deepEqual(
      rss.map((rs) => [rs.metadata.name, rs.spec.replicas]),
      [[rsName, 3]],
    );
    const evs = events(lab);
    const down = evs.find((e) => e.message === `Scaled down replica set ${rsName} from 3 to 1`);
    const up = evs.find((e) => e.message === `Scaled up replica set ${rsName} from 1 to 3`);
    // The same event recurring is counted, not repeated.
    assert.equal(down?.count, 2);
    assert.equal(up?.count, 2);
    assert.equal(evs.filter((e) => e.reason === 'SuccessfulDelete').length, 4);
  });

  for (const rollingUpdate of [
    { maxSurge: 1, maxUnavailable: '25%' },
    { maxSurge: '50%', maxUnavailable: 0 },
  ]) {
    test(`a template change rolls pods within maxSurge ${rollingUpdate.maxSurge} and maxUnavailable ${rollingUpdate.maxUnavailable}`, async () => {
      lab = startLab();
      const replicas = 4;
      const surge = rollingUpdate.maxSurge === 1 ? 1 : 2;
      const unavailable = rollingUpdate.maxUnavailable === 0 ? 0 : 1;
      lab.api.create(
        lab.r.deployments,
        'default',
        deployment('web', replicas, { strategy: { type: 'RollingUpdate', rollingUpdate } }),
      );
      await until('first rollout', () => rolledOut(lab, 'web'));
      const [oldRS] = list<ReplicaSet>(lab, lab.r.replicasets);

      let most = 0;
      let fewestReady = Number.POSITIVE_INFINITY;
      const stop = lab.api.watch(lab.r.pods, 'default', {}, () => {
        const pods = live(list<Pod>(lab, lab.r.pods, 'app=web'));
        most = Math.max(most, pods.length);
        fewestReady = Math.min(fewestReady, pods.filter(ready).length);
      });
      lab.api.patch(lab.r.deployments, 'default', 'web', 'strategic', {
        spec: { template: { spec: { containers: [{ name: 'web', image: 'nginx:1.26' }] } } },
      });
      const d = await until('second rollout', () => {
        const d = rolledOut(lab, 'web');
        const old = get<ReplicaSet>(lab, lab.r.replicasets, oldRS?.metadata.name ?? '');
        return d && old?.spec.replicas === 0 && (old.status?.replicas ?? 0) === 0 ? d : undefined;
      });
      stop();

      assert.ok(most <= replicas + surge, `${most} pods at once`);
      assert.ok(fewestReady >= replicas - unavailable, `only ${fewestReady} ready at once`);
      // The bounds were used: pods surged or went unavailable.
      assert.ok(most > replicas || fewestReady < replicas);

      const rss = list<ReplicaSet>(lab, lab.r.replicasets);
      assert.equal(rss.length, 2);
      const newRS = rss.find((rs) => rs.metadata.uid !== oldRS?.metadata.uid);
      assert.equal(newRS?.metadata.annotations?.['deployment.kubernetes.io/revision'], '2');
      assert.equal(d.metadata.annotations?.['deployment.kubernetes.io/revision'], '2');
      assert.equal(newRS?.metadata.name, `web-${podTemplateHash(d.spec.template)}`);
      // The old ReplicaSet's last pod may still be terminating (graceful deletion) when the
      // rollout reads as done: wait for it to go.
      const pods = await until('old pods gone', () => {
        const all = list<Pod>(lab, lab.r.pods);
        return all.length === replicas ? all : undefined;
      });
      assert.ok(
        pods.every(
          (p) => p.metadata.labels?.['pod-template-hash'] === newRS?.metadata.labels?.['pod-template-hash'],
        ),
      );
      assert.ok(pods.every((p) => p.spec.containers[0]?.image === 'nginx:1.26'));
      assert.ok(
        events(lab).some((e) => e.message.startsWith(`Scaled down replica set ${oldRS?.metadata.name} from`)),
      );
    });
  }

  test('old ReplicaSets beyond revisionHistoryLimit are deleted; rolling back reuses one', async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('web', 2, { revisionHistoryLimit: 1 }));
    await until('rollout', () => rolledOut(lab, 'web'));
    const first = list<ReplicaSet>(lab, lab.r.replicasets)[0]?.metadata.name;
    const image = (tag: string) =>
      lab.api.patch(lab.r.deployments, 'default', 'web', 'strategic', {
        spec: { template: { spec: { containers: [{ name: 'web', image: `nginx:${tag}` }] } } },
      });
    for (const tag of ['1.26', '1.27']) {
      image(tag);
      await until(`rollout to ${tag}`, () => {
        const d = rolledOut(lab, 'web');
        return d && list<ReplicaSet>(lab, lab.r.replicasets).length === 2 && d;
      });
    }
    assert.equal(get(lab, lab.r.replicasets, first ?? ''), undefined, 'revision 1 is gone');
    image('1.26');
    await until('rollback', () => {
      const d = rolledOut(lab, 'web');
      return d?.metadata.annotations?.['deployment.kubernetes.io/revision'] === '4' && d;
    });
    const rss = list<ReplicaSet>(lab, lab.r.replicasets);
    assert.equal(rss.length, 2);
    const active = rss.find((rs) => rs.spec.replicas === 2);
    assert.equal(active?.metadata.annotations?.['deployment.kubernetes.io/revision'], '4');
    assert.equal(active?.metadata.annotations?.['deployment.kubernetes.io/revision-history'], '2');
  });

  test('deleting the Deployment removes its ReplicaSet and pods', async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('web', 3));
    await until('rollout', () => rolledOut(lab, 'web'));
    lab.api.delete(lab.r.deployments, 'default', 'web');
    assert.deepEqual(list(lab, lab.r.replicasets), []);
    await until('pods gone', () => list(lab, lab.r.pods).length === 0);
    await lab.controllers.settled();
    assert.deepEqual(list(lab, lab.r.pods), [], 'no pod is recreated');
  });
});

describe('replicaset controller', () => {
  test('scale down removes unscheduled, then not ready, then newest pods first', () => {
    const pod = (name: string, o: { node?: string; ready?: boolean; created: string }): Pod => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, creationTimestamp: o.created },
      spec: { containers: [], ...(o.node ? { nodeName: o.node } : {}) },
      status: {
        phase: o.node ? 'Running' : 'Pending',
        conditions: [
          { type: 'Ready', status: o.ready ? 'True' : 'False', lastTransitionTime: '2024-01-01T00:00:00Z' },
        ],
      },
    });
    const pods = [
      pod('old-ready', { node: 'w1', ready: true, created: '2024-01-01T00:00:00Z' }),
      pod('new-ready', { node: 'w1', ready: true, created: '2024-01-01T00:05:00Z' }),
      pod('not-ready', { node: 'w1', ready: false, created: '2024-01-01T00:00:00Z' }),
      pod('unscheduled', { created: '2024-01-01T00:00:00Z' }),
    ];
    const order = [...pods].sort(deletionOrder(new Map())).map((p) => p.metadata.name);
    assert.deepEqual(order, ['unscheduled', 'not-ready', 'new-ready', 'old-ready']);
  });

  test('a ReplicaSet replaces a deleted pod and adopts a matching orphan', async () => {
    lab = startLab();
    lab.api.create(lab.r.replicasets, 'default', {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: { name: 'cache' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'cache' } },
        template: {
          metadata: { labels: { app: 'cache' } },
          spec: { containers: [{ name: 'c', image: 'redis:7' }] },
        },
      },
    });
    const twoReady = () => {
      const pods = live(list<Pod>(lab, lab.r.pods, 'app=cache'));
      return pods.length === 2 && pods.every(ready) && pods;
    };
    const [victim] = await until('2 pods', twoReady);
    lab.api.delete(lab.r.pods, 'default', victim?.metadata.name ?? '');
    const after = await until('replacement', () => {
      const pods = twoReady();
      return pods && !pods.some((p) => p.metadata.name === victim?.metadata.name) && pods;
    });
    assert.equal(after.length, 2);
    lab.api.patch(lab.r.replicasets, 'default', 'cache', 'merge', { spec: { replicas: 3 } });
    await until('3 pods', () => live(list<Pod>(lab, lab.r.pods, 'app=cache')).length === 3);
    lab.api.create(lab.r.pods, 'default', {
      metadata: { name: 'stray', labels: { app: 'cache' } },
      spec: { containers: [{ name: 'c', image: 'redis:7' }] },
    });
    // The orphan is adopted, and as the only unscheduled pod it is the one deleted.
    await until('back to 3', () => {
      const pods = live(list<Pod>(lab, lab.r.pods, 'app=cache'));
      return pods.length === 3 && !pods.some((p) => p.metadata.name === 'stray');
    });
  });
});

describe('scheduler', () => {
  test('a pod that fits nowhere stays Pending as Unschedulable until a node fits', async () => {
    lab = startLab();
    lab.api.create(lab.r.pods, 'default', {
      metadata: { name: 'picky' },
      spec: { nodeSelector: { disktype: 'ssd' }, containers: [{ name: 'c', image: 'busybox' }] },
    });
    const message =
      "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    const c = await until('Unschedulable', () =>
      get<Pod>(lab, lab.r.pods, 'picky')?.status?.conditions?.find((c) => c.type === 'PodScheduled'),
    );
    assert.deepEqual([c.status, c.reason, c.message], ['False', 'Unschedulable', message]);
    const pod = get<Pod>(lab, lab.r.pods, 'picky');
    assert.equal(pod?.spec.nodeName, undefined);
    assert.equal(pod?.status?.phase, 'Pending');
    const failed = events(lab).filter((e) => e.reason === 'FailedScheduling');
    assert.deepEqual(
      failed.map((e) => [e.type, e.message]),
      [['Warning', message]],
    );

    lab.api.patch(lab.r.nodes, undefined, 'lab-worker2', 'merge', {
      metadata: { labels: { disktype: 'ssd' } },
    });
    const bound = await until('bound', () => get<Pod>(lab, lab.r.pods, 'picky')?.spec.nodeName);
    assert.equal(bound, 'lab-worker2');
  });

  test('a pod tolerating the control-plane taint may land there; a not-ready worker takes nothing', async () => {
    lab = startLab();
    lab.api.patch(
      lab.r.nodes,
      undefined,
      'lab-worker',
      'merge',
      {
        status: { conditions: [{ type: 'Ready', status: 'False', reason: 'KubeletNotReady' }] },
      },
      { subresource: 'status' },
    );
    lab.api.create(lab.r.pods, 'default', {
      metadata: { name: 'admin' },
      spec: {
        nodeSelector: { 'node-role.kubernetes.io/control-plane': '' },
        tolerations: [
          { key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' },
        ],
        containers: [{ name: 'c', image: 'busybox' }],
      },
    });
    for (const name of ['a', 'b'])
      lab.api.create(lab.r.pods, 'default', {
        metadata: { name },
        spec: { containers: [{ name: 'c', image: 'busybox' }] },
      });
    await until('bound', () => ['admin', 'a', 'b'].every((n) => get<Pod>(lab, lab.r.pods, n)?.spec.nodeName));
    assert.equal(get<Pod>(lab, lab.r.pods, 'admin')?.spec.nodeName, 'lab-control-plane');
    assert.equal(get<Pod>(lab, lab.r.pods, 'a')?.spec.nodeName, 'lab-worker2');
    assert.equal(get<Pod>(lab, lab.r.pods, 'b')?.spec.nodeName, 'lab-worker2');
  });
});

describe('endpointslice controller', () => {
  test('a Service with a named targetPort gets slices of ready addresses, kept current', async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('web', 3));
    // Selected, but without the `http` port: it has a slice of its own without that port.
    lab.api.create(lab.r.pods, 'default', {
      metadata: { name: 'portless', labels: { app: 'web' } },
      spec: { containers: [{ name: 'c', image: 'busybox' }] },
    });
    const svc = lab.api.create(lab.r.services, 'default', {
      metadata: { name: 'web', labels: { tier: 'front' } },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    }).object;
    await until('rollout', () => rolledOut(lab, 'web'));
    const slicesNow = () => list<EndpointSlice>(lab, lab.r.slices, 'kubernetes.io/service-name=web');
    const withPort = () => slicesNow().find((s) => (s.ports ?? []).length > 0);
    const portless = () => slicesNow().find((s) => (s.ports ?? []).length === 0);
    await until('slices', () => withPort()?.endpoints?.length === 3 && portless()?.endpoints?.length === 1);
    await lab.controllers.settled();

    const slice = withPort()!;
    assert.equal(slicesNow().length, 2);
    assert.match(slice.metadata.name ?? '', /^web-[a-z0-9]{5}$/);
    assert.equal(slice.metadata.generateName, 'web-');
    assert.equal(slice.addressType, 'IPv4');
    assert.deepEqual(slice.metadata.labels, {
      tier: 'front',
      'kubernetes.io/service-name': 'web',
      'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
    });
    assert.deepEqual(slice.metadata.ownerReferences, [
      {
        apiVersion: 'v1',
        kind: 'Service',
        name: 'web',
        uid: svc.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    assert.deepEqual(slice.ports, [{ name: 'http', port: 8080, protocol: 'TCP' }]);
    const pods = live(list<Pod>(lab, lab.r.pods, 'app=web')).filter((p) => p.metadata.name !== 'portless');
    assert.deepEqual(
      [...(slice.endpoints ?? [])].sort((a, b) =>
        (a.targetRef?.name ?? '').localeCompare(b.targetRef?.name ?? ''),
      ),
      pods.map((p) => ({
        addresses: [p.status?.podIP],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: p.spec.nodeName,
        targetRef: { kind: 'Pod', namespace: 'default', name: p.metadata.name, uid: p.metadata.uid },
      })),
    );
    assert.equal(portless()?.endpoints?.[0]?.targetRef?.name, 'portless');

    // A pod that stops being ready is marked so, and only its slice is written.
    const other = portless()!;
    const target = pods[0]!;
    lab.kubelet.notReady.add(target.metadata.name ?? '');
    lab.kubelet.poke(`default/${target.metadata.name}`);
    const conditionsOf = (name: string) =>
      withPort()?.endpoints?.find((e) => e.targetRef?.name === name)?.conditions;
    await until('not ready', () => conditionsOf(target.metadata.name ?? '')?.ready === false);
    assert.deepEqual(conditionsOf(target.metadata.name ?? ''), {
      ready: false,
      serving: false,
      terminating: false,
    });
    assert.equal(portless()?.metadata.resourceVersion, other.metadata.resourceVersion);

    // A terminating pod is still serving but not ready; once gone it leaves the slice.
    lab.kubelet.holdDeletions = true;
    const leaving = pods[1]!;
    lab.api.delete(lab.r.pods, 'default', leaving.metadata.name ?? '');
    await until('terminating', () => conditionsOf(leaving.metadata.name ?? '')?.terminating === true);
    assert.deepEqual(conditionsOf(leaving.metadata.name ?? ''), {
      ready: false,
      serving: true,
      terminating: true,
    });
    lab.kubelet.holdDeletions = false;
    lab.kubelet.pokeAll();
    await until('gone', () => conditionsOf(leaving.metadata.name ?? '') === undefined);
  });

  test('endpoints beyond 100 go to another slice; a Service with none keeps a placeholder', async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('big', 120));
    lab.api.create(lab.r.services, 'default', {
      metadata: { name: 'big' },
      spec: { selector: { app: 'big' }, ports: [{ port: 80, targetPort: 8080 }] },
    });
    const slicesNow = () => list<EndpointSlice>(lab, lab.r.slices, 'kubernetes.io/service-name=big');
    await until(
      '120 endpoints',
      () =>
        slicesNow().reduce((n, s) => n + (s.endpoints?.filter((e) => e.conditions.ready).length ?? 0), 0) ===
        120,
      20_000,
    );
    // As in Kubernetes, new endpoints top up a slice only when they all fit; none holds over 100.
    const sizes = slicesNow().map((s) => s.endpoints?.length ?? 0);
    assert.equal(sizes.length, 2);
    assert.ok(
      sizes.every((n) => n <= 100),
      String(sizes),
    );
    lab.api.patch(lab.r.deployments, 'default', 'big', 'merge', { spec: { replicas: 0 } });
    await until(
      'placeholder',
      () => {
        const s = slicesNow();
        return s.length === 1 && (s[0]?.endpoints ?? []).length === 0 && s;
      },
      20_000,
    );
    assert.deepEqual(slicesNow()[0]?.ports, []);
  });
});

describe('controller manager', () => {
  test('reconciling a converged cluster again writes nothing, nor does a restarted manager', async () => {
    lab = startLab();
    lab.api.create(lab.r.deployments, 'default', deployment('web', 3));
    lab.api.create(lab.r.services, 'default', {
      metadata: { name: 'web' },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    });
    lab.api.create(lab.r.pods, 'default', {
      metadata: { name: 'picky' },
      spec: { nodeSelector: { disktype: 'ssd' }, containers: [{ name: 'c', image: 'busybox' }] },
    });
    await until('rollout', () => rolledOut(lab, 'web'));
    await until('slice', () =>
      list<EndpointSlice>(lab, lab.r.slices).some(
        (s) => s.endpoints?.filter((e) => e.conditions.ready).length === 3,
      ),
    );
    await until('unschedulable', () =>
      get<Pod>(lab, lab.r.pods, 'picky')?.status?.conditions?.some((c) => c.reason === 'Unschedulable'),
    );
    await lab.controllers.settled();
    await new Promise((r) => setTimeout(r, 20));
    await lab.controllers.settled();

    const before = lab.api.store.resourceVersion;
    lab.controllers.resync();
    await lab.controllers.settled();
    assert.equal(lab.api.store.resourceVersion, before, 'a resync wrote');

    lab.controllers.close();
    lab.controllers = startControllers(lab.api, {
      resyncSeconds: 0,
      onError: (c, key, err) => lab.errors.push(`${c} ${key}: ${(err as Error).stack}`),
    });
    await lab.controllers.settled();
    assert.equal(lab.api.store.resourceVersion, before, 'a restarted manager wrote');
  });
});
