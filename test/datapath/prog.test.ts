/** The endpoint programs on crafted packets (BPF_PROG_TEST_RUN): verdicts, events, metrics. */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { loadCollection, TcAct } from '../../src/bpf/index.js';
import {
  CtState,
  Datapath,
  type DatapathEvent,
  decodeEvents,
  defaultObjectPath,
  EventType,
  ObservationPoint,
} from '../../src/datapath/index.js';
import type { PolicyEntry } from '../../src/policy/index.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';
import { type PacketSpec, packet, reply } from '../helpers/packet.js';

// Test runs use the loopback device (ifindex 1) as skb->ifindex: the endpoint sits there.
const LO = 1;
const POD = '10.244.0.10';
const PEER = '10.244.0.20';
const PEER_ID = 4242;
const POD_ID = 1234;

describe('endpoint programs on crafted packets', { skip: skipUnlessPrivileged() }, () => {
  const pinDir = `/sys/fs/bpf/hypha/hytest-prog-${process.pid}`;
  let dp: Datapath;
  let run: (prog: 'from_container' | 'to_container', p: PacketSpec | Uint8Array) => number;
  let reader: ReturnType<Datapath['eventReader']>;
  let closeColl: () => void;

  before(() => {
    dp = Datapath.open({ pinDir });
    // A second handle on the same pinned maps gives the programs to test-run.
    const coll = loadCollection(defaultObjectPath(), { pinPath: pinDir });
    closeColl = () => coll.close();
    run = (prog, p) => coll.program(prog).testRun({ data: p instanceof Uint8Array ? p : packet(p) }).retval;
    reader = dp.eventReader();
    dp.upsertIpcache(`${PEER}/32`, PEER_ID);
    dp.upsertIpcache(`${POD}/32`, POD_ID);
  });
  after(() => {
    reader.close();
    closeColl();
    dp.destroy();
  });

  const setEndpoint = (enforceIngress: boolean, enforceEgress: boolean) =>
    dp.endpoints.update(
      { ifindex: LO },
      {
        ip4: POD,
        identity: POD_ID,
        id: 7,
        flags: (enforceIngress ? 1 : 0) | (enforceEgress ? 2 : 0),
        pad: 0,
        mac: [0, 0, 0, 0, 0, 0],
        pad2: [0, 0],
      },
    );
  const entry = (e: Partial<PolicyEntry>): PolicyEntry => ({
    direction: 'ingress',
    identity: PEER_ID,
    protocol: 6,
    port: 8080,
    portPrefixLen: 16,
    verdict: 'allow',
    cookie: 99,
    ...e,
  });
  const events = (): DatapathEvent[] => decodeEvents(reader.drain());

  beforeEach(() => {
    for (const [k] of dp.policyEntries()) dp.policy.delete(k);
    for (const { key } of dp.ctEntries()) dp.ct.delete(key);
    for (const [k] of [...dp.auth.entries()]) dp.auth.delete(k);
    setEndpoint(true, true);
    events();
  });

  const inbound = (port: number, extra: Partial<PacketSpec> = {}): PacketSpec => ({
    src: PEER,
    dst: POD,
    proto: 'tcp',
    sport: 50000,
    dport: port,
    ...extra,
  });

  test('an allowed new connection passes, with a policy-verdict event naming the rule', () => {
    dp.applyPolicy(7, { added: [entry({})], removed: [] });
    assert.equal(run('to_container', inbound(8080)), TcAct.Ok);
    const ev = events();
    const verdict = ev.find((e) => e.type === EventType.PolicyVerdict);
    assert.equal(verdict?.cookie, 99);
    assert.equal(verdict?.src_identity, PEER_ID);
    assert.equal(verdict?.dst_identity, POD_ID);
    assert.equal(verdict?.ct_state, CtState.New);
    assert.equal(verdict?.packet.length, 64, 'the first bytes of the packet come along');
    assert.equal(verdict?.subtype, 0);
    const trace = ev.find((e) => e.type === EventType.Trace);
    assert.equal(trace?.subtype, ObservationPoint.ToEndpoint, 'and its trace event, at the endpoint');
    assert.equal(trace?.ct_state, CtState.New);
    assert.equal(trace?.cookie, 99);
    assert.deepEqual(trace?.packet, verdict?.packet);
    assert.equal(ev.length, 2);
  });

  test('events capture the packet in steps of 128, 64, 54 (TCP headers) and 42 (UDP headers) bytes', () => {
    setEndpoint(false, false);
    const captured = (payload: number, sport: number, proto: 'tcp' | 'udp' = 'tcp') => {
      assert.equal(run('to_container', inbound(8080, { payload, sport, proto })), TcAct.Ok);
      return events().map((e) => e.packet.length);
    };
    assert.deepEqual(captured(200, 51000), [128, 128]);
    assert.deepEqual(captured(16, 51001), [64, 64]);
    assert.deepEqual(captured(0, 51002), [54, 54], 'a bare TCP segment keeps its flags');
    assert.deepEqual(captured(4, 51003, 'udp'), [42, 42], 'a small datagram keeps its ports');
  });

  test('no matching entry drops with 133, a deny with 181; both are reported and counted', () => {
    dp.applyPolicy(7, { added: [entry({ port: 9999 })], removed: [] });
    assert.equal(run('to_container', inbound(8080)), TcAct.Shot);
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 133);
    dp.applyPolicy(7, {
      added: [
        entry({ verdict: 'deny', cookie: 5, identity: 0, protocol: 0, port: 0, portPrefixLen: 0 }),
        entry({}),
      ],
      removed: [],
    });
    assert.equal(run('to_container', inbound(8080)), TcAct.Shot);
    const drop = events().find((e) => e.type === EventType.Drop);
    assert.equal(drop?.subtype, 181);
    assert.equal(drop?.cookie, 5);
    const m = dp.metricsTotals();
    assert.ok(m.some((x) => x.reason === 181 && x.direction === 'ingress' && x.packets >= 1));
    assert.ok(m.some((x) => x.reason === 133 && x.packets >= 1));
  });

  test('port ranges and the any-identity entry', () => {
    // 8080-8095 as one /12 block, from any identity.
    dp.applyPolicy(7, { added: [entry({ identity: 0, port: 8080, portPrefixLen: 12 })], removed: [] });
    assert.equal(run('to_container', inbound(8090)), TcAct.Ok);
    assert.equal(run('to_container', inbound(8096, { sport: 50001 })), TcAct.Shot);
  });

  test('replies of an allowed connection pass without any policy entry', () => {
    // Egress allowed to the peer; ingress has no entries at all.
    dp.applyPolicy(7, { added: [entry({ direction: 'egress', port: 443 })], removed: [] });
    const out: PacketSpec = { src: POD, dst: PEER, proto: 'tcp', sport: 41000, dport: 443 };
    assert.equal(run('from_container', out), TcAct.Ok);
    assert.equal(run('to_container', reply(out)), TcAct.Ok);
    assert.equal(events().filter((e) => e.type === EventType.Drop).length, 0);
    // A new inbound connection on the same ports is not a reply.
    assert.equal(
      run('to_container', { src: PEER, dst: POD, proto: 'tcp', sport: 443, dport: 41001 }),
      TcAct.Shot,
    );
  });

  test('removing an allow stops new connections at once; the established one continues', () => {
    dp.applyPolicy(7, { added: [entry({})], removed: [] });
    const first = inbound(8080);
    assert.equal(run('to_container', first), TcAct.Ok);
    dp.applyPolicy(7, { added: [], removed: [entry({})] });
    assert.equal(run('to_container', { ...first, flags: 0x10 }), TcAct.Ok, 'established');
    assert.equal(run('to_container', inbound(8080, { sport: 50002 })), TcAct.Shot, 'new');
  });

  test('a SYN on the tuple of a connection that ended opens a new one: the policy of now decides', () => {
    const drops = () => events().filter((e) => e.type === EventType.Drop);
    const tuple = inbound(8080, { sport: 50100 });
    dp.applyPolicy(7, { added: [entry({})], removed: [] });
    assert.equal(run('to_container', tuple), TcAct.Ok);
    assert.equal(run('to_container', { ...tuple, flags: 0x11 }), TcAct.Ok, 'FIN');
    // The allow becomes an L7 redirect (nothing listens on the proxy port: the redirect
    // fails, it never passes).
    dp.proxyPorts.http = 1;
    dp.applyPolicy(7, { added: [entry({ verdict: 'redirect', proxy: 'http' })], removed: [entry({})] });
    assert.equal(run('to_container', tuple), TcAct.Shot, 'the reused tuple goes to the proxy');
    assert.equal(drops()[0]?.subtype, 178);
    assert.equal(run('to_container', { ...tuple, flags: 0x10 }), TcAct.Shot, 'and so does the rest of it');
    assert.equal(drops()[0]?.subtype, 178);
    // Back to L4: the entry that sent the tuple to the proxy does not any more.
    dp.applyPolicy(7, { added: [entry({})], removed: [entry({ verdict: 'redirect', proxy: 'http' })] });
    assert.equal(run('to_container', tuple), TcAct.Ok);
    assert.equal(drops().length, 0);
    // No allow at all: a new connection on the old tuple is dropped like any other.
    dp.applyPolicy(7, { added: [], removed: [entry({})] });
    assert.equal(run('to_container', tuple), TcAct.Shot);
    assert.equal(drops()[0]?.subtype, 133);
    const verdicts = () => events().filter((e) => e.type === EventType.PolicyVerdict);
    dp.applyPolicy(7, { added: [entry({})], removed: [] });
    events();
    assert.equal(run('to_container', tuple), TcAct.Ok);
    assert.equal(run('to_container', tuple), TcAct.Ok, 'a retransmitted SYN');
    assert.equal(verdicts().length, 2, 'is judged again, the same way');
    delete dp.proxyPorts.http;
  });

  test('a SYN on the reversed tuple of a connection is not its reply', () => {
    dp.applyPolicy(7, { added: [entry({ direction: 'egress', port: 443 })], removed: [] });
    const out: PacketSpec = { src: POD, dst: PEER, proto: 'tcp', sport: 41100, dport: 443 };
    assert.equal(run('from_container', out), TcAct.Ok);
    assert.equal(run('to_container', reply(out)), TcAct.Ok, 'SYN-ACK');
    // The peer opens a connection from 443 to the pod's 41100: ingress policy (none) decides.
    assert.equal(run('to_container', reply(out, 0x02)), TcAct.Shot);
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 133);
  });

  test('a UDP entry past its lifetime no longer stands for the flow', () => {
    dp.applyPolicy(7, { added: [entry({ direction: 'egress', protocol: 17, port: 53 })], removed: [] });
    const dns: PacketSpec = { src: POD, dst: PEER, proto: 'udp', sport: 41200, dport: 53 };
    assert.equal(run('from_container', dns), TcAct.Ok);
    dp.applyPolicy(7, { added: [], removed: [entry({ direction: 'egress', protocol: 17, port: 53 })] });
    assert.equal(run('from_container', dns), TcAct.Ok, 'a live flow keeps its verdict');
    const [ct] = dp.ctEntries().filter((c) => c.key.sport === 41200 && c.scope === 'egress');
    assert.ok(ct, 'the flow has an entry');
    dp.ct.update(ct.key, { ...ct.entry, expires_ns: 1n });
    assert.equal(run('from_container', dns), TcAct.Shot, 'an expired one is a new flow');
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 133);
  });

  test('a spoofed source address is dropped with 132', () => {
    setEndpoint(false, false);
    assert.equal(
      run('from_container', { src: '10.244.0.99', dst: PEER, proto: 'udp', dport: 53 }),
      TcAct.Shot,
    );
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 132);
    assert.equal(run('from_container', { src: POD, dst: PEER, proto: 'udp', dport: 53 }), TcAct.Ok);
  });

  test('without enforcement everything passes; ICMP echo and its reply are tracked', () => {
    setEndpoint(false, false);
    assert.equal(run('to_container', inbound(1)), TcAct.Ok);
    setEndpoint(true, true);
    dp.applyPolicy(7, { added: [entry({ direction: 'egress', protocol: 1, port: 8 })], removed: [] });
    const ping: PacketSpec = { src: POD, dst: PEER, proto: 'icmp', icmpType: 8, icmpId: 321 };
    assert.equal(run('from_container', ping), TcAct.Ok);
    assert.equal(run('to_container', reply(ping)), TcAct.Ok, 'echo reply is a reply');
    assert.equal(
      run('to_container', { src: PEER, dst: POD, proto: 'icmp', icmpType: 8, icmpId: 9 }),
      TcAct.Shot,
    );
  });

  test('auth-required entries drop with 189 until an auth entry exists', () => {
    dp.applyPolicy(7, { added: [entry({ verdict: 'auth', authType: 1 })], removed: [] });
    assert.equal(run('to_container', inbound(8080)), TcAct.Shot);
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 189);
    dp.auth.update(
      { local_identity: POD_ID, remote_identity: PEER_ID, remote_node: 0, auth_type: 1, pad: 0 },
      { expiration_ns: 2n ** 62n },
    );
    assert.equal(run('to_container', inbound(8080, { sport: 50003 })), TcAct.Ok);
  });

  test('malformed and unsupported packets are dropped with their reasons', () => {
    const full = packet(inbound(8080));
    assert.equal(run('to_container', full.subarray(0, 40)), TcAct.Shot); // TCP header cut short
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 135);
    const v6 = packet(inbound(8080));
    v6[12] = 0x86;
    v6[13] = 0xdd;
    assert.equal(run('to_container', v6), TcAct.Shot);
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 139);
  });

  test('a veth with no endpoint entry drops with 165', () => {
    dp.endpoints.delete({ ifindex: LO });
    assert.equal(run('to_container', inbound(8080)), TcAct.Shot);
    assert.equal(events().find((e) => e.type === EventType.Drop)?.subtype, 165);
  });
  test('events the ring has no room for are counted, never silently gone', () => {
    dp.applyPolicy(7, { added: [entry({ port: 9999 })], removed: [] });
    assert.equal(run('to_container', inbound(8080)), TcAct.Shot);
    const perRun = events().length;
    assert.ok(perRun >= 1);
    const before = dp.eventsLost();
    // Every run is a drop (~180-byte records) and nobody reads: 40,000 runs overflow 4 MiB.
    const coll = loadCollection(defaultObjectPath(), { pinPath: pinDir });
    try {
      const r = coll.program('to_container').testRun({ data: packet(inbound(8080)), repeat: 40_000 });
      assert.equal(r.retval, TcAct.Shot);
    } finally {
      coll.close();
    }
    const lost = dp.eventsLost() - before;
    let kept = 0;
    for (let n = events().length; n > 0; n = events().length) kept += n;
    assert.ok(lost > 0, `no loss counted (${kept} events kept)`);
    assert.equal(kept + lost, perRun * 40_000, 'every event is either in the ring or counted as lost');
  });
});
