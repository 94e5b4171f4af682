import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventType, EventVerdict } from '../../src/datapath/constants.js';
import { ValidationError } from '../../src/errors.js';
import {
  compileFilter,
  compileFilters,
  type Flow,
  type FlowFilter,
  parseLabelSelector,
} from '../../src/hubble/index.js';
import { reply } from '../helpers/packet.js';
import { builder, event, SYN } from './fixtures.js';

const b = builder();
const denied = b.build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Dropped }));
const allowed = b.build(event({ type: EventType.PolicyVerdict, verdict: EventVerdict.Forwarded, cookie: 1 }));
const replyTrace = b.build(
  event({
    type: EventType.Trace,
    subtype: 5,
    direction: 1,
    ct_state: 2,
    src_identity: 5678,
    dst_identity: 1234,
    spec: reply(SYN),
  }),
);
const world = b.build(
  event({
    type: EventType.Trace,
    source: 0,
    src_identity: 2,
    dst_identity: 0,
    spec: { src: '203.0.113.9', dst: '10.0.9.9', proto: 'icmp', icmpType: 8 },
  }),
);
const all = [denied, allowed, replyTrace, world];

function pick(whitelist: FlowFilter[], blacklist: FlowFilter[] = []): Flow[] {
  const p = compileFilters(whitelist, blacklist);
  return all.filter(p);
}

test('no filters pass everything; whitelist entries are alternatives; blacklist entries exclude', () => {
  assert.deepEqual(pick([]), all);
  assert.deepEqual(pick([{ verdict: ['DROPPED'] }, { source_identity: [2] }]), [denied, world]);
  assert.deepEqual(pick([], [{ verdict: ['DROPPED'] }]), [allowed, replyTrace, world]);
  // Within one filter every field must match; within a field any value.
  assert.deepEqual(pick([{ verdict: ['DROPPED', 'FORWARDED'], event_type: [{ type: 5 }] }]), [
    denied,
    allowed,
  ]);
  assert.deepEqual(pick([{ verdict: ['FORWARDED'] }], [{ event_type: [{ type: 5 }] }]), [replyTrace, world]);
});

test('pod names are namespace/prefix, a bare name means the default namespace', () => {
  assert.deepEqual(pick([{ source_pod: ['production/'] }]), [denied, allowed, replyTrace]);
  assert.deepEqual(pick([{ source_pod: ['production/front'] }]), [denied, allowed]);
  assert.deepEqual(pick([{ source_pod: ['frontend'] }]), [], 'frontend is looked up in "default"');
  assert.deepEqual(pick([{ destination_pod: ['default/'] }]), []);
});

test('label selectors: k8s syntax, optional sources', () => {
  const labels = ['k8s:app=frontend', 'k8s:tier=web', 'reserved:world'];
  const m = (s: string) => parseLabelSelector(s)(labels);
  assert.ok(m('app=frontend'));
  assert.ok(m('k8s:app=frontend'));
  assert.ok(!m('reserved:app=frontend'), 'a named source must match');
  assert.ok(m('any:app==frontend'));
  assert.ok(m('reserved:world'));
  assert.ok(m('app in (backend, frontend),tier'));
  assert.ok(!m('app notin (frontend)'));
  assert.ok(m('app!=backend,!missing'));
  assert.ok(!m('!tier'));
  assert.ok(!m('app=frontend,tier=db'));
  assert.deepEqual(pick([{ source_label: ['app=frontend'] }]), [denied, allowed]);
  assert.deepEqual(
    pick([{ source_label: ['reserved:world'] }, { destination_label: ['k8s:app=frontend'] }]),
    [replyTrace, world],
  );
});

test('addresses, ports, protocols, flags, replies, directions, node names', () => {
  assert.deepEqual(pick([{ source_ip: ['203.0.113.0/24'] }]), [world]);
  assert.deepEqual(pick([{ destination_ip: ['10.0.2.7'] }]), [denied, allowed]);
  assert.deepEqual(pick([{ destination_port: ['8080'] }]), [denied, allowed]);
  assert.deepEqual(pick([{ protocol: ['ICMP'] }]), [world]);
  assert.deepEqual(pick([{ tcp_flags: [{ SYN: true, ACK: true }] }]), [replyTrace]);
  assert.deepEqual(pick([{ tcp_flags: [{ SYN: true }] }]), [denied, allowed, replyTrace]);
  // Dropped flows have no reply flag but count as non-replies, as in Hubble.
  assert.deepEqual(pick([{ reply: [false] }]), [denied, allowed, world]);
  assert.deepEqual(pick([{ reply: [true] }]), [replyTrace]);
  assert.deepEqual(pick([{ traffic_direction: ['INGRESS'] }]), [denied, allowed, replyTrace]);
  assert.deepEqual(pick([{ drop_reason_desc: ['POLICY_DENIED'] }]), [denied]);
  assert.deepEqual(pick([{ node_name: ['kind-*'] }]), all);
  assert.deepEqual(pick([{ node_name: ['default/kind-worker'] }]), all);
  assert.deepEqual(pick([{ node_name: ['other/'] }]), []);
  assert.deepEqual(pick([{ source_workload: [{ kind: 'Deployment' }] }]), [denied, allowed, replyTrace]);
  assert.deepEqual(pick([{ uuid: [allowed.uuid!] }]), [allowed]);
});

test('L7 fields: status prefixes, methods, path regexps', () => {
  const http: Flow = {
    verdict: 'FORWARDED',
    event_type: { type: 129 },
    l7: { type: 'RESPONSE', http: { code: 404, method: 'GET', url: 'http://catalog/api/items/12?x=1' } },
  };
  const ok = (ff: FlowFilter) => compileFilter(ff)(http);
  assert.ok(ok({ http_status_code: ['4+'] }));
  assert.ok(ok({ http_status_code: ['404'] }));
  assert.ok(!ok({ http_status_code: ['5+'] }));
  assert.ok(ok({ http_method: ['get'] }));
  assert.ok(ok({ http_path: ['^/api/items/\\d+$'] }));
  assert.ok(!ok({ http_path: ['^/api/users'] }));
  assert.ok(ok({ protocol: ['http'] }));
  assert.ok(!compileFilter({ http_method: ['GET'] })(denied));
});

test('compiling checks values once and names the filter and field', () => {
  const bad = (ff: FlowFilter, field: string) =>
    assert.throws(
      () => compileFilters([{}], [ff]),
      (err: unknown) =>
        err instanceof ValidationError && err.object === 'blacklist[0]' && err.field === field,
    );
  bad({ http_path: ['ok', '('] }, 'http_path[1]');
  bad({ source_ip: ['10.0.0.300'] }, 'source_ip[0]');
  bad({ destination_ip: ['10.0.0.0/40'] }, 'destination_ip[0]');
  bad({ destination_port: ['http'] }, 'destination_port[0]');
  bad({ protocol: ['quic'] }, 'protocol[0]');
  bad({ source_label: ['app in (a'] }, 'source_label[0]');
  bad({ node_name: ['a/b/c'] }, 'node_name[0]');
  bad({ http_status_code: ['600'] }, 'http_status_code[0]');
  bad({ source_pod: [''] }, 'source_pod[0]');
  bad({ http_method: ['GET'], event_type: [{ type: 4 }] }, 'http_method');
});
