import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventType, EventVerdict } from '../../src/datapath/constants.js';
import { type Flow, FlowPrinter, formatTime, type GetFlowsResponse } from '../../src/hubble/index.js';
import { reply } from '../helpers/packet.js';
import { builder, event, SYN } from './fixtures.js';

function responses(): GetFlowsResponse[] {
  const b = builder();
  const flows: Flow[] = [
    b.build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Dropped })),
    b.build(event({ type: EventType.Drop, subtype: 133, verdict: EventVerdict.Dropped })),
    b.build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Forwarded, cookie: 1 })),
    b.build(
      event({
        type: EventType.Trace,
        subtype: 5,
        direction: 1,
        ct_state: 2,
        src_identity: 5678,
        dst_identity: 1234,
        spec: reply(SYN),
      }),
    ),
    b.build(
      event({
        type: EventType.Trace,
        source: 0,
        src_identity: 2,
        dst_identity: 0,
        spec: { src: '203.0.113.9', dst: '10.0.9.9', proto: 'icmp', icmpType: 8 },
      }),
    ),
  ];
  return flows.map((flow) => ({ flow, node_name: flow.node_name ?? '', time: flow.time ?? '' }));
}

test('compact lines are laid out as the hubble CLI prints them', () => {
  const p = new FlowPrinter();
  const lines = responses().map((r) => p.write(r));
  assert.deepEqual(lines, [
    'Nov 30 05:01:02.123: production/frontend-abc:52342 (ID:1234) <> production/catalog-xyz:8080 (ID:5678) policy-verdict:none INGRESS DENIED (TCP Flags: SYN)\n',
    'Nov 30 05:01:02.123: production/frontend-abc:52342 (ID:1234) <> production/catalog-xyz:8080 (ID:5678) Policy denied DROPPED (TCP Flags: SYN)\n',
    'Nov 30 05:01:02.123: production/frontend-abc:52342 (ID:1234) -> production/catalog-xyz:8080 (ID:5678) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)\n',
    // A reply is printed from the client's side, arrow reversed.
    'Nov 30 05:01:02.123: production/frontend-abc:52342 (ID:1234) <- production/catalog-xyz:8080 (ID:5678) from-endpoint FORWARDED (TCP Flags: SYN, ACK)\n',
    'Nov 30 05:01:02.123: 203.0.113.9 (world) -> 10.0.9.9 (unknown) to-endpoint FORWARDED (ICMPv4 EchoRequest)\n',
  ]);
});

test('--print-policy-names, --print-node-name and --numeric change the compact line', () => {
  const [denied, , allowed] = responses();
  const p = new FlowPrinter({ policyNames: true, nodeName: true, ipTranslation: false });
  assert.equal(
    p.write(denied!),
    'Nov 30 05:01:02.123 [kind-worker]: 10.0.1.5:52342 (ID:1234) <> 10.0.2.7:8080 (ID:5678) policy-verdict:none INGRESS DENIED BY catalog-allow-frontend (CiliumNetworkPolicy) (TCP Flags: SYN)\n',
  );
  assert.match(p.write(allowed!), / ALLOWED BY catalog-allow-frontend \(CiliumNetworkPolicy\) /);
});

test('json prints GetFlowsResponse as protojson, one per line', () => {
  const [denied] = responses();
  const out = new FlowPrinter({ output: 'json' }).write(denied!);
  assert.ok(out.endsWith('}\n') && !out.slice(0, -1).includes('\n'));
  assert.match(out, /^\{"flow":\{"time":"2023-11-30T05:01:02.123Z","uuid":"uuid-1","verdict":"DROPPED",/);
  assert.match(out, /\},"node_name":"kind-worker","time":"2023-11-30T05:01:02.123Z"\}\n$/);
  const back = JSON.parse(out) as GetFlowsResponse;
  assert.ok('flow' in back && back.flow.drop_reason_desc === 'POLICY_DENIED');
});

test('dict blocks are separated, table columns aligned', () => {
  const [a, b] = responses();
  const dict = new FlowPrinter({ output: 'dict' });
  const text = dict.write(a!) + dict.write(b!);
  assert.equal(
    text,
    [
      '  TIMESTAMP: Nov 30 05:01:02.123',
      '     SOURCE: production/frontend-abc:52342',
      'DESTINATION: production/catalog-xyz:8080',
      '       TYPE: policy-verdict:none INGRESS',
      '    VERDICT: DENIED',
      '    SUMMARY: TCP Flags: SYN',
      '------------',
      '  TIMESTAMP: Nov 30 05:01:02.123',
      '     SOURCE: production/frontend-abc:52342',
      'DESTINATION: production/catalog-xyz:8080',
      '       TYPE: Policy denied',
      '    VERDICT: DROPPED',
      '    SUMMARY: TCP Flags: SYN',
      '',
    ].join('\n'),
  );
  const table = new FlowPrinter({ output: 'table' });
  assert.equal(table.write(a!), '');
  table.write(b!);
  assert.deepEqual(table.flush().split('\n'), [
    'TIMESTAMP             SOURCE                          DESTINATION                   TYPE                          VERDICT   SUMMARY',
    'Nov 30 05:01:02.123   production/frontend-abc:52342   production/catalog-xyz:8080   policy-verdict:none INGRESS   DENIED    TCP Flags: SYN',
    'Nov 30 05:01:02.123   production/frontend-abc:52342   production/catalog-xyz:8080   Policy denied                 DROPPED   TCP Flags: SYN',
    '',
  ]);
});

test('lost events print as the CLI prints them', () => {
  const lost: GetFlowsResponse = {
    lost_events: { source: 'HUBBLE_RING_BUFFER', num_events_lost: '12' },
    node_name: 'kind-worker',
    time: '2023-11-30T05:01:02.123Z',
  };
  assert.equal(
    new FlowPrinter().write(lost),
    'Nov 30 05:01:02.123 EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 12\n',
  );
  assert.equal(
    new FlowPrinter({ output: 'jsonpb' }).write(lost),
    '{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"12"},"node_name":"kind-worker","time":"2023-11-30T05:01:02.123Z"}\n',
  );
});

test('time layouts', () => {
  const t = '2023-11-03T05:01:02.120Z';
  assert.equal(formatTime(t), 'Nov  3 05:01:02.120');
  assert.equal(formatTime(t, 'RFC3339'), '2023-11-03T05:01:02Z');
  assert.equal(formatTime(t, 'RFC3339Milli'), '2023-11-03T05:01:02.12Z');
  assert.equal(formatTime(t, 'RFC1123Z'), 'Fri, 03 Nov 2023 05:01:02 +0000');
  assert.equal(formatTime(undefined), 'N/A');
});
