/**
 * L7 flows: the proxies' events become Hubble L7 flows (fields, summaries, policy), are
 * stored and named by the agent's flow pipeline, filtered by `observe`'s HTTP/DNS flags,
 * printed as the hubble CLI prints them and sent on the wire with flow.proto's numbers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AgentFlows } from '../../src/agent/flows.js';
import { ValidationError } from '../../src/errors.js';
import { type GetFlowsResponsePB, observerClient, type PBObject } from '../../src/hubble/grpc/proto.js';
import { startObserverServer } from '../../src/hubble/grpc/server.js';
import {
  compileFilters,
  type Flow,
  FlowPrinter,
  type GetFlowsResponse,
  HubbleMetrics,
  type L7Event,
  parseObserveArgs,
  toProtoJSON,
  validateL7Event,
} from '../../src/hubble/index.js';
import { PolicyRepository } from '../../src/policy/index.js';
import { F_RESPONSE } from '../../src/proxy/http/events.js';
import { packet } from '../helpers/packet.js';
import { builder, event, WALL_MS } from './fixtures.js';

const CNP = { kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'catalog-l7-policy' };

/** frontend (10.0.1.5) asks catalog (10.0.2.7:8080); catalog's ingress policy sends it through the proxy. */
function httpRequest(o: Partial<L7Event> = {}): L7Event {
  return {
    time: WALL_MS + 0.5,
    kind: 'http',
    type: 'request',
    verdict: 'FORWARDED',
    trafficDirection: 'INGRESS',
    endpointId: 101,
    source: { ip: '10.0.1.5', port: 52342, identity: 1234 },
    destination: { ip: '10.0.2.7', port: 8080, identity: 5678 },
    http: {
      code: 0,
      method: 'GET',
      url: 'http://catalog:8080/api/v1/products',
      protocol: 'HTTP/1.1',
      headers: [{ key: 'X-Request-Id', value: 'r-1' }],
    },
    policy: CNP,
    ...o,
  };
}

function httpResponse(o: Partial<L7Event> = {}): L7Event {
  return httpRequest({
    time: WALL_MS + 4,
    type: 'response',
    source: { ip: '10.0.2.7', port: 8080, identity: 5678 },
    destination: { ip: '10.0.1.5', port: 52342, identity: 1234 },
    latencyNs: 3_500_000,
    http: {
      code: 200,
      method: 'GET',
      url: 'http://catalog:8080/api/v1/products',
      protocol: 'HTTP/1.1',
      headers: [],
    },
    ...o,
  });
}

/** catalog-xyz (endpoint 101) resolves the partner's API through the DNS proxy (egress). */
function dns(type: 'request' | 'response', o: Partial<L7Event> = {}): L7Event {
  const client = { ip: '10.0.2.7', port: 40000, identity: 5678 };
  const server = { ip: '10.0.9.10', port: 53, identity: 9000 };
  return {
    time: WALL_MS + (type === 'request' ? 1 : 2),
    kind: 'dns',
    type,
    verdict: 'FORWARDED',
    trafficDirection: 'EGRESS',
    endpointId: 101,
    source: type === 'request' ? client : server,
    destination: type === 'request' ? server : client,
    dns: {
      query: 'api.external-partner.com',
      ips: type === 'request' ? [] : ['203.0.113.10'],
      ttl: type === 'request' ? 0 : 30,
      qtypes: ['A'],
      rrtypes: type === 'request' ? [] : ['A'],
      rcode: 0,
    },
    policy: { kind: 'CiliumNetworkPolicy', namespace: 'data-pipeline', name: 'allow-external-partner' },
    ...o,
  };
}

const response = (flow: Flow): GetFlowsResponse => ({
  flow,
  node_name: flow.node_name ?? '',
  time: flow.time ?? '',
});

test('an HTTP request becomes an L7 flow with Hubble fields, names and the deciding policy', () => {
  const f = builder().buildL7(httpRequest());
  assert.equal(f.Type, 'L7');
  assert.deepEqual(f.event_type, { type: 129 });
  assert.equal(f.time, '2023-11-30T05:01:02.123500Z');
  assert.equal(f.verdict, 'FORWARDED');
  assert.equal(f.traffic_direction, 'INGRESS');
  assert.equal(f.is_reply, false);
  assert.deepEqual(f.IP, { source: '10.0.1.5', destination: '10.0.2.7', ipVersion: 'IPv4' });
  assert.deepEqual(f.l4, { TCP: { source_port: 52342, destination_port: 8080 } });
  // The remote side named by address, the local one by its endpoint.
  assert.equal(f.source?.pod_name, 'frontend-abc');
  assert.equal(f.destination?.ID, 101);
  assert.equal(f.destination?.pod_name, 'catalog-xyz');
  assert.deepEqual(f.destination?.workloads, [{ name: 'catalog', kind: 'Deployment' }]);
  assert.deepEqual(f.l7, {
    type: 'REQUEST',
    http: {
      method: 'GET',
      url: 'http://catalog:8080/api/v1/products',
      protocol: 'HTTP/1.1',
      headers: [{ key: 'X-Request-Id', value: 'r-1' }],
    },
  });
  assert.equal(f.Summary, 'HTTP/1.1 GET http://catalog:8080/api/v1/products');
  assert.deepEqual(
    f.ingress_allowed_by?.map((p) => [p.kind, p.namespace, p.name]),
    [['CiliumNetworkPolicy', 'production', 'catalog-l7-policy']],
  );
  assert.equal(f.egress_allowed_by, undefined);
  // JSON as hubble prints it: proto field names, declaration order, uint64 as strings.
  const json = JSON.parse(toProtoJSON('Flow', f)) as Record<string, unknown>;
  assert.deepEqual(json.l7, f.l7);
  assert.equal(json.is_reply, false);
});

test('an HTTP response is a reply with its status and latency; a denied request names the denying policy', () => {
  const b = builder();
  const r = b.buildL7(httpResponse());
  assert.equal(r.is_reply, true);
  assert.equal(r.reply, true);
  assert.deepEqual(r.l7?.type, 'RESPONSE');
  assert.equal(r.l7?.latency_ns, '3500000');
  assert.equal(r.l7?.http?.code, 200);
  assert.equal(r.Summary, 'HTTP/1.1 200 3ms (GET http://catalog:8080/api/v1/products)');
  // A response travels from the server: the local endpoint (ingress) is its source.
  assert.equal(r.source?.ID, 101);
  assert.equal(r.destination?.pod_name, 'frontend-abc');

  const denied = b.buildL7(
    httpRequest({
      verdict: 'DROPPED',
      reason: 'Access denied',
      http: {
        code: 0,
        method: 'POST',
        url: 'http://catalog:8080/api/v1/products',
        protocol: 'HTTP/1.1',
        headers: [],
      },
    }),
  );
  assert.equal(denied.verdict, 'DROPPED');
  assert.equal(denied.Summary, 'HTTP/1.1 POST http://catalog:8080/api/v1/products');
  assert.deepEqual(
    denied.ingress_denied_by?.map((p) => p.name),
    ['catalog-l7-policy'],
  );
  assert.equal(denied.ingress_allowed_by, undefined);

  const broken = b.buildL7(
    httpRequest({ verdict: 'ERROR', http: undefined, reason: 'malformed request line' }),
  );
  assert.equal(broken.Summary, 'malformed request line');
  assert.equal(broken.ingress_allowed_by, undefined);
  assert.equal(broken.ingress_denied_by, undefined);
});

test("DNS queries and answers have Hubble's record and summaries", () => {
  const b = builder();
  const q = b.buildL7(dns('request'));
  assert.deepEqual(q.l7, {
    type: 'REQUEST',
    dns: { query: 'api.external-partner.com.', observation_source: 'proxy', qtypes: ['A'] },
  });
  assert.deepEqual(q.l4, { UDP: { source_port: 40000, destination_port: 53 } });
  assert.equal(q.Summary, 'DNS Query api.external-partner.com. A');
  assert.equal(q.source?.ID, 101, 'egress: the local endpoint sent the query');
  assert.equal(q.egress_allowed_by?.[0]?.name, 'allow-external-partner');

  const a = b.buildL7(dns('response'));
  assert.deepEqual(a.l7?.dns, {
    query: 'api.external-partner.com.',
    ips: ['203.0.113.10'],
    ttl: 30,
    observation_source: 'proxy',
    qtypes: ['A'],
    rrtypes: ['A'],
  });
  assert.equal(a.Summary, 'DNS Answer "203.0.113.10" TTL: 30 (Proxy api.external-partner.com. A)');
  assert.equal(a.destination?.ID, 101);
  const nx = b.buildL7(
    dns('response', {
      dns: { query: 'nope.example.', ips: [], ttl: 0, qtypes: ['AAAA'], rrtypes: [], rcode: 3 },
    }),
  );
  assert.equal(nx.l7?.dns?.rcode, 3);
  assert.equal(nx.Summary, 'DNS Answer RCode: Non-Existent Domain TTL: 0 (Proxy nope.example. AAAA)');
});

test('a malformed event is rejected naming the field', () => {
  const bad: [Partial<L7Event> | Record<string, unknown>, RegExp][] = [
    [{ kind: 'grpc' }, /kind: "grpc" is not one of http, dns/],
    [{ source: { ip: '10.0.1.999', port: 1, identity: 1 } }, /source\.ip: "10\.0\.1\.999" is not an IP/],
    [{ destination: { ip: '10.0.2.7', port: 70000, identity: 1 } }, /destination\.port: 70000/],
    [{ time: Number.NaN }, /time: NaN/],
    [{ http: undefined }, /http: a forwarded http request must carry its http record/],
    [
      { dns: { query: 'x', ips: [], ttl: 0, qtypes: [], rrtypes: [], rcode: 0 } },
      /dns: set on an http event/,
    ],
    [{ policy: { kind: '', namespace: '', name: 'x' } }, /policy: needs a kind and a name/],
  ];
  for (const [o, re] of bad) {
    assert.throws(
      () => validateL7Event(httpRequest(o as Partial<L7Event>)),
      (err: Error) => err instanceof ValidationError && re.test(err.message),
      re.source,
    );
  }
  assert.doesNotThrow(() => validateL7Event(httpRequest()));
});

function agentFlows(): AgentFlows {
  return new AgentFlows({
    nodeName: 'kind-worker',
    repo: new PolicyRepository(),
    endpoints: () => [
      {
        id: 101,
        ip: '10.0.2.7',
        identity: 5678,
        podNamespace: 'production',
        podName: 'catalog-7d9f8b6c5d-x2x4q',
        labels: { app: 'catalog' },
        hostIfindex: 7,
        hostIfname: 'lxc101',
      },
    ],
    remote: (ip) =>
      ip === '10.0.1.5' ? { identity: 1234, namespace: 'production', podName: 'frontend-abc' } : undefined,
    service: () => undefined,
  });
}

test('packed HTTP events from the proxy: the same flows, made when read; bad ones counted', () => {
  const packed = (flags: number, code: number, latency: number): unknown[] => [
    1_700_000_000_123,
    flags,
    101,
    flags & F_RESPONSE ? '10.0.2.7' : '10.0.1.5',
    flags & F_RESPONSE ? 8080 : 40000,
    flags & F_RESPONSE ? 5678 : 1234,
    flags & F_RESPONSE ? '10.0.1.5' : '10.0.2.7',
    flags & F_RESPONSE ? 40000 : 8080,
    flags & F_RESPONSE ? 1234 : 5678,
    code,
    'GET',
    'http://catalog:8080/api/v1/products',
    'HTTP/1.1',
    latency,
    'CiliumNetworkPolicy/production/catalog-l7-policy',
    '',
    'host\ncatalog:8080',
  ];
  const lazy = agentFlows();
  const eager = agentFlows();
  eager.metrics = new HubbleMetrics();
  for (const p of [packed(0, 0, -1), packed(F_RESPONSE, 200, 1_500_000)]) {
    lazy.addPacked(p);
    eager.addPacked(p);
  }
  const without = (f: Flow) => ({ ...f, uuid: '' });
  for (const i of [0, 1]) {
    const a = lazy.ring.at(i)!.event;
    const b = eager.ring.at(i)!.event;
    assert.ok('flow' in a && 'flow' in b);
    assert.deepEqual(without(a.flow), without(b.flow));
    assert.equal(a.flow, a.flow, 'made once, then kept (one UUID)');
  }
  const req = (lazy.ring.at(0)!.event as { flow: Flow }).flow;
  assert.equal(req.source?.pod_name, 'frontend-abc');
  assert.equal(req.destination?.pod_name, 'catalog-7d9f8b6c5d-x2x4q');
  assert.equal(req.l7?.http?.url, 'http://catalog:8080/api/v1/products');
  assert.equal(req.ingress_allowed_by?.[0]?.name, 'catalog-l7-policy');
  assert.equal((lazy.ring.at(1)!.event as { flow: Flow }).flow.l7?.latency_ns, '1500000');
  assert.match(eager.metrics.render(), /hubble_http_requests_total\{[^}]*\} 1/);

  for (const bad of [
    'nope',
    [1],
    ...['10.0.1', '10.0.1.5.6', '10.0.01.5', '256.0.1.5', '10..1.5', ' 10.0.1.5', ''].map((ip) =>
      packed(0, 0, -1).map((v, i) => (i === 3 ? ip : v)),
    ),
    packed(0, 0, -1).map((v, i) => (i === 14 ? 'CiliumNetworkPolicy' : v)),
    packed(0, 0, -1).map((v, i) => (i === 4 ? 70000 : v)),
    packed(0, 0, -1).map((v, i) => (i === 9 ? 1000 : v)),
    packed(0, 0, -1).map((v, i) => (i === 16 ? null : v)),
  ])
    lazy.addPacked(bad);
  assert.equal(lazy.ring.stats.seenFlows, 2, 'nothing bad is stored');
  assert.equal(lazy.l7Errors, 13);
  assert.match(lazy.lastL7Error ?? '', /headers null/);
});

test('the agent stores L7 flows, counts bad events, and learns names from DNS answers', () => {
  const flows = agentFlows();
  flows.metrics = new HubbleMetrics();
  flows.addL7(httpRequest());
  flows.addL7(httpResponse());
  flows.addL7(dns('request'));
  flows.addL7(dns('response'));
  flows.addL7(httpRequest({ endpointId: -1 }));
  assert.equal(flows.ring.stats.seenFlows, 4);
  assert.equal(flows.l7Errors, 1);
  assert.match(flows.lastL7Error ?? '', /L7Event: endpointId: -1/);
  const stored = [...Array(4).keys()].map((i) => {
    const e = flows.ring.at(i)!.event;
    assert.ok('flow' in e);
    return e.flow;
  });
  assert.equal(stored[0]?.destination?.pod_name, 'catalog-7d9f8b6c5d-x2x4q');
  assert.deepEqual(stored[0]?.destination?.workloads, [{ name: 'catalog', kind: 'Deployment' }]);
  assert.equal(stored[0]?.source?.pod_name, 'frontend-abc');
  assert.equal(stored[0]?.node_name, 'kind-worker');

  // A later TCP flow from catalog to the answered address carries the name, so --fqdn finds it.
  flows.add(
    event({
      type: 4,
      subtype: 5,
      source: 101,
      direction: 1,
      src_identity: 5678,
      dst_identity: 2,
      packet: packet({
        src: '10.0.2.7',
        dst: '203.0.113.10',
        proto: 'tcp',
        sport: 41000,
        dport: 443,
        flags: 2,
      }),
    }),
  );
  const tcp = flows.ring.at(4)!.event;
  assert.ok('flow' in tcp);
  assert.deepEqual(tcp.flow.destination_names, ['api.external-partner.com']);
  const fqdn = compileFilters(parseObserveArgs(['--fqdn', 'api.external-partner.com']).whitelist);
  assert.equal(fqdn(tcp.flow), true);
  assert.equal(fqdn(stored[0]!), false);
  assert.equal(
    compileFilters(parseObserveArgs(['--fqdn', '*.external-partner.com']).whitelist)(tcp.flow),
    true,
  );

  const text = flows.metrics.render();
  assert.match(
    text,
    /^hubble_http_requests_total\{method="GET",protocol="HTTP\/1.1",reporter="server"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_http_responses_total\{method="GET",protocol="HTTP\/1.1",reporter="server",status="200"\} 1$/m,
  );
  assert.match(text, /^hubble_dns_queries_total\{ips_returned="0",qtypes="A",rcode=""\} 1$/m);
  assert.match(text, /^hubble_dns_responses_total\{ips_returned="1",qtypes="A",rcode="No Error"\} 1$/m);
  assert.match(
    text,
    /^hubble_flows_processed_total\{protocol="HTTP",subtype="HTTP",type="L7",verdict="FORWARDED"\} 2$/m,
  );
});

test("observe's --type l7, --http-method, --http-path, --http-status select L7 flows", () => {
  const b = builder();
  const flows = [
    b.buildL7(httpRequest()),
    b.buildL7(httpResponse()),
    b.buildL7(
      httpResponse({
        http: {
          code: 403,
          method: 'POST',
          url: 'http://catalog:8080/api/v1/products',
          protocol: 'HTTP/1.1',
          headers: [],
        },
      }),
    ),
    b.buildL7(dns('request')),
    b.build(event({})),
  ];
  const pick = (...argv: string[]) => {
    const a = parseObserveArgs(argv);
    const p = compileFilters(a.whitelist, a.blacklist);
    return flows.flatMap((f, i) => (p(f) ? [i] : []));
  };
  assert.deepEqual(pick('--type', 'l7'), [0, 1, 2, 3]);
  assert.deepEqual(pick('--http-method', 'get'), [0, 1]);
  assert.deepEqual(pick('--http-method', 'POST'), [2]);
  assert.deepEqual(pick('--http-path', '^/api/v1/prod'), [0, 1, 2]);
  assert.deepEqual(pick('--http-status', '403'), [2]);
  assert.deepEqual(pick('--http-status', '2+'), [1]);
  assert.deepEqual(pick('--type', 'l7', '--http-status', '4+'), [2]);
  assert.deepEqual(pick('--protocol', 'dns'), [3]);
  assert.deepEqual(pick('--type', 'l7', '--not', '--protocol', 'http'), [3]);
  assert.deepEqual(pick('--verdict', 'FORWARDED', '--type', 'l7', '--to-pod', 'production/catalog'), [0]);
});

test('printers show L7 flows as hubble does: compact, dict, table, json', () => {
  const b = builder();
  const req = response(b.buildL7(httpRequest()));
  const res = response(b.buildL7(httpResponse()));
  const q = response(b.buildL7(dns('request')));
  const compact = new FlowPrinter();
  assert.equal(
    compact.write(req),
    'Nov 30 05:01:02.123: production/frontend-abc:52342 (ID:1234) -> production/catalog-xyz:8080 (ID:5678) http-request FORWARDED (HTTP/1.1 GET http://catalog:8080/api/v1/products)\n',
  );
  assert.equal(
    compact.write(res),
    'Nov 30 05:01:02.127: production/frontend-abc:52342 (ID:1234) <- production/catalog-xyz:8080 (ID:5678) http-response FORWARDED (HTTP/1.1 200 3ms (GET http://catalog:8080/api/v1/products))\n',
  );
  assert.equal(
    compact.write(q),
    'Nov 30 05:01:02.124: production/catalog-xyz:40000 (ID:5678) -> 10.0.9.10:53 (ID:9000) dns-request proxy FORWARDED (DNS Query api.external-partner.com. A)\n',
  );
  const dict = new FlowPrinter({ output: 'dict' });
  assert.equal(
    dict.write(req),
    [
      '  TIMESTAMP: Nov 30 05:01:02.123',
      '     SOURCE: production/frontend-abc:52342',
      'DESTINATION: production/catalog-xyz:8080',
      '       TYPE: http-request',
      '    VERDICT: FORWARDED',
      '    SUMMARY: HTTP/1.1 GET http://catalog:8080/api/v1/products',
      '',
    ].join('\n'),
  );
  const table = new FlowPrinter({ output: 'table' });
  table.write(req);
  table.write(q);
  const rows = table.flush().split('\n');
  assert.match(rows[0] ?? '', /^TIMESTAMP +SOURCE +DESTINATION +TYPE +VERDICT +SUMMARY$/);
  assert.match(rows[2] ?? '', /dns-request proxy +FORWARDED +DNS Query api\.external-partner\.com\. A$/);
  const json = JSON.parse(new FlowPrinter({ output: 'json' }).write(res)) as {
    flow: Record<string, unknown>;
  };
  assert.deepEqual(json.flow.l7, {
    type: 'RESPONSE',
    latency_ns: '3500000',
    http: { code: 200, method: 'GET', url: 'http://catalog:8080/api/v1/products', protocol: 'HTTP/1.1' },
  });
  assert.equal(json.flow.Type, 'L7');
  assert.deepEqual(json.flow.event_type, { type: 129 });
  assert.equal(json.flow.is_reply, true);
});

test("L7 flows go over gRPC with flow.proto's l7 fields", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hypha-l7-'));
  const flows = agentFlows();
  flows.addL7(httpRequest());
  flows.addL7(httpResponse());
  flows.addL7(dns('response'));
  const address = `unix://${join(dir, 'hubble.sock')}`;
  const server = await startObserverServer({ ring: flows.ring, nodeName: 'kind-worker', listen: [address] });
  const client = observerClient(address);
  try {
    const got = await new Promise<GetFlowsResponsePB[]>((resolve, reject) => {
      const out: GetFlowsResponsePB[] = [];
      const s = client.GetFlows({ whitelist: [{ event_type: [{ type: 129 }], http_method: ['GET'] }] });
      s.on('data', (r: GetFlowsResponsePB) => out.push(r));
      s.on('error', reject);
      s.on('end', () => resolve(out));
    });
    assert.equal(got.length, 2);
    const res = got[1]!.flow!;
    assert.equal(res.Type, 'L7');
    const l7 = res.l7 as PBObject;
    assert.equal(l7.type, 'RESPONSE');
    assert.equal(l7.latency_ns, '3500000');
    assert.deepEqual(l7.http, {
      code: 200,
      method: 'GET',
      url: 'http://catalog:8080/api/v1/products',
      protocol: 'HTTP/1.1',
    });
    assert.deepEqual(res.is_reply, { value: true });
    const dnsOnly = await new Promise<GetFlowsResponsePB[]>((resolve, reject) => {
      const out: GetFlowsResponsePB[] = [];
      const s = client.GetFlows({ whitelist: [{ dns_query: ['external-partner'] }] });
      s.on('data', (r: GetFlowsResponsePB) => out.push(r));
      s.on('error', reject);
      s.on('end', () => resolve(out));
    });
    assert.equal(dnsOnly.length, 1);
    assert.deepEqual((dnsOnly[0]!.flow!.l7 as PBObject).dns, {
      query: 'api.external-partner.com.',
      ips: ['203.0.113.10'],
      ttl: 30,
      observation_source: 'proxy',
      qtypes: ['A'],
      rrtypes: ['A'],
    });
  } finally {
    client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
