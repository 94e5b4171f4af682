/**
 * The UI's server side without a browser: the service map aggregated from fixture flows
 * (pure), its layout, the flow table's rows, the JSON API in-process (including bad
 * input), the live stream's bound with a browser that does not read, and the whole server
 * on a real socket fed through the relay from an agent's flow ring.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { EventType, EventVerdict } from '../../src/datapath/constants.js';
import { type ObserverServer, startObserverServer } from '../../src/hubble/grpc/index.js';
import { toPB } from '../../src/hubble/grpc/proto.js';
import { type Flow, FlowRing, formatTimestamp } from '../../src/hubble/index.js';
import { startRelay } from '../../src/hubble/relay.js';
import {
  EventStream,
  FlowStore,
  flowEdge,
  flowRow,
  fromPB,
  layoutMap,
  mapEndpoint,
  parseFlowQuery,
  ServiceMapBuilder,
  serviceMap,
  startUiServer,
  UiApi,
  type UiServer,
  workloadFromPodName,
} from '../../src/ui/index.js';
import { reply } from '../helpers/packet.js';
import { builder, event, SYN } from '../hubble/fixtures.js';

// ---------------------------------------------------------------- fixture flows

const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);
const at = (ms: number) => formatTimestamp(BigInt(T0 + ms) * 1_000_000n);
const prodLabels = (app: string) => [`k8s:app=${app}`, 'k8s:io.kubernetes.pod.namespace=production'];

function pod(app: string, suffix = '7d9f8b6c5-x2x9q') {
  return {
    identity: 1000 + app.length,
    namespace: 'production',
    pod_name: `${app}-${suffix}`,
    labels: prodLabels(app),
    workloads: [{ name: app, kind: 'Deployment' }],
  };
}

let seq = 0;
function tcp(
  src: Flow['source'],
  dst: Flow['destination'],
  o: Partial<Flow> & { sport?: number; dport?: number } = {},
): Flow {
  const { sport = 40000, dport = 8080, ...rest } = o;
  seq++;
  return {
    time: at(seq),
    uuid: `f-${seq}`,
    verdict: 'FORWARDED',
    IP: { source: '10.244.1.5', destination: '10.244.2.7', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: sport, destination_port: dport, flags: { SYN: true } } },
    source: src,
    destination: dst,
    Type: 'L3_L4',
    node_name: 'lab-worker',
    event_type: { type: 4 },
    is_reply: false,
    Summary: 'TCP Flags: SYN',
    ...rest,
  };
}

const DENY = { kind: 'NetworkPolicy', namespace: 'production', name: 'default-deny-all' };
const frontend = pod('frontend');
const gateway = pod('api-gateway');
const catalog = pod('catalog');
const coredns = {
  identity: 300,
  namespace: 'kube-system',
  pod_name: 'coredns-5d78c9869d-abcde',
  labels: ['k8s:io.kubernetes.pod.namespace=kube-system', 'k8s:k8s-app=kube-dns'],
  workloads: [{ name: 'coredns', kind: 'Deployment' }],
};
const world = { identity: 2, labels: ['reserved:world'] };
const host = { identity: 1, labels: ['reserved:host'] };

/** A small day in production: calls, a reply, drops after a default deny, DNS, the world, L7. */
function fixtureFlows(): Flow[] {
  seq = 0;
  return [
    tcp(gateway, catalog, {
      egress_allowed_by: [{ kind: 'CiliumNetworkPolicy', name: 'gw', namespace: 'production' }],
    }),
    tcp(catalog, gateway, { is_reply: true, sport: 8080, dport: 40000 }),
    tcp(frontend, gateway),
    tcp(gateway, catalog, {
      verdict: 'DROPPED',
      drop_reason: 133,
      drop_reason_desc: 'POLICY_DENIED',
      is_reply: undefined,
      event_type: { type: 1, sub_type: 133 },
      traffic_direction: 'EGRESS',
      egress_denied_by: [DENY],
    }),
    tcp(gateway, catalog, {
      verdict: 'DROPPED',
      drop_reason: 133,
      drop_reason_desc: 'POLICY_DENIED',
      is_reply: undefined,
      event_type: { type: 1, sub_type: 133 },
      traffic_direction: 'INGRESS',
      ingress_denied_by: [DENY],
    }),
    tcp(frontend, coredns, {
      l4: { UDP: { source_port: 5353, destination_port: 53 } },
      destination_service: { name: 'kube-dns', namespace: 'kube-system' },
    }),
    tcp(frontend, world, { destination_names: ['api.external-partner.com'], dport: 443 }),
    tcp(host, frontend, { dport: 8080 }),
    tcp(gateway, catalog, {
      Type: 'L7',
      l7: { type: 'REQUEST', http: { method: 'GET', url: 'http://catalog/api/v1/products' } },
    }),
    tcp(catalog, gateway, {
      Type: 'L7',
      is_reply: true,
      sport: 8080,
      dport: 40000,
      l7: {
        type: 'RESPONSE',
        latency_ns: '3000000',
        http: { code: 200, method: 'GET', url: 'http://catalog/api/v1/products' },
      },
    }),
    // Another namespace entirely.
    tcp(
      { identity: 4000, namespace: 'data-pipeline', pod_name: 'data-exporter-1' },
      { identity: 4001, namespace: 'data-pipeline', pod_name: 'sink-0' },
    ),
  ];
}

// ---------------------------------------------------------------- naming

test('endpoints are named by workload, kube-dns, service, world (by FQDN), reserved identity or address', () => {
  const f = fixtureFlows();
  assert.deepEqual(
    f.slice(0, 8).map((x) => [mapEndpoint(x, 'source').id, mapEndpoint(x, 'destination').id]),
    [
      ['workload:production/api-gateway', 'workload:production/catalog'],
      ['workload:production/catalog', 'workload:production/api-gateway'],
      ['workload:production/frontend', 'workload:production/api-gateway'],
      ['workload:production/api-gateway', 'workload:production/catalog'],
      ['workload:production/api-gateway', 'workload:production/catalog'],
      ['workload:production/frontend', 'dns:kube-system/kube-dns'],
      ['workload:production/frontend', 'world:api.external-partner.com'],
      ['reserved:host', 'workload:production/frontend'],
    ],
  );
  const svcOnly = tcp(
    frontend,
    { identity: 2 },
    { destination_service: { name: 'payments', namespace: 'production' } },
  );
  assert.equal(mapEndpoint(svcOnly, 'destination').id, 'service:production/payments');
  const bare = tcp(frontend, {}, { IP: { source: '10.244.1.5', destination: '10.9.9.9' } });
  assert.deepEqual(mapEndpoint(bare, 'destination'), {
    id: 'ip:10.9.9.9',
    kind: 'unknown',
    name: '10.9.9.9',
  });
  assert.equal(mapEndpoint(tcp(frontend, world), 'destination').id, 'world');
  // A remote pod known only by its identity's labels.
  const remote = tcp(frontend, { identity: 7777, labels: prodLabels('payments') });
  assert.equal(mapEndpoint(remote, 'destination').id, 'workload:production/payments');
  assert.equal(workloadFromPodName('catalog-7d9f8b6c5-x2x9q'), 'catalog');
  assert.equal(workloadFromPodName('cilium-x7k2p'), 'cilium');
  assert.equal(workloadFromPodName('db-0'), 'db');
  assert.equal(workloadFromPodName('standalone'), 'standalone');
});

test('a reply counts on its connection: the edge points from client to server', () => {
  const [call, back] = fixtureFlows();
  assert.equal(flowEdge(call!).id, flowEdge(back!).id);
  assert.equal(flowEdge(back!).id, 'workload:production/api-gateway->workload:production/catalog');
});

// ---------------------------------------------------------------- aggregation

test('the service map of a namespace: nodes, edges with forwarded/dropped counts, ports, policies, L7', () => {
  const m = serviceMap(fixtureFlows(), 'production');
  assert.deepEqual(
    m.nodes.map((n) => [n.id, n.kind, n.name]),
    [
      ['dns:kube-system/kube-dns', 'dns', 'kube-dns'],
      ['reserved:host', 'reserved', 'host'],
      ['workload:production/api-gateway', 'workload', 'api-gateway'],
      ['workload:production/catalog', 'workload', 'catalog'],
      ['workload:production/frontend', 'workload', 'frontend'],
      ['world:api.external-partner.com', 'world', 'api.external-partner.com'],
    ],
  );
  assert.deepEqual(m.namespaces, ['data-pipeline', 'kube-system', 'production']);
  assert.deepEqual(m.totals, { flows: 10, forwarded: 8, dropped: 2 });
  const gwCatalog = m.edges.find(
    (e) => e.id === 'workload:production/api-gateway->workload:production/catalog',
  )!;
  assert.equal(gwCatalog.flows, 6);
  assert.equal(gwCatalog.forwarded, 4);
  assert.equal(gwCatalog.dropped, 2);
  assert.deepEqual(gwCatalog.ports, [{ protocol: 'TCP', port: 8080, flows: 6, dropped: 2 }]);
  assert.deepEqual(gwCatalog.dropReasons, [{ reason: 'POLICY_DENIED', text: 'Policy denied', flows: 2 }]);
  assert.deepEqual(gwCatalog.deniedBy, [
    { ...DENY, direction: 'egress', flows: 1 },
    { ...DENY, direction: 'ingress', flows: 1 },
  ]);
  assert.deepEqual(gwCatalog.allowedBy, [
    { kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'gw', direction: 'egress', flows: 1 },
  ]);
  assert.deepEqual(gwCatalog.l7, {
    requests: 1,
    responses: 1,
    http: { '2xx': 1 },
    dnsQueries: 0,
    latencySamples: 1,
    latencyAvgMs: 3,
    latencyMaxMs: 3,
  });
  assert.equal(gwCatalog.lastVerdict, 'FORWARDED');
  assert.equal(gwCatalog.firstTime, at(1));
  assert.equal(gwCatalog.lastTime, at(10));
  const dns = m.edges.find((e) => e.target === 'dns:kube-system/kube-dns')!;
  assert.deepEqual(dns.ports, [{ protocol: 'UDP', port: 53, flows: 1, dropped: 0 }]);
  const catalogNode = m.nodes.find((n) => n.name === 'catalog')!;
  assert.deepEqual(catalogNode.pods, ['catalog-7d9f8b6c5-x2x9q']);
  assert.equal(catalogNode.droppedIn, 2);

  const all = serviceMap(fixtureFlows());
  assert.equal(all.nodes.length, 8, 'the other namespace joins the map of all namespaces');
  const other = serviceMap(fixtureFlows(), 'data-pipeline');
  assert.deepEqual(
    other.edges.map((e) => e.id),
    ['workload:data-pipeline/data-exporter->workload:data-pipeline/sink'],
  );
  assert.deepEqual(serviceMap(fixtureFlows(), 'nowhere').edges, []);
});

test('flows made by the flow builder from datapath events: a default deny shows as a red edge naming the policy', () => {
  const b = builder();
  const flows = [
    b.build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Forwarded, cookie: 1 })),
    // The reply leaving catalog's endpoint (the egress hook sees its source).
    b.build(event({ type: EventType.Trace, subtype: 5, ct_state: 2, direction: 1, spec: reply(SYN) })),
    b.build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Dropped })),
  ];
  const m = serviceMap(flows, 'production');
  assert.deepEqual(
    m.edges.map((e) => [e.id, e.forwarded, e.dropped]),
    [['workload:production/frontend->workload:production/catalog', 2, 1]],
  );
  const e = m.edges[0]!;
  assert.deepEqual(
    e.deniedBy.map((p) => `${p.kind} ${p.namespace}/${p.name} ${p.direction}`),
    ['CiliumNetworkPolicy production/catalog-allow-frontend ingress'],
  );
  assert.deepEqual(
    e.allowedBy.map((p) => p.name),
    ['catalog-allow-frontend'],
  );
  const row = flowRow(flows[2]!);
  assert.equal(row.verdict, 'DROPPED');
  assert.equal(row.dropReason, 'POLICY_DENIED: Policy denied');
  assert.equal(row.policy, 'denied by CiliumNetworkPolicy production/catalog-allow-frontend (ingress)');
  assert.equal(row.edge, e.id);
  assert.equal(row.source, 'production/frontend-abc:52342');
  assert.equal(row.destination, 'production/catalog-xyz:8080');
  assert.equal(row.port, 8080);
});

test('memory is bounded: the least recently seen edges go, and nodes with them', () => {
  const b = new ServiceMapBuilder({ maxEdges: 3 });
  for (let i = 0; i < 50; i++) b.add(tcp(pod(`client${i}`), catalog));
  b.add(tcp(pod('client48'), catalog)); // seen again: kept
  b.add(tcp(pod('late'), catalog));
  assert.deepEqual(b.size, { nodes: 4, edges: 3 });
  assert.deepEqual(
    b.snapshot().edges.map((e) => e.source),
    ['workload:production/client48', 'workload:production/client49', 'workload:production/late'],
  );
  const store = new FlowStore({ capacity: 5, maxEdges: 3 });
  for (let i = 0; i < 100; i++) store.add(tcp(pod(`c${i}`), catalog));
  assert.equal(store.stats().stored, 5);
  assert.equal(store.stats().seen, 100);
  assert.deepEqual(
    store.recent(() => true, 10).map((f) => f.source?.pod_name),
    ['c95', 'c96', 'c97', 'c98', 'c99'].map((c) => `${c}-7d9f8b6c5-x2x9q`),
  );
  assert.equal(store.add(store.recent(() => true, 1)[0]!), false, 'a flow seen twice is stored once');
  assert.equal(store.stats().duplicates, 1);
});

test('the layout is deterministic, puts clients left of servers, and never overlaps cards', () => {
  const m = serviceMap(fixtureFlows(), 'production');
  const l = layoutMap(m);
  assert.deepEqual(layoutMap(structuredClone(m)), l, 'same map, same picture');
  const x = (id: string) => l.nodes[id]!.x;
  assert.ok(x('workload:production/frontend') < x('workload:production/api-gateway'));
  assert.ok(x('workload:production/api-gateway') < x('workload:production/catalog'));
  assert.ok(x('reserved:host') < x('workload:production/frontend'));
  const boxes = Object.values(l.nodes);
  for (const [i, a] of boxes.entries())
    for (const b of boxes.slice(i + 1))
      assert.ok(
        a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y,
        'cards overlap',
      );
  for (const b of boxes) assert.ok(b.x + b.w <= l.width && b.y + b.h <= l.height);
  // A cycle (a <-> b) still gets a layout: one edge forward, the other in a lane below.
  const cyc = layoutMap(serviceMap([tcp(frontend, catalog), tcp(catalog, frontend)]));
  assert.equal(Object.keys(cyc.nodes).length, 2);
  assert.deepEqual(
    Object.values(cyc.edges)
      .map((e) => e.shape)
      .sort(),
    ['back', 'forward'],
  );
  const lane = Object.values(cyc.edges).find((e) => e.shape === 'back')!.lane!;
  assert.ok(Object.values(cyc.nodes).every((b) => b.y + b.h < lane) && lane <= cyc.height);
});

test('an edge across several ranks runs between the cards, and no label covers a card', () => {
  // api-gateway calls kube-dns too: kube-dns moves a rank right, so frontend -> kube-dns crosses a rank.
  const m = serviceMap(
    [...fixtureFlows(), tcp(gateway, coredns, { l4: { UDP: { source_port: 1, destination_port: 53 } } })],
    'production',
  );
  const l = layoutMap(m);
  const long = l.edges['workload:production/frontend->dns:kube-system/kube-dns']!;
  assert.equal(long.shape, 'forward');
  assert.equal(long.points.length, 4, 'start, through the slot in the crossed rank, end');
  const inside = (p: { x: number; y: number }, pad = 0) =>
    Object.values(l.nodes).some(
      (b) => p.x > b.x - pad && p.x < b.x + b.w + pad && p.y > b.y - pad && p.y < b.y + b.h + pad,
    );
  for (const [id, r] of Object.entries(l.edges)) {
    assert.ok(!inside(r.label, 4), `the label of ${id} is on a card`);
    for (const p of r.points.slice(1, -1)) assert.ok(!inside(p), `${id} runs under a card`);
  }
  assert.deepEqual(Object.keys(l.edges).sort(), m.edges.map((e) => e.id).sort());
});

test('wire objects convert back to the JSON shape the filters use', () => {
  for (const f of fixtureFlows())
    assert.deepEqual(fromPB('Flow', toPB('Flow', f)), JSON.parse(JSON.stringify(f)));
});

test('L7 and policy summaries in the table rows', () => {
  const f = fixtureFlows();
  assert.equal(flowRow(f[8]!).l7, 'HTTP request GET http://catalog/api/v1/products');
  assert.equal(flowRow(f[9]!).l7, 'HTTP response GET http://catalog/api/v1/products -> 200 (3 ms)');
  assert.equal(flowRow(f[9]!).port, 8080, 'a reply shows the server port');
  assert.equal(flowRow(f[0]!).policy, 'allowed by CiliumNetworkPolicy production/gw (egress)');
  assert.equal(flowRow(f[0]!).dropReason, undefined);
});

// ---------------------------------------------------------------- the API in-process

describe('the JSON API, in-process', () => {
  const store = new FlowStore();
  for (const f of fixtureFlows()) store.add(f);
  const api = new UiApi({ store });
  const get200 = async (url: string) => {
    const r = await api.request('GET', url);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { rows: { uuid: string; verdict: string; edge: string; source: string; flow: Flow }[] };
  };
  const bad = async (url: string, status: number, re: RegExp) => {
    const r = await api.request('GET', url);
    assert.equal(r.status, status, `${url}: ${JSON.stringify(r.body)}`);
    assert.match((r.body as { error: string }).error, re, url);
  };

  it('filters flows with hubble observe semantics: namespace, verdict, pod, port, protocol, --not-free', async () => {
    const uuids = async (q: string) => (await get200(`/api/flows?${q}`)).rows.map((r) => r.uuid);
    assert.equal((await uuids('')).length, 11);
    assert.equal((await uuids('namespace=production')).length, 10);
    assert.deepEqual(await uuids('namespace=production&verdict=DROPPED'), ['f-4', 'f-5']);
    assert.deepEqual(await uuids('namespace=production&pod=frontend'), ['f-3', 'f-6', 'f-7', 'f-8']);
    assert.deepEqual(await uuids('protocol=udp'), ['f-6']);
    assert.deepEqual(await uuids('to-port=443'), ['f-7']);
    assert.deepEqual(await uuids('verdict=DROPPED&verdict=FORWARDED&limit=2'), ['f-10', 'f-11']);
    assert.deepEqual(await uuids('namespace=data-pipeline'), ['f-11']);
    assert.deepEqual(await uuids('http-method=GET'), ['f-9', 'f-10']);
    assert.deepEqual(await uuids('uuid=f-7'), ['f-7']);
    const allow = encodeURIComponent(JSON.stringify({ destination_pod: ['kube-system/'] }));
    assert.deepEqual(await uuids(`allowlist=${allow}`), ['f-6']);
    const deny = encodeURIComponent(JSON.stringify({ verdict: ['FORWARDED'] }));
    assert.deepEqual(await uuids(`namespace=production&denylist=${deny}`), ['f-4', 'f-5']);
  });

  it('filters by map edge, map node and free text', async () => {
    const edge = encodeURIComponent('workload:production/api-gateway->workload:production/catalog');
    const rows = (await get200(`/api/flows?namespace=production&edge=${edge}`)).rows;
    assert.deepEqual(
      rows.map((r) => r.uuid),
      ['f-1', 'f-2', 'f-4', 'f-5', 'f-9', 'f-10'],
    );
    const dropped = (await get200(`/api/flows?edge=${edge}&verdict=DROPPED`)).rows;
    assert.deepEqual(
      dropped.map((r) => r.verdict),
      ['DROPPED', 'DROPPED'],
    );
    const node = encodeURIComponent('dns:kube-system/kube-dns');
    assert.deepEqual(
      (await get200(`/api/flows?node=${node}`)).rows.map((r) => r.uuid),
      ['f-6'],
    );
    assert.deepEqual(
      (await get200('/api/flows?q=default-deny')).rows.map((r) => r.uuid),
      ['f-4', 'f-5'],
    );
    assert.deepEqual(
      (await get200('/api/flows?q=EXTERNAL-PARTNER')).rows.map((r) => r.uuid),
      ['f-7'],
    );
    assert.equal((await get200('/api/flows?uuid=f-4')).rows[0]!.flow.drop_reason_desc, 'POLICY_DENIED');
  });

  it('serves the map with its layout, namespaces and status', async () => {
    const m = (await api.request('GET', '/api/map?namespace=production')).body as {
      nodes: { id: string }[];
      edges: { id: string; dropped: number }[];
      layout: { nodes: Record<string, unknown> };
    };
    assert.equal(m.nodes.length, 6);
    assert.deepEqual(Object.keys(m.layout.nodes).sort(), m.nodes.map((n) => n.id).sort());
    assert.equal(m.edges.filter((e) => e.dropped > 0).length, 1);
    const ns = (await api.request('GET', '/api/namespaces')).body as { namespaces: string[] };
    assert.deepEqual(ns.namespaces, ['data-pipeline', 'kube-system', 'production']);
    const st = (await api.request('GET', '/api/status')).body as { store: { seen: number }; relay: null };
    assert.equal(st.store.seen, 11);
    assert.equal(st.relay, null);
  });

  it('answers bad input with 400 and a message naming the parameter', async () => {
    await bad(
      '/api/flows?verdict=MAYBE',
      400,
      /query: verdict: invalid verdict value "MAYBE": expected one of FORWARDED/,
    );
    await bad('/api/flows?port=99999', 400, /port.*invalid port "99999"/);
    await bad('/api/flows?colour=red', 400, /query: colour: unknown parameter/);
    await bad('/api/flows?limit=0', 400, /query: limit: "0" is not a whole number from 1 to 5000/);
    await bad('/api/flows?limit=ten', 400, /limit/);
    await bad(
      '/api/flows?namespace=Not_A_Namespace',
      400,
      /query: namespace: "Not_A_Namespace" is not a namespace name/,
    );
    await bad('/api/flows?namespace=a&namespace=b', 400, /namespace: given more than once/);
    await bad('/api/flows?since=last-tuesday', 400, /query: since: "last-tuesday" is not a duration/);
    await bad('/api/flows?http-path=(', 400, /http-path.*\(/);
    await bad('/api/flows?label=a%20b%20c', 400, /label/);
    await bad('/api/flows?ip=10.0.0.300', 400, /ip.*not an IP/);
    await bad('/api/flows?edge=nonsense', 400, /query: edge: "nonsense" is not a map edge id/);
    await bad('/api/flows?drop-reason-desc=NOPE', 400, /drop-reason-desc/);
    await bad('/api/flows?allowlist=%7Bnope', 400, /allowlist.*not JSON/);
    await bad(
      `/api/flows?allowlist=${encodeURIComponent('{"dns_query":["("]}')}`,
      400,
      /allowlist.*dns_query/,
    );
    await bad('/api/map?verdict=DROPPED', 400, /query: verdict: unknown parameter \(map: namespace\)/);
    await bad('/api/status?x=1', 400, /takes no parameters/);
    await bad('/api/nothing', 404, /no such API/);
    const post = await api.request('POST', '/api/flows');
    assert.equal(post.status, 405);
    const stream = api.stream('/api/events?verdict=MAYBE');
    assert.ok(!('start' in stream) && stream.status === 400);
  });
});

// ---------------------------------------------------------------- the live stream

/** A browser that reads nothing: its socket is full after the first `hwm` bytes. */
class StalledBrowser extends Writable {
  received = 0;
  constructor(hwm: number) {
    super({ highWaterMark: hwm, decodeStrings: false });
  }
  override _write(chunk: string, _enc: BufferEncoding, _cb: () => void): void {
    this.received += chunk.length;
    // Never calls back: nothing more is consumed.
  }
}

/** A browser that reads everything, and keeps the events. */
class Browser extends Writable {
  text = '';
  constructor() {
    super({ decodeStrings: false });
  }
  override _write(chunk: string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk;
    cb();
  }
  events(name: string): unknown[] {
    return [...this.text.matchAll(new RegExp(`event: ${name}\\ndata: (.*)\\n\\n`, 'g'))].map((m) =>
      JSON.parse(m[1]!),
    );
  }
}

describe('the live stream', () => {
  it('sends the recent matching flows and the map, then new flows and map changes', async () => {
    const store = new FlowStore();
    const flows = fixtureFlows();
    for (const f of flows.slice(0, 5)) store.add(f);
    const q = parseFlowQuery(new URLSearchParams('namespace=production&verdict=DROPPED'));
    const s = new EventStream(store, q, { flushMs: 10, mapMs: 20 });
    const b = new Browser();
    s.start(b);
    try {
      const first = b.events('flows')[0] as { rows: { uuid: string }[]; reset: boolean };
      assert.deepEqual(
        first.rows.map((r) => r.uuid),
        ['f-4', 'f-5'],
      );
      assert.equal(first.reset, true);
      assert.equal((b.events('map')[0] as { edges: unknown[] }).edges.length, 2);
      store.add(tcp(frontend, catalog, { verdict: 'DROPPED', uuid: 'late-drop' }));
      store.add(tcp(frontend, catalog, { uuid: 'late-ok' }));
      await sleep(80);
      const later = b.events('flows').slice(1) as { rows: { uuid: string }[] }[];
      assert.deepEqual(
        later.flatMap((e) => e.rows.map((r) => r.uuid)),
        ['late-drop'],
      );
      const maps = b.events('map') as { edges: { id: string }[] }[];
      assert.ok(maps.length >= 2);
      assert.ok(
        maps.at(-1)!.edges.some((e) => e.id === 'workload:production/frontend->workload:production/catalog'),
      );
    } finally {
      s.close();
    }
  });

  it('a browser that does not read costs a bounded queue; what it missed is counted', async () => {
    const store = new FlowStore({ capacity: 100 });
    const q = parseFlowQuery(new URLSearchParams(''));
    const s = new EventStream(store, q, { flushMs: 5, mapMs: 5, maxPending: 50 });
    const b = new StalledBrowser(4096);
    s.start(b);
    try {
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 500; i++) store.add(tcp(pod(`p${i % 7}`), catalog, { uuid: `r${round}-${i}` }));
        await sleep(10);
      }
      assert.ok(s.pending <= 50, `pending ${s.pending}`);
      assert.ok(s.skipped >= 9_000, `skipped ${s.skipped}`);
      assert.ok(b.writableLength < 64 * 1024, `socket buffer ${b.writableLength}`);
      assert.ok(s.written < 128 * 1024, `written ${s.written}`);
    } finally {
      s.close();
    }
  });
});

// ---------------------------------------------------------------- the whole server, through the relay

function fetchText(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    get(url, { headers }, (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }),
      );
    }).on('error', reject);
  });
}

/** A GET with the path exactly as given (a URL string would be normalized first). */
function rawGet(port: number, path: string): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    get({ hostname: '127.0.0.1', port, path }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    }).on('error', reject);
  });
}

describe('hypha ui against a relay over an agent ring', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hyui-'));
  const ring = new FlowRing(1023);
  let agent: ObserverServer;
  let relay: ObserverServer;
  let ui: UiServer;

  before(async () => {
    for (const f of fixtureFlows())
      ring.writeFlow({ ...f, time: formatTimestamp(BigInt(Date.now()) * 1_000_000n) });
    agent = await startObserverServer({
      ring,
      nodeName: 'lab-worker',
      listen: [`unix://${join(dir, 'hubble.sock')}`],
    });
    relay = await startRelay({
      peers: [{ name: 'lab-worker', address: agent.addresses[0]! }],
      listen: ['127.0.0.1:0'],
      sortWindowMs: 50,
    });
    ui = await startUiServer({ relay: relay.addresses[0]!, port: 0 });
  });
  after(async () => {
    await ui?.close();
    await relay?.close();
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the static UI, and nothing outside it', async () => {
    const index = await fetchText(`${ui.url}/`);
    assert.equal(index.status, 200);
    assert.match(index.type, /text\/html/);
    assert.match(index.body, /<svg id="map"/);
    assert.match((await fetchText(`${ui.url}/app.js`)).type, /javascript/);
    for (const path of ['/%2e%2e/package.json', '/../package.json', '/..%2fpackage.json'])
      assert.equal((await rawGet(ui.port, path)).status, 400, path);
    assert.equal((await fetchText(`${ui.url}/nope.html`)).status, 404);
    const rebound = await fetchText(`${ui.url}/api/status`, { host: 'evil.example:12000' });
    assert.equal(rebound.status, 421, 'a foreign Host is refused (DNS rebinding)');
  });

  it('gets the relay flows, then live ones through the stream', async () => {
    let rows: { uuid: string }[] = [];
    for (let i = 0; i < 100 && rows.length < 11; i++) {
      rows = JSON.parse((await fetchText(`${ui.url}/api/flows`)).body).rows;
      if (rows.length < 11) await sleep(50);
    }
    assert.equal(rows.length, 11);
    const status = JSON.parse((await fetchText(`${ui.url}/api/status`)).body);
    assert.equal(status.relay.state, 'connected');
    assert.deepEqual(status.relay.nodes, [{ name: 'lab-worker', state: 'NODE_CONNECTED' }]);

    const bad = await fetchText(`${ui.url}/api/events?verdict=nope`);
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).error, /verdict/);

    const events: string[] = [];
    const req = get(`${ui.url}/api/events?namespace=production&verdict=DROPPED`, (res) => {
      assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
      res.setEncoding('utf8');
      res.on('data', (c: string) => events.push(c));
    });
    try {
      const text = () => events.join('');
      for (let i = 0; i < 100 && !text().includes('event: flows'); i++) await sleep(20);
      ring.writeFlow({
        ...tcp(frontend, catalog, {
          verdict: 'DROPPED',
          drop_reason_desc: 'POLICY_DENIED',
          drop_reason: 133,
        }),
        uuid: 'live-drop',
        time: formatTimestamp(BigInt(Date.now()) * 1_000_000n),
      });
      for (let i = 0; i < 150 && !text().includes('live-drop'); i++) await sleep(20);
      assert.match(text(), /"uuid":"live-drop"/);
      assert.match(text(), /event: map\ndata: \{"namespace":"production"/);
    } finally {
      req.destroy();
    }
  });

  it('a taken port is a clear error, not a crash', async () => {
    await assert.rejects(
      startUiServer({ relay: relay.addresses[0]!, port: ui.port }),
      /127\.0\.0\.1:\d+ is already in use/,
    );
  });
});
