/** Hubble's metrics from flows: names, labels and the enabled set. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Flow, HubbleMetrics, parseEnabled } from '../../src/hubble/index.js';

const drop: Flow = {
  verdict: 'DROPPED',
  drop_reason_desc: 'POLICY_DENIED',
  IP: { source: '10.244.1.2', destination: '10.244.2.3', ipVersion: 'IPv4' },
  l4: { TCP: { source_port: 40000, destination_port: 8080, flags: { SYN: true } } },
  event_type: { type: 1 },
};
const forwarded: Flow = {
  verdict: 'FORWARDED',
  IP: { source: '10.244.1.2', destination: '10.244.2.3', ipVersion: 'IPv4' },
  l4: { UDP: { source_port: 40000, destination_port: 53 } },
  event_type: { type: 4 },
  trace_observation_point: 'TO_ENDPOINT',
  is_reply: false,
};
const ping: Flow = {
  verdict: 'FORWARDED',
  IP: { source: 'a', destination: 'b', ipVersion: 'IPv4' },
  l4: { ICMPv4: { type: 8 } },
};

test("the tutorial's metrics, with Hubble's names and labels", () => {
  const m = new HubbleMetrics(
    parseEnabled(['dns', 'drop', 'tcp', 'flow', 'port-distribution', 'icmp', 'http']).enabled,
  );
  for (const f of [drop, drop, forwarded, ping]) m.add(f);
  m.lost('PERF_EVENT_RING_BUFFER', 3);
  const text = m.render();
  assert.match(text, /^hubble_drop_total\{reason="POLICY_DENIED",protocol="TCP"\} 2$/m);
  assert.match(text, /^hubble_tcp_flags_total\{flag="SYN",family="IPv4"\} 2$/m);
  assert.match(text, /^hubble_port_distribution_total\{protocol="UDP",port="53"\} 1$/m);
  assert.match(text, /^hubble_icmp_total\{family="IPv4",type="8"\} 1$/m);
  assert.match(
    text,
    /^hubble_flows_processed_total\{type="Trace",subtype="TO_ENDPOINT",verdict="FORWARDED"\} 1$/m,
  );
  assert.match(text, /^hubble_lost_events_total\{source="PERF_EVENT_RING_BUFFER"\} 3$/m);
  assert.match(text, /^# TYPE hubble_drop_total counter$/m);
});

test('only what is enabled is counted; unknown names are reported', () => {
  const { enabled, unknown } = parseEnabled(['drop:sourceContext=pod', 'bogus']);
  assert.deepEqual([...enabled], ['drop']);
  assert.deepEqual(unknown, ['bogus']);
  const m = new HubbleMetrics(enabled);
  m.add(drop);
  m.add(ping);
  const text = m.render();
  assert.match(text, /hubble_drop_total/);
  assert.doesNotMatch(text, /hubble_icmp_total|hubble_tcp_flags_total/);
});
