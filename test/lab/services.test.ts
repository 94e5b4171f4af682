/**
 * Services in a lab, as the agents translate them from Services and EndpointSlices: UDP
 * ClusterIPs from pods on every node, the backend spread of random and Maglev selection
 * (Cilium's per-service lb-algorithm annotation), and sessionAffinity ClientIP switched
 * on and off. lab.test.ts covers TCP ClusterIPs, DNS names, NodePort and scaling; this file
 * brings up its own small lab (three echo pods, two clients) once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { LbMaps } from '../../src/datapath/lb.js';
import type { KubeClient } from '../../src/k8s/client.js';
import { agentPinDir, type Lab, type LabState } from '../../src/lab/lab.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, startLab } from '../helpers/lab.js';
import { CLIENT_SCRIPT, NODE, type Reply, SERVERS_SCRIPT, served } from '../helpers/lb.js';

const NAME = 'hys6lab';
const NS = 'svc-test';
const ECHO = ['echo-0', 'echo-1', 'echo-2'];

interface Pod {
  metadata: { name: string; namespace: string };
  spec: { nodeName?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

const ready = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/** An echo pod: the name on TCP :8080 and UDP :5353 (helpers/lb.ts's servers). */
const echoPod = (name: string, nodeName: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: NS, labels: { app: 'echo' } },
  spec: {
    nodeName,
    containers: [
      {
        name: 'echo',
        image: 'hypha/node',
        command: [NODE, '-e', SERVERS_SCRIPT],
        env: [{ name: 'HY_BACKENDS', value: '[["$(HOSTNAME)","0.0.0.0"]]' }],
        // The TCP port makes the pod Ready once its servers listen.
        ports: [
          { name: 'tcp', containerPort: 8080, protocol: 'TCP' },
          { name: 'dns', containerPort: 5353, protocol: 'UDP' },
        ],
      },
    ],
  },
});

const clientPod = (name: string, nodeName: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: NS, labels: { app: 'client' } },
  spec: { nodeName, containers: [{ name: 'client', image: 'hypha/shell', command: ['sleep', 'infinity'] }] },
});

const service = (
  name: string,
  ports: { name: string; port: number; targetPort: number; protocol: 'TCP' | 'UDP' }[],
  extra: { annotations?: Record<string, string>; sessionAffinity?: string } = {},
) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: NS, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
  spec: {
    selector: { app: 'echo' },
    ports,
    ...(extra.sessionAffinity ? { sessionAffinity: extra.sessionAffinity } : {}),
  },
});

describe('hypha lab: services from pods on every node', { skip: skipUnlessPrivileged() }, () => {
  let t: LabFixture;
  let lab: Lab;
  let state: LabState;
  let client: KubeClient;
  const clusterIp = new Map<string, string>();
  let clients: Pod[] = [];

  /** Runs helpers/lb.ts's client in a pod: requests in turn, each of n exchanges. */
  const runAll = async (from: Pod, reqs: Record<string, unknown>[]): Promise<Reply[][]> => {
    const r = await t.exec(from, [
      NODE,
      '-e',
      CLIENT_SCRIPT,
      JSON.stringify(reqs.map((r, id) => ({ ...r, id }))),
    ]);
    const text = r.stdout.trim();
    assert.equal(r.code, 0, `client in ${from.metadata.name}: ${text} ${r.stderr}`);
    const replies = text.split('\n').map((l) => JSON.parse(l) as { id: number; out: Reply[] });
    assert.deepEqual(
      replies.map((r) => r.id),
      reqs.map((_, i) => i),
    );
    return replies.map((r) => r.out);
  };
  const run = async (from: Pod, req: Record<string, unknown>) => (await runAll(from, [req]))[0]!;
  const udp = (from: Pod, svc: string, n: number, extra: Record<string, unknown> = {}) =>
    run(from, { op: 'udp', host: clusterIp.get(svc), port: 53, n, ...extra });
  const tcp = (from: Pod, svc: string, n: number) =>
    run(from, { op: 'tcp', host: clusterIp.get(svc), port: 80, n });
  /** The agents apply a change within a debounce; wait until every client sees `ok`. */
  const until = async (what: string, ok: (from: Pod) => Promise<boolean>) => {
    const end = Date.now() + 15_000;
    for (const from of clients) {
      while (!(await ok(from))) {
        if (Date.now() > end) assert.fail(`${what}: not seen from ${from.metadata.name}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  const frontendOf = (svc: string, port: number, node: string) => {
    using maps = LbMaps.openPinned(agentPinDir(node));
    return maps.listFrontends().find((f) => f.frontend.ip === clusterIp.get(svc) && f.frontend.port === port);
  };

  before(async () => {
    t = await startLab({ name: NAME, underlayOctet: 206 });
    ({ lab, state, client } = t);
    const workers = state.nodes.filter((n) => n.role === 'worker').map((n) => n.name);
    assert.equal(workers.length, 2);
    await client.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    // Backends on both workers, a client on each: every path crosses nodes or stays on one.
    for (const [i, name] of ECHO.entries()) await client.apply(echoPod(name, workers[i % 2]!));
    for (const [i, w] of workers.entries()) await client.apply(clientPod(`client-${i}`, w));
    const udpPort = [{ name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' as const }];
    await client.apply(
      service('echo-random', [...udpPort, { name: 'tcp', port: 80, targetPort: 8080, protocol: 'TCP' }]),
    );
    await client.apply(
      service('echo-maglev', udpPort, { annotations: { 'service.cilium.io/lb-algorithm': 'maglev' } }),
    );
    await client.apply(
      service('echo-sticky', [{ name: 'tcp', port: 80, targetPort: 8080, protocol: 'TCP' }], {
        sessionAffinity: 'ClientIP',
      }),
    );
    for (const s of ['echo-random', 'echo-maglev', 'echo-sticky']) {
      const got = await client.json<{ spec: { clusterIP: string } }>(
        'GET',
        `/api/v1/namespaces/${NS}/services/${s}`,
      );
      clusterIp.set(s, got.spec.clusterIP);
    }
    const end = Date.now() + 60_000;
    for (;;) {
      const pods = (await client.json<{ items: Pod[] }>('GET', `/api/v1/namespaces/${NS}/pods`)).items;
      if (pods.length === 5 && pods.every(ready)) {
        clients = pods.filter((p) => p.metadata.name.startsWith('client-'));
        break;
      }
      if (Date.now() > end)
        throw new Error(`pods not ready: ${JSON.stringify(pods.map((p) => [p.metadata.name, p.status]))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(new Set(clients.map((p) => p.spec.nodeName)).size, 2, 'a client on each worker');
    // Every agent has all three backends of every service.
    await until('three backends', async (from) => {
      for (const s of ['echo-random', 'echo-maglev', 'echo-sticky']) {
        const f = frontendOf(s, s === 'echo-sticky' ? 80 : 53, from.spec.nodeName!);
        if (f?.backends.length !== 3) return false;
      }
      return true;
    });
  });

  after(async () => {
    await lab?.down(false);
  });

  test('UDP to a ClusterIP from pods on every node: answered by backends, from the service address', async () => {
    const svc = clusterIp.get('echo-random')!;
    for (const from of clients) {
      for (const connected of [false, true]) {
        const rs = await udp(from, 'echo-random', 30, { connected });
        const what = `${from.metadata.name} (${connected ? 'connected' : 'unconnected'})`;
        for (const r of rs) {
          assert.ok(r.data && ECHO.includes(r.data), `${what}: ${r.data ?? r.error}`);
          assert.equal(r.from, `${svc}:53`, `${what}: the reply shows the service as its source`);
          if (connected) assert.equal(r.peer, `${svc}:53`, `${what}: getpeername shows the service`);
        }
        // New sockets, random choices: 30 tries miss one of three backends about once in 60,000.
        assert.deepEqual(new Set(served(rs)), new Set(ECHO), `${what}: every backend used`);
      }
    }
  });

  test('random selection: TCP connections from every node use every backend', async () => {
    assert.equal(frontendOf('echo-random', 80, clients[0]!.spec.nodeName!)?.algorithm, 'random');
    for (const from of clients) {
      const seen = served(await tcp(from, 'echo-random', 30));
      assert.deepEqual(new Set(seen), new Set(ECHO), `${from.metadata.name}: ${seen.join(' ')}`);
    }
  });

  test('maglev (lb-algorithm annotation): one client 5-tuple always lands on one backend', async () => {
    for (const from of clients) {
      const f = frontendOf('echo-maglev', 53, from.spec.nodeName!);
      assert.equal(f?.algorithm, 'maglev', `${from.metadata.name}'s node`);
    }
    const ports = Array.from({ length: 12 }, (_, i) => 42000 + i);
    /** Who served each fixed source port, over three rounds. */
    const spread = async (from: Pod, svc: string) => {
      const byPort = new Map<number, Set<string>>();
      const host = clusterIp.get(svc);
      for (let round = 0; round < 3; round++) {
        const rs = await runAll(
          from,
          ports.map((localPort) => ({ op: 'udp', host, port: 53, connected: true, localPort })),
        );
        rs.forEach(([r], i) => {
          const port = ports[i]!;
          assert.ok(r?.data, `${from.metadata.name} port ${port}: ${r?.error}`);
          byPort.set(port, (byPort.get(port) ?? new Set()).add(r.data));
        });
      }
      return byPort;
    };
    for (const from of clients) {
      const byPort = await spread(from, 'echo-maglev');
      for (const [port, s] of byPort)
        assert.equal(s.size, 1, `${from.metadata.name} port ${port} went to ${[...s]}`);
      const used = new Set([...byPort.values()].flatMap((s) => [...s]));
      assert.ok(used.size >= 2, `12 source ports all hashed to ${[...used]}`);
    }
    // The control: random selection moves the same tuples around (all kept: (1/9)^12).
    const random = await spread(clients[0]!, 'echo-random');
    assert.ok(
      [...random.values()].some((s) => s.size > 1),
      'random kept every port on one backend',
    );
  });

  test('sessionAffinity ClientIP: each client stays on one backend; switched off, connections spread', async () => {
    for (const from of clients) {
      const seen = served(await tcp(from, 'echo-sticky', 20));
      assert.equal(new Set(seen).size, 1, `${from.metadata.name}: ${seen.join(' ')}`);
      assert.ok(ECHO.includes(seen[0]!), seen[0]);
    }
    await client.json(
      'PATCH',
      `/api/v1/namespaces/${NS}/services/echo-sticky`,
      { spec: { sessionAffinity: 'None' } },
      'application/merge-patch+json',
    );
    await until('affinity off', async (from) => {
      const f = frontendOf('echo-sticky', 80, from.spec.nodeName!);
      return f !== undefined && f.affinityTimeoutSec === 0;
    });
    for (const from of clients) {
      const seen = served(await tcp(from, 'echo-sticky', 30));
      assert.deepEqual(new Set(seen), new Set(ECHO), `${from.metadata.name}: ${seen.join(' ')}`);
    }
  });
  test('bad services: a frontend two services claim and a port no slice has are Warning events on the service and in service list; the others work', async () => {
    const ext = (name: string, portName: string) => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: NS },
      spec: {
        selector: { app: 'echo' },
        externalIPs: ['198.51.100.40'],
        ports: [{ name: portName, port: 80, targetPort: 8080, protocol: 'TCP' }],
      },
    });
    await client.apply(ext('clash-a', 'tcp'));
    await new Promise((r) => setTimeout(r, 300));
    // clash-b has no selector: its EndpointSlice is written by hand, with a port name the service lacks.
    const { selector: _none, ...bSpec } = ext('clash-b', 'web').spec;
    await client.apply({ ...ext('clash-b', 'web'), spec: bSpec });
    await client.apply({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'clash-b-manual',
        namespace: NS,
        labels: { 'kubernetes.io/service-name': 'clash-b' },
      },
      addressType: 'IPv4',
      ports: [{ name: 'other', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: ['10.244.250.1'], conditions: { ready: true } }],
    });
    type Ev = { reason: string; message: string; type: string; source?: { host?: string } };
    const events = async (name: string) =>
      (
        await client.json<{ items: Ev[] }>(
          'GET',
          `/api/v1/namespaces/${NS}/events?fieldSelector=${encodeURIComponent(`involvedObject.name=${name}`)}`,
        )
      ).items;
    const end = Date.now() + 15_000;
    let got: Ev[] = [];
    while (Date.now() < end) {
      got = await events('clash-b');
      if (
        got.some((e) => e.reason === 'FrontendNotProgrammed') &&
        got.some((e) => e.reason === 'FrontendWarning')
      )
        break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const refused = got.find((e) => e.reason === 'FrontendNotProgrammed');
    assert.ok(refused, `events of clash-b: ${JSON.stringify(got)}`);
    assert.equal(refused.type, 'Warning');
    assert.match(
      refused.message,
      /198\.51\.100\.40:80\/TCP is already the frontend of service svc-test\/clash-a/,
    );
    const warned = got.find((e) => e.reason === 'FrontendWarning');
    assert.match(warned!.message, /"web"\/TCP: no EndpointSlice of the service has a port of that name/);
    // The agents' own view (`hypha service list`): clash-a holds the address, clash-b is refused.
    const node = clients[0]!.spec.nodeName!;
    {
      using maps = LbMaps.openPinned(agentPinDir(node));
      const f = maps.listFrontends().find((x) => x.frontend.ip === '198.51.100.40');
      assert.equal(f?.backends.length, 3, 'clash-a is programmed with its backends');
    }
    // The other services keep working.
    assert.deepEqual(new Set(served(await tcp(clients[0]!, 'echo-random', 20))), new Set(ECHO));
    // clash-a goes: clash-b takes the address over (and has no backends: its port name matches no slice).
    await client.json('DELETE', `/api/v1/namespaces/${NS}/services/clash-a`);
    const until2 = Date.now() + 15_000;
    for (;;) {
      using maps = LbMaps.openPinned(agentPinDir(node));
      const f = maps.listFrontends().find((x) => x.frontend.ip === '198.51.100.40');
      if (f && f.backends.length === 0) break;
      if (Date.now() > until2) assert.fail(`clash-b did not take 198.51.100.40 over: ${JSON.stringify(f)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await client.json('DELETE', `/api/v1/namespaces/${NS}/services/clash-b`);
    await client.json('DELETE', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices/clash-b-manual`);
  });
});
