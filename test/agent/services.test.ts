/** Services and EndpointSlices to load-balancer frontends: pure, no kernel. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type AppliedServices,
  applyServiceChanges,
  desiredFrontends,
  diffFrontends,
  type EndpointSliceObject,
  type FrontendWriter,
  type ServiceObject,
} from '../../src/agent/services.js';
import type { Frontend as LbFrontend, ServiceSpec } from '../../src/datapath/lb.js';

const svc = (
  name: string,
  spec: ServiceObject['spec'],
  annotations?: Record<string, string>,
): ServiceObject => ({
  metadata: { name, namespace: 'prod', ...(annotations ? { annotations } : {}) },
  spec,
});
const slice = (
  service: string,
  port: number,
  endpoints: EndpointSliceObject['endpoints'],
  name = 'http',
): EndpointSliceObject => ({
  metadata: { namespace: 'prod', labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4',
  ports: [{ name, port, protocol: 'TCP' }],
  endpoints,
});
const opts = { nodeName: 'n1', nodeIp: '10.240.0.2', defaultAlgorithm: 'random' as const };

test('a ClusterIP service gets one frontend per port, with ready backends active and terminating ones marked', () => {
  const f = desiredFrontends(
    [svc('web', { clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80, targetPort: 'http' }] })],
    [
      slice('web', 8080, [
        { addresses: ['10.244.1.2'], conditions: { ready: true }, nodeName: 'n1' },
        {
          addresses: ['10.244.2.2'],
          conditions: { ready: false, serving: true, terminating: true },
          nodeName: 'n2',
        },
        { addresses: ['10.244.2.3'], conditions: { ready: false }, nodeName: 'n2' },
      ]),
    ],
    opts,
  );
  const web = f.get('10.96.0.20:80/TCP');
  assert.ok(web);
  assert.equal(web.type, 'ClusterIP');
  assert.deepEqual(
    web.backends.map((b) => [b.ip, b.port, b.state]),
    [
      ['10.244.1.2', 8080, 'active'],
      ['10.244.2.2', 8080, 'terminating'],
    ],
  );
});

test('NodePort, externalIPs, local traffic policy, affinity and the lb-algorithm annotation', () => {
  const f = desiredFrontends(
    [
      svc(
        'np',
        {
          type: 'NodePort',
          clusterIP: '10.96.0.30',
          externalIPs: ['203.0.113.80'],
          externalTrafficPolicy: 'Local',
          sessionAffinity: 'ClientIP',
          ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        },
        { 'service.cilium.io/lb-algorithm': 'maglev' },
      ),
    ],
    [
      slice('np', 8080, [
        { addresses: ['10.244.1.2'], conditions: { ready: true }, nodeName: 'n1' },
        { addresses: ['10.244.2.2'], conditions: { ready: true }, nodeName: 'n2' },
      ]),
    ],
    opts,
  );
  assert.deepEqual([...f.keys()].sort(), [
    '10.240.0.2:30080/TCP',
    '10.96.0.30:80/TCP',
    '203.0.113.80:80/TCP',
  ]);
  const node = f.get('10.240.0.2:30080/TCP')!;
  assert.equal(node.type, 'NodePort');
  assert.equal(node.algorithm, 'maglev');
  assert.equal(node.affinityTimeoutSec, 10800);
  assert.deepEqual(
    node.backends.map((b) => b.ip),
    ['10.244.1.2'],
    'Local: this node only',
  );
  assert.equal(f.get('10.96.0.30:80/TCP')!.backends.length, 2, 'internal traffic policy Cluster');
});

test('a port name no slice has gives a frontend with no backends; headless services have none', () => {
  const f = desiredFrontends(
    [
      svc('a', { clusterIP: '10.96.0.40', ports: [{ name: 'grpc', port: 9000 }] }),
      svc('h', { clusterIP: 'None', ports: [{ name: 'http', port: 80 }] }),
    ],
    [slice('a', 8080, [{ addresses: ['10.244.1.9'], conditions: { ready: true } }])],
    opts,
  );
  assert.deepEqual([...f.keys()], ['10.96.0.40:9000/TCP']);
  assert.deepEqual(f.get('10.96.0.40:9000/TCP')!.backends, []);
});

test('the diff writes only what changed', () => {
  const s = [svc('web', { clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] })];
  const a = desiredFrontends(
    s,
    [slice('web', 8080, [{ addresses: ['10.244.1.2'], conditions: { ready: true } }])],
    opts,
  );
  const b = desiredFrontends(
    s,
    [slice('web', 8080, [{ addresses: ['10.244.1.2', '10.244.1.3'], conditions: { ready: true } }])],
    opts,
  );
  assert.deepEqual(diffFrontends(a, a), { upsert: [], remove: [] });
  const d = diffFrontends(a, b);
  assert.equal(d.upsert.length, 1);
  assert.equal(d.upsert[0]!.backends.length, 2);
  assert.deepEqual(diffFrontends(b, new Map()).remove, [{ ip: '10.96.0.20', port: 80, protocol: 'TCP' }]);
});

/** A load balancer that records what it is asked to write, and refuses port 9999 as ServiceMaps refuses bad specs. */
class RecordingWriter implements FrontendWriter {
  upserts: ServiceSpec[][] = [];
  deletes: LbFrontend[][] = [];
  #next = 1;
  readonly #ids = new Map<string, number>();
  validate(spec: ServiceSpec): void {
    if (spec.frontend.port === 9999) throw new Error('frontend.port: refused');
  }
  upsertServices(specs: readonly ServiceSpec[]) {
    this.upserts.push([...specs]);
    return specs.map((s) => {
      const k = `${s.frontend.ip}:${s.frontend.port}/${s.frontend.protocol}`;
      const id = this.#ids.get(k) ?? this.#next++;
      this.#ids.set(k, id);
      return { revNatIndex: id, backendIds: [] };
    });
  }
  deleteServices(frontends: readonly LbFrontend[]) {
    this.deletes.push([...frontends]);
    return frontends.length;
  }
}

test('applying changes writes the changed services only; a bad one is reported on itself, the others apply', () => {
  const lb = new RecordingWriter();
  const applied: AppliedServices = { records: new Map(), at: new Map() };
  const frontendsOf = (s: ServiceObject, ips: string[]) => [
    ...desiredFrontends(
      [s],
      [slice(s.metadata.name, 8080, [{ addresses: ips, conditions: { ready: true } }])],
      opts,
    ).values(),
  ];
  const web = svc('web', { clusterIP: '10.96.0.20', ports: [{ name: 'http', port: 80 }] });
  const bad = svc('bad', {
    clusterIP: '10.96.0.21',
    ports: [
      { name: 'http', port: 9999 },
      { name: 'sctp', port: 80, protocol: 'SCTP' },
    ],
  });
  const api = svc('api', { clusterIP: '10.96.0.22', ports: [{ name: 'http', port: 80 }] });
  applyServiceChanges(
    lb,
    applied,
    new Map([
      ['prod/web', frontendsOf(web, ['10.244.1.2'])],
      ['prod/bad', frontendsOf(bad, ['10.244.1.3'])],
      ['prod/api', frontendsOf(api, ['10.244.1.4'])],
    ]),
  );
  assert.deepEqual(
    lb.upserts[0]!.map((s) => s.frontend.ip),
    ['10.96.0.20', '10.96.0.22'],
  );
  const badRecs = applied.records.get('prod/bad')!;
  assert.match(badRecs[0]!.error!, /frontend\.port: refused/);
  assert.match(badRecs[1]!.error!, /SCTP services are not translated/);
  assert.equal(applied.records.get('prod/web')![0]!.revNatIndex, 1);
  assert.deepEqual(applied.at.get('10.96.0.22:80'), { namespace: 'prod', name: 'api' });

  // One backend of one service changes: that service alone is written.
  applyServiceChanges(lb, applied, new Map([['prod/web', frontendsOf(web, ['10.244.1.2', '10.244.1.5'])]]));
  assert.equal(lb.upserts.length, 2);
  assert.deepEqual(
    lb.upserts[1]!.map((s) => [s.frontend.ip, s.backends.map((b) => b.ip)]),
    [['10.96.0.20', ['10.244.1.2', '10.244.1.5']]],
  );
  assert.equal(applied.records.get('prod/web')![0]!.revNatIndex, 1, 'same frontend, same index');

  // A service gone: its frontend is deleted, its records and addresses forgotten.
  applyServiceChanges(lb, applied, new Map([['prod/api', []]]));
  assert.deepEqual(lb.deletes.at(-1), [{ ip: '10.96.0.22', port: 80, protocol: 'TCP' }]);
  assert.equal(applied.records.has('prod/api'), false);
  assert.equal(applied.at.has('10.96.0.22:80'), false);
});
