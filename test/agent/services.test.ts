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

test('bad services: externalIP in the pod CIDR, a port no slice has, a repeated port, a frontend two services claim', () => {
  const f = desiredFrontends(
    [
      svc('ext', {
        clusterIP: '10.96.0.50',
        externalIPs: ['10.244.3.7', '198.51.100.20'],
        ports: [
          { name: 'http', port: 80 },
          { name: 'again', port: 80 },
        ],
      }),
      svc('named', { clusterIP: '10.96.0.51', ports: [{ name: 'metrics', port: 9090 }] }),
    ],
    [
      slice('ext', 8080, [{ addresses: ['10.244.1.9'], conditions: { ready: true } }]),
      slice('named', 8080, [{ addresses: ['10.244.1.10'], conditions: { ready: true } }]),
    ],
    { ...opts, podCidrs: ['10.244.0.0/16'] },
  );
  assert.match(
    f.get('10.244.3.7:80/TCP')!.problem!,
    /externalIP 10\.244\.3\.7 is inside the pod CIDR 10\.244\.0\.0\/16/,
  );
  assert.equal(f.get('198.51.100.20:80/TCP')!.problem, undefined, 'the other externalIP is fine');
  assert.match(f.get('10.96.0.50:80/TCP')!.warning!, /spec\.ports\[1\] repeats spec\.ports\[0\] \(80\/TCP\)/);
  assert.match(
    f.get('10.96.0.51:9090/TCP')!.warning!,
    /"metrics"\/TCP: no EndpointSlice of the service has a port of that name \(they have "http"\/TCP\)/,
  );

  // Applied: the refused frontend is reported and not written; the service's others are.
  const lb = new RecordingWriter();
  const applied: AppliedServices = { records: new Map(), at: new Map() };
  const problems = applyServiceChanges(
    lb,
    applied,
    new Map([['prod/ext', [...f.values()].filter((x) => x.service === 'prod/ext')]]),
  );
  assert.deepEqual(lb.upserts[0]!.map((s) => s.frontend.ip).sort(), ['10.96.0.50', '198.51.100.20']);
  assert.deepEqual(problems.map((p) => [p.severity, p.frontend]).sort(), [
    ['error', '10.244.3.7:80/TCP'],
    ['warning', '10.96.0.50:80/TCP'],
    ['warning', '198.51.100.20:80/TCP'],
  ]);

  // Two services claim one externalIP: the first keeps it, the second is told, and gets it once it is free.
  const claim = (name: string, clusterIP: string) => [
    ...desiredFrontends(
      [svc(name, { clusterIP, externalIPs: ['198.51.100.30'], ports: [{ name: 'http', port: 80 }] })],
      [slice(name, 8080, [{ addresses: ['10.244.1.11'], conditions: { ready: true } }])],
      opts,
    ).values(),
  ];
  applyServiceChanges(lb, applied, new Map([['prod/one', claim('one', '10.96.0.60')]]));
  const clash = applyServiceChanges(lb, applied, new Map([['prod/two', claim('two', '10.96.0.61')]]));
  assert.deepEqual(clash, [
    {
      service: 'prod/two',
      frontend: '198.51.100.30:80/TCP',
      severity: 'error',
      message: '198.51.100.30:80/TCP is already the frontend of service prod/one',
    },
  ]);
  assert.deepEqual(applied.at.get('198.51.100.30:80'), { namespace: 'prod', name: 'one' });
  const handover = applyServiceChanges(lb, applied, new Map([['prod/one', []]]));
  assert.deepEqual(handover, [], 'prod/two took the frontend over without a problem');
  assert.equal(applied.records.get('prod/two')!.find((r) => r.type === 'ExternalIP')!.error, undefined);
  assert.deepEqual(applied.at.get('198.51.100.30:80'), { namespace: 'prod', name: 'two' });
  assert.deepEqual(
    lb.upserts
      .at(-1)!
      .map((s) => s.frontend.ip)
      .sort(),
    ['10.96.0.61', '198.51.100.30'],
  );
});

test('a service with more backends than the maps take fails alone; the others in the same change are written', () => {
  class FullWriter extends RecordingWriter {
    override upsertServices(specs: readonly ServiceSpec[]) {
      if (specs.some((s) => s.backends.length > 3))
        throw new Error('lb: the backends map is full (4 entries)');
      return super.upsertServices(specs);
    }
  }
  const lb = new FullWriter();
  const applied: AppliedServices = { records: new Map(), at: new Map() };
  const of = (name: string, clusterIP: string, n: number) => [
    ...desiredFrontends(
      [svc(name, { clusterIP, ports: [{ name: 'http', port: 80 }] })],
      [
        slice(
          name,
          8080,
          Array.from({ length: n }, (_, i) => ({
            addresses: [`10.244.2.${i + 1}`],
            conditions: { ready: true },
          })),
        ),
      ],
      opts,
    ).values(),
  ];
  const problems = applyServiceChanges(
    lb,
    applied,
    new Map([
      ['prod/big', of('big', '10.96.0.70', 5)],
      ['prod/small', of('small', '10.96.0.71', 2)],
    ]),
  );
  assert.deepEqual(problems, [
    {
      service: 'prod/big',
      frontend: '10.96.0.70:80/TCP',
      severity: 'error',
      message: 'not written: lb: the backends map is full (4 entries)',
    },
  ]);
  assert.ok(applied.records.get('prod/small')![0]!.revNatIndex, 'the small service was written');
});
