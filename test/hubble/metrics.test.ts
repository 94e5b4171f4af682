/** Hubble's metrics from flows: names, labels, options as Hubble parses them, the exposition text. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ValidationError } from '../../src/errors.js';
import {
  type Flow,
  FlowRing,
  HubbleMetrics,
  parseMetricsConfig,
  splitMetricsFlag,
} from '../../src/hubble/index.js';

const frontend = {
  identity: 1234,
  namespace: 'production',
  pod_name: 'frontend-7d9f8b6c5d-x2x4q',
  labels: ['k8s:app=frontend', 'k8s:io.kubernetes.pod.namespace=production'],
  workloads: [{ name: 'frontend', kind: 'Deployment' }],
};
const catalog = {
  identity: 5678,
  namespace: 'production',
  pod_name: 'catalog-5b8d7c9f4-abcde',
  labels: ['k8s:app.kubernetes.io/name=catalog', 'k8s:io.kubernetes.pod.namespace=production'],
  workloads: [{ name: 'catalog', kind: 'Deployment' }],
};
const world = { identity: 2, labels: ['reserved:world'] };

const drop: Flow = {
  verdict: 'DROPPED',
  drop_reason_desc: 'POLICY_DENIED',
  IP: { source: '10.244.1.2', destination: '10.244.2.3', ipVersion: 'IPv4' },
  l4: { TCP: { source_port: 40000, destination_port: 8080, flags: { SYN: true } } },
  source: frontend,
  destination: catalog,
  event_type: { type: 1, sub_type: 133 },
  traffic_direction: 'INGRESS',
};
const synAck: Flow = {
  verdict: 'FORWARDED',
  IP: { source: '10.244.2.3', destination: '10.244.1.2', ipVersion: 'IPv4' },
  l4: { TCP: { source_port: 8080, destination_port: 40000, flags: { SYN: true, ACK: true } } },
  source: catalog,
  destination: frontend,
  event_type: { type: 4, sub_type: 5 },
  is_reply: true,
};
const dnsRequest: Flow = {
  verdict: 'FORWARDED',
  IP: { source: '10.244.1.2', destination: '10.96.0.10', ipVersion: 'IPv4' },
  l4: { UDP: { source_port: 40000, destination_port: 53 } },
  source: frontend,
  destination: world,
  event_type: { type: 4, sub_type: 0 },
  is_reply: false,
};
const ping: Flow = {
  verdict: 'FORWARDED',
  IP: { source: '10.244.1.2', destination: '203.0.113.10', ipVersion: 'IPv4' },
  l4: { ICMPv4: { type: 8 } },
  source: frontend,
  destination: world,
  event_type: { type: 4, sub_type: 5 },
  is_reply: false,
};
const unreachable: Flow = {
  verdict: 'FORWARDED',
  IP: { source: 'fd00::1', destination: 'fd00::2', ipVersion: 'IPv6' },
  l4: { ICMPv6: { type: 1, code: 4 } },
  event_type: { type: 4, sub_type: 0 },
};

test("the tutorial's metrics, with Hubble's names and labels (sorted as client_golang prints them)", () => {
  const m = new HubbleMetrics(
    parseMetricsConfig(['dns', 'drop', 'tcp', 'flow', 'port-distribution', 'icmp', 'http']),
  );
  for (const f of [drop, drop, synAck, dnsRequest, ping, unreachable]) m.add(f);
  m.lost('PERF_EVENT_RING_BUFFER', 3);
  const text = m.render();
  assert.match(text, /^hubble_drop_total\{protocol="TCP",reason="POLICY_DENIED"\} 2$/m);
  assert.match(text, /^hubble_tcp_flags_total\{family="IPv4",flag="SYN-ACK"\} 1$/m);
  assert.doesNotMatch(text, /flag="SYN"\}/, 'dropped SYNs are not counted as TCP flags');
  assert.match(text, /^hubble_port_distribution_total\{port="53",protocol="UDP"\} 1$/m);
  assert.match(text, /^hubble_port_distribution_total\{port="0",protocol="ICMPv4"\} 1$/m);
  assert.doesNotMatch(text, /port="40000"/, 'replies are not counted');
  assert.match(text, /^hubble_icmp_total\{family="IPv4",type="EchoRequest"\} 1$/m);
  assert.match(
    text,
    /^hubble_icmp_total\{family="IPv6",type="DestinationUnreachable\(PortUnreachable\)"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_flows_processed_total\{protocol="TCP",subtype="from-endpoint",type="Trace",verdict="FORWARDED"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_flows_processed_total\{protocol="TCP",subtype="",type="Drop",verdict="DROPPED"\} 2$/m,
  );
  assert.match(
    text,
    /^hubble_flows_processed_total\{protocol="UDP",subtype="to-endpoint",type="Trace",verdict="FORWARDED"\} 1$/m,
  );
  assert.match(text, /^hubble_lost_events_total\{source="perf_event_ring_buffer"\} 3$/m);
  assert.match(text, /^hubble_lost_events_total\{source="hubble_ring_buffer"\} 0$/m);
  assert.match(text, /^# TYPE hubble_drop_total counter$/m);
  assert.match(text, /^# HELP hubble_http_requests_total Count of HTTP requests$/m);
  assert.match(text, /^# TYPE hubble_http_request_duration_seconds histogram$/m);
  assert.match(text, /^# TYPE hubble_dns_response_types_total counter$/m);
  // One HELP/TYPE per family.
  assert.equal(text.match(/^# TYPE hubble_lost_events_total/gm)?.length, 1);
});

test('only what is enabled is counted', () => {
  const m = new HubbleMetrics(parseMetricsConfig(['drop:sourceContext=pod']));
  m.add(drop);
  m.add(ping);
  const text = m.render();
  assert.match(
    text,
    /^hubble_drop_total\{protocol="TCP",reason="POLICY_DENIED",source="production\/frontend-7d9f8b6c5d-x2x4q"\} 1$/m,
  );
  assert.doesNotMatch(text, /hubble_icmp_total|hubble_tcp_flags_total|hubble_flows_processed_total/);
});

test('sourceContext and destinationContext: the first non-empty identifier of each', () => {
  const m = new HubbleMetrics(
    parseMetricsConfig([
      'flow:sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity',
      'icmp:sourceContext=app;destinationContext=dns|ip',
      'tcp:sourceContext=namespace;destinationContext=workload',
    ]),
  );
  m.add({ ...ping, destination_names: ['api.external-partner.com'] });
  m.add(ping);
  m.add(synAck);
  const text = m.render();
  assert.match(
    text,
    /^hubble_flows_processed_total\{destination="reserved:world",protocol="ICMPv4",source="frontend",subtype="from-endpoint",type="Trace",verdict="FORWARDED"\} 2$/m,
  );
  assert.match(
    text,
    /^hubble_icmp_total\{destination="api.external-partner.com",family="IPv4",source="frontend",type="EchoRequest"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_icmp_total\{destination="203.0.113.10",family="IPv4",source="frontend",type="EchoRequest"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_tcp_flags_total\{destination="production\/frontend",family="IPv4",flag="SYN-ACK",source="production"\} 1$/m,
  );
});

test('every context identifier, and per-direction contexts', () => {
  const ids: [string, string][] = [
    ['identity', 'k8s:app=frontend,k8s:io.kubernetes.pod.namespace=production'],
    ['namespace', 'production'],
    ['pod', 'production/frontend-7d9f8b6c5d-x2x4q'],
    ['pod-short', 'production/frontend'],
    ['pod-name', 'frontend-7d9f8b6c5d-x2x4q'],
    ['ip', '10.244.1.2'],
    ['workload', 'production/frontend'],
    ['workload-name', 'frontend'],
    ['app', 'frontend'],
  ];
  for (const [id, want] of ids) {
    const m = new HubbleMetrics(parseMetricsConfig([`drop:sourceContext=${id}`]));
    m.add(drop);
    const got = /^hubble_drop_total\{.*source="([^"]*)"/m.exec(m.render())?.[1];
    assert.equal(got, want, id);
  }
  const m = new HubbleMetrics(
    parseMetricsConfig(['drop:sourceContext=namespace;sourceIngressContext=pod-name;destinationContext=app']),
  );
  m.add(drop); // ingress
  m.add({ ...drop, traffic_direction: 'EGRESS' });
  const text = m.render();
  assert.match(
    text,
    /destination="catalog",protocol="TCP",reason="POLICY_DENIED",source="frontend-7d9f8b6c5d-x2x4q"\} 1$/m,
  );
  assert.match(text, /destination="catalog",protocol="TCP",reason="POLICY_DENIED",source="production"\} 1$/m);
});

test('labelsContext adds its labels, in any order given', () => {
  const m = new HubbleMetrics(
    parseMetricsConfig([
      'drop:labelsContext=traffic_direction,source_namespace,source_workload,destination_namespace,destination_workload,destination_app,source_ip',
    ]),
  );
  m.add(drop);
  assert.match(
    m.render(),
    /^hubble_drop_total\{destination_app="catalog",destination_namespace="production",destination_workload="catalog",protocol="TCP",reason="POLICY_DENIED",source_ip="10.244.1.2",source_namespace="production",source_workload="frontend",traffic_direction="ingress"\} 1$/m,
  );
});

test('bad entries are rejected, naming the entry and what is wrong', () => {
  const bad: [string[], RegExp][] = [
    [['bogus'], /hubble.metrics.enabled\[0\] "bogus": name: unknown metric "bogus" \(known: dns, drop/],
    [
      ['flow:sourceContext=pods'],
      /\[0\] "flow:sourceContext=pods": sourceContext: unknown context "pods" \(known: identity/,
    ],
    [['drop', 'flow:destinationContext=ip|nope'], /\[1\] .*destinationContext: unknown context "nope"/],
    [['drop:labelsContext=source_namespace,source_color'], /labelsContext: unknown label "source_color"/],
    [['tcp:query'], /"tcp:query": query: not an option of "tcp"/],
    [['dns', 'dns:query'], /\[1\] "dns:query": name: "dns" is enabled twice/],
    [['http', 'httpV2'], /httpV2: conflicts with "http"/],
  ];
  for (const [entries, re] of bad)
    assert.throws(
      () => parseMetricsConfig(entries),
      (err: Error) => err instanceof ValidationError && re.test(err.message),
      `${entries.join(' ')} -> ${re.source}`,
    );
  assert.deepEqual(parseMetricsConfig(['dns:query;ignoreAAAA', 'httpV2:exemplars=true']), [
    { name: 'dns', options: { query: '', ignoreAAAA: '' } },
    { name: 'httpV2', options: { exemplars: 'true' } },
  ]);
});

test('a comma-joined flag keeps labelsContext lists whole', () => {
  assert.deepEqual(
    splitMetricsFlag('dns,drop:labelsContext=source_namespace,source_workload;sourceContext=pod,flow,tcp'),
    ['dns', 'drop:labelsContext=source_namespace,source_workload;sourceContext=pod', 'flow', 'tcp'],
  );
});

const l7 = (o: Partial<Flow>): Flow => ({
  verdict: 'FORWARDED',
  Type: 'L7',
  event_type: { type: 129 },
  IP: { source: '10.244.1.2', destination: '10.244.2.3', ipVersion: 'IPv4' },
  source: frontend,
  destination: catalog,
  ...o,
});

test('HTTP metrics: requests, responses and durations by method, protocol, status and reporter', () => {
  const m = new HubbleMetrics(parseMetricsConfig(['http:sourceContext=workload-name']));
  const http = { method: 'GET', url: 'http://catalog:8080/', protocol: 'HTTP/1.1' };
  m.add(l7({ traffic_direction: 'EGRESS', is_reply: false, l7: { type: 'REQUEST', http } }));
  m.add(
    l7({
      traffic_direction: 'EGRESS',
      is_reply: true,
      source: catalog,
      destination: frontend,
      l7: { type: 'RESPONSE', latency_ns: '30000000', http: { ...http, code: 200 } },
    }),
  );
  m.add(
    l7({
      traffic_direction: 'INGRESS',
      is_reply: true,
      l7: { type: 'RESPONSE', latency_ns: '2000000000', http: { ...http, code: 403 } },
    }),
  );
  const text = m.render();
  assert.match(
    text,
    /^hubble_http_requests_total\{method="GET",protocol="HTTP\/1.1",reporter="client",source="frontend"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_http_responses_total\{method="GET",protocol="HTTP\/1.1",reporter="client",source="catalog",status="200"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_http_responses_total\{method="GET",protocol="HTTP\/1.1",reporter="server",source="frontend",status="403"\} 1$/m,
  );
  // 30 ms falls in the 0.05 bucket and every one after it.
  assert.match(
    text,
    /^hubble_http_request_duration_seconds_bucket\{method="GET",reporter="client",source="catalog",le="0.025"\} 0$/m,
  );
  assert.match(
    text,
    /^hubble_http_request_duration_seconds_bucket\{method="GET",reporter="client",source="catalog",le="0.05"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_http_request_duration_seconds_bucket\{method="GET",reporter="client",source="catalog",le="\+Inf"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_http_request_duration_seconds_sum\{method="GET",reporter="server",source="frontend"\} 2$/m,
  );
  assert.match(
    text,
    /^hubble_http_request_duration_seconds_count\{method="GET",reporter="server",source="frontend"\} 1$/m,
  );

  // httpV2 counts exchanges at the response, labelled from the request's point of view.
  const v2 = new HubbleMetrics(parseMetricsConfig(['httpV2:sourceContext=workload-name']));
  v2.add(l7({ traffic_direction: 'EGRESS', l7: { type: 'REQUEST', http } }));
  v2.add(
    l7({
      traffic_direction: 'EGRESS',
      source: catalog,
      destination: frontend,
      l7: { type: 'RESPONSE', latency_ns: '1000', http: { ...http, code: 200 } },
    }),
  );
  const t2 = v2.render();
  assert.match(
    t2,
    /^hubble_http_requests_total\{method="GET",protocol="HTTP\/1.1",reporter="client",source="frontend",status="200"\} 1$/m,
  );
  assert.doesNotMatch(t2, /hubble_http_responses_total/);
});

test('DNS metrics: queries, responses with their rcode, response types; query and ignoreAAAA options', () => {
  const m = new HubbleMetrics(parseMetricsConfig(['dns:query;ignoreAAAA']));
  const q = { query: 'api.external-partner.com.', qtypes: ['A'] };
  m.add(l7({ is_reply: false, l7: { type: 'REQUEST', dns: q } }));
  m.add(l7({ is_reply: false, l7: { type: 'REQUEST', dns: { ...q, qtypes: ['AAAA'] } } }));
  m.add(
    l7({
      verdict: 'DROPPED',
      is_reply: false,
      l7: { type: 'REQUEST', dns: { query: 'evil.example.', qtypes: ['A'] } },
    }),
  );
  m.add(
    l7({
      is_reply: true,
      l7: { type: 'RESPONSE', dns: { ...q, ips: ['203.0.113.10', '203.0.113.11'], rrtypes: ['A', 'A'] } },
    }),
  );
  m.add(
    l7({
      is_reply: true,
      l7: { type: 'RESPONSE', dns: { query: 'nope.example.', qtypes: ['A'], rcode: 3 } },
    }),
  );
  const text = m.render();
  assert.match(
    text,
    /^hubble_dns_queries_total\{ips_returned="0",qtypes="A",query="api.external-partner.com.",rcode=""\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_dns_queries_total\{ips_returned="0",qtypes="A",query="evil.example.",rcode="Policy denied"\} 1$/m,
  );
  assert.doesNotMatch(text, /qtypes="AAAA"/);
  assert.match(
    text,
    /^hubble_dns_responses_total\{ips_returned="2",qtypes="A",query="api.external-partner.com.",rcode="No Error"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_dns_responses_total\{ips_returned="0",qtypes="A",query="nope.example.",rcode="Non-Existent Domain"\} 1$/m,
  );
  assert.match(
    text,
    /^hubble_dns_response_types_total\{qtypes="A",query="api.external-partner.com.",type="A"\} 2$/m,
  );
});

test("lost events come from the ring's counts, by source in lower case", () => {
  const ring = new FlowRing(3);
  const m = new HubbleMetrics(parseMetricsConfig(['drop']));
  m.lostSource = () => ring.lost;
  ring.reportLost('OBSERVER_EVENTS_QUEUE', 5);
  assert.match(m.render(), /^hubble_lost_events_total\{source="observer_events_queue"\} 5$/m);
});
