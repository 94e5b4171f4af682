import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventType, EventVerdict } from '../../src/datapath/constants.js';
import {
  decodePacket,
  FlowBuilder,
  formatTimestamp,
  labelStrings,
  parseTimestamp,
  toProtoJSON,
} from '../../src/hubble/index.js';
import { packet, reply } from '../helpers/packet.js';
import { builder, event, SYN } from './fixtures.js';

const frontend = {
  identity: 1234,
  cluster_name: 'default',
  namespace: 'production',
  labels: [
    'k8s:app=frontend',
    'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=production',
    'k8s:io.cilium.k8s.policy.cluster=default',
    'k8s:io.cilium.k8s.policy.serviceaccount=default',
    'k8s:io.kubernetes.pod.namespace=production',
  ],
  pod_name: 'frontend-abc',
  workloads: [{ name: 'frontend', kind: 'Deployment' }],
};
const catalog = {
  ID: 101,
  identity: 5678,
  cluster_name: 'default',
  namespace: 'production',
  labels: [
    'k8s:app=catalog',
    'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=production',
    'k8s:io.cilium.k8s.policy.cluster=default',
    'k8s:io.cilium.k8s.policy.serviceaccount=default',
    'k8s:io.kubernetes.pod.namespace=production',
  ],
  pod_name: 'catalog-xyz',
  workloads: [{ name: 'catalog', kind: 'Deployment' }],
};
const ethernet = { source: '02:00:00:00:00:01', destination: '02:00:00:00:00:02' };

test('a default deny at ingress is a DROPPED policy verdict naming the policies that select the endpoint', () => {
  const flow = builder().build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Dropped }));
  const want = {
    time: '2023-11-30T05:01:02.123Z',
    uuid: 'uuid-1',
    verdict: 'DROPPED',
    drop_reason: 133,
    ethernet,
    IP: { source: '10.0.1.5', destination: '10.0.2.7', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 52342, destination_port: 8080, flags: { SYN: true } } },
    source: frontend,
    destination: catalog,
    Type: 'L3_L4',
    node_name: 'kind-worker',
    event_type: { type: 5 },
    traffic_direction: 'INGRESS',
    drop_reason_desc: 'POLICY_DENIED',
    Summary: 'TCP Flags: SYN',
    ingress_denied_by: [
      {
        name: 'catalog-allow-frontend',
        namespace: 'production',
        labels: [
          'k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy',
          'k8s:io.cilium.k8s.policy.name=catalog-allow-frontend',
          'k8s:io.cilium.k8s.policy.namespace=production',
          'k8s:io.cilium.k8s.policy.uid=u-9',
        ],
        kind: 'CiliumNetworkPolicy',
      },
    ],
  };
  // Key order too: this is the text `hubble observe -o json` prints under "flow".
  assert.equal(JSON.stringify(flow), JSON.stringify(want));
  assert.equal(toProtoJSON('Flow', flow), JSON.stringify(want));
});

test('an allowed policy verdict names the allowing rule and is not a reply', () => {
  const flow = builder().build(
    event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Forwarded, cookie: 1 }),
  );
  assert.equal(flow.verdict, 'FORWARDED');
  assert.equal(flow.is_reply, false);
  assert.equal(flow.reply, undefined);
  assert.equal(flow.drop_reason_desc, undefined);
  assert.deepEqual(
    flow.ingress_allowed_by?.map((p) => p.name),
    ['catalog-allow-frontend'],
  );
  assert.equal(flow.ingress_denied_by, undefined);
  assert.match(
    toProtoJSON('Flow', flow),
    /"event_type":\{"type":5\},"traffic_direction":"INGRESS","policy_match_type":2,"is_reply":false,"Summary"/,
  );
});

test('a deny rule drop carries POLICY_DENY, the rule and its revision', () => {
  const flow = builder().build(
    event({ type: EventType.Drop, subtype: 181, verdict: EventVerdict.Dropped, cookie: 2 }),
  );
  assert.equal(flow.verdict, 'DROPPED');
  assert.equal(flow.drop_reason, 181);
  assert.equal(flow.drop_reason_desc, 'POLICY_DENY');
  assert.deepEqual(flow.event_type, { type: 1, sub_type: 181 });
  assert.equal(flow.is_reply, undefined);
  assert.equal(flow.traffic_direction, 'INGRESS');
  assert.deepEqual(flow.ingress_denied_by, [
    {
      name: 'deny-8080',
      namespace: 'production',
      labels: [
        'k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy',
        'k8s:io.cilium.k8s.policy.name=deny-8080',
        'k8s:io.cilium.k8s.policy.namespace=production',
      ],
      revision: '7',
      kind: 'CiliumNetworkPolicy',
    },
  ]);
  // A policy-verdict record says only "dropped": a deny rule's cookie makes it POLICY_DENY.
  const pv = builder().build(
    event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Dropped, cookie: 2 }),
  );
  assert.equal(pv.drop_reason_desc, 'POLICY_DENY');
});

test('a reply leaving the server is a trace of ingress traffic, with its interface', () => {
  const spec = reply(SYN);
  const flow = builder().build(
    event({
      type: EventType.Trace,
      subtype: 5,
      direction: 1,
      ct_state: 2,
      src_identity: 5678,
      dst_identity: 1234,
      spec,
    }),
  );
  assert.equal(flow.verdict, 'FORWARDED');
  assert.equal(flow.trace_observation_point, 'FROM_ENDPOINT');
  assert.equal(flow.trace_reason, 'REPLY');
  assert.equal(flow.is_reply, true);
  assert.equal(flow.reply, true);
  assert.equal(flow.traffic_direction, 'INGRESS');
  assert.deepEqual(flow.interface, { index: 7, name: 'lxc1234' });
  assert.equal(flow.source?.ID, 101, 'the local endpoint is the source on egress');
  assert.equal(flow.destination?.pod_name, 'frontend-abc');
  assert.equal(flow.Summary, 'TCP Flags: SYN, ACK');
  assert.deepEqual(flow.event_type, { type: 4, sub_type: 5 });
});

test('observation point 0 is TO_ENDPOINT, and a new connection is NEW', () => {
  const flow = builder().build(event({ type: EventType.Trace, subtype: 0 }));
  assert.equal(flow.trace_observation_point, 'TO_ENDPOINT');
  assert.equal(flow.trace_reason, 'NEW');
  assert.deepEqual(flow.event_type, { type: 4 });
  assert.equal(flow.traffic_direction, 'INGRESS');
});

test('world traffic gets reserved labels, services and ICMP summaries', () => {
  const b = builder();
  const icmp = b.build(
    event({
      type: EventType.Trace,
      source: 0,
      src_identity: 2,
      dst_identity: 0,
      spec: { src: '203.0.113.9', dst: '10.0.9.9', proto: 'icmp', icmpType: 8 },
    }),
  );
  assert.deepEqual(icmp.source, { identity: 2, labels: ['reserved:world'] });
  assert.deepEqual(icmp.destination, {});
  assert.deepEqual(icmp.l4, { ICMPv4: { type: 8 } });
  assert.equal(icmp.Summary, 'ICMPv4 EchoRequest');
  assert.equal(icmp.traffic_direction, undefined, 'no endpoint: direction unknown');
  const dns = b.build(
    event({
      type: EventType.Trace,
      direction: 1,
      spec: { src: '10.0.2.7', dst: '10.96.0.10', proto: 'udp', sport: 40000, dport: 53 },
    }),
  );
  assert.deepEqual(dns.destination_service, { name: 'kube-dns', namespace: 'kube-system' });
  assert.equal(dns.Summary, 'UDP');
});

test('packet decoding: short captures, ICMP codes, IPv6', () => {
  // 34 bytes: Ethernet and IPv4 only.
  const short = decodePacket(packet(SYN).subarray(0, 34));
  assert.equal(short.summary, 'IPv4');
  assert.equal(short.l4, undefined);
  const unreach = packet({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'icmp', icmpType: 3 });
  unreach[35] = 3;
  assert.equal(decodePacket(unreach).summary, 'ICMPv4 DestinationUnreachable(Port)');
  const v6 = new Uint8Array(14 + 40 + 20);
  v6.set([0x86, 0xdd], 12);
  v6[14] = 0x60;
  v6[20] = 6;
  v6.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 22);
  v6.set([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xab, 0, 0], 38);
  v6.set([0x1f, 0x90, 0x00, 0x50], 54);
  v6[67] = 0x12;
  const d = decodePacket(v6);
  assert.deepEqual(d.IP, { source: 'fd00::1', destination: '2001:db8:1::ab:0', ipVersion: 'IPv6' });
  assert.equal(d.summary, 'TCP Flags: SYN, ACK');
});

test('timestamps print as protojson does', () => {
  assert.equal(formatTimestamp(1_701_320_462_000_000_000n), '2023-11-30T05:01:02Z');
  assert.equal(formatTimestamp(1_701_320_462_123_456_000n), '2023-11-30T05:01:02.123456Z');
  assert.equal(formatTimestamp(1_701_320_462_123_456_789n), '2023-11-30T05:01:02.123456789Z');
  assert.equal(parseTimestamp('2023-11-30T06:01:02.5+01:00'), 1_701_320_462_500_000_000n);
  assert.equal(parseTimestamp('yesterday'), undefined);
});

test('labels print as source:key=value, sorted', () => {
  assert.deepEqual(
    labelStrings({ tier: 'web', app: 'x', 'reserved:world': '', 'k8s:app.kubernetes.io/name': 'y' }),
    ['k8s:app.kubernetes.io/name=y', 'k8s:app=x', 'k8s:tier=web', 'reserved:world'],
  );
});

test('event timestamps are monotonic-clock times, made wall-clock by the builder', () => {
  const flow = new FlowBuilder({ nodeName: 'n' }).build(event({ ts_ns: process.hrtime.bigint() }));
  const ms = Number(parseTimestamp(flow.time!)! / 1_000_000n);
  assert.ok(Math.abs(ms - Date.now()) < 1000, `${flow.time} is now`);
  assert.match(flow.uuid!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
