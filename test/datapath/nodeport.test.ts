/**
 * NodePort and external IPs on the node's external device (bpf/host.o): codecs against
 * its BTF, and real TCP and UDP from a "world" namespace to two "node" namespaces on a
 * bridge, each with a backend pod.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Btf, layoutDifferences, type StructCodec } from '../../src/bpf/index.js';
import { HOST_LAYOUTS, HostDatapath } from '../../src/datapath/host.js';
import {
  type BackendSpec,
  DROP_NO_SERVICE,
  decodeEvents,
  EventType,
  type Frontend,
  ServiceMaps,
  type ServiceSpec,
} from '../../src/datapath/index.js';
import { type NetNs, NetScope, uniqueName } from '../../src/lab/net/index.js';
import { repoRoot, skipUnlessPrivileged, withoutFdLeak } from '../helpers/kernel.js';
import { CLIENT_SCRIPT, LbClient, NODE, served, startServers } from '../helpers/lb.js';

test('every NAT codec matches its C struct in the BTF of host.o', () => {
  using btf = Btf.fromFile(join(repoRoot, 'dist/bpf/host.o'));
  const problems: string[] = [];
  for (const [name, codec] of Object.entries(HOST_LAYOUTS))
    problems.push(...layoutDifferences(btf, name, codec as StructCodec<unknown>));
  assert.deepEqual(problems, []);
  assert.equal(Object.keys(HOST_LAYOUTS).length, 2);
});

// --- crafted packets, for BPF_PROG_TEST_RUN

const TC_ACT_OK = 0;

function onesSum(b: Uint8Array, sum = 0): number {
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}
const ipBytes = (ip: string) => Uint8Array.from(ip.split('.').map(Number));
const ipOf = (b: Uint8Array, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

function pseudoSum(p: Uint8Array): number {
  const l4len = p.length - 34;
  const pseudo = new Uint8Array(12);
  pseudo.set(p.subarray(26, 34), 0);
  pseudo[9] = p[23]!;
  new DataView(pseudo.buffer).setUint16(10, l4len);
  return onesSum(p.subarray(34), onesSum(pseudo));
}

/** An Ethernet frame with IPv4 and TCP (a SYN) or UDP, checksums complete; UDP may carry none. */
function frame(o: {
  src: string;
  dst: string;
  proto: 6 | 17;
  sport: number;
  dport: number;
  noUdpChecksum?: boolean;
}): Uint8Array {
  const payload = new TextEncoder().encode('hello, nodeport');
  const l4len = (o.proto === 6 ? 20 : 8) + payload.length;
  const p = new Uint8Array(34 + l4len);
  const d = new DataView(p.buffer);
  p.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0]);
  p.set([0x45, 0], 14);
  d.setUint16(16, 20 + l4len);
  d.setUint16(18, 0x1234);
  d.setUint16(20, 0x4000);
  p[22] = 64;
  p[23] = o.proto;
  p.set(ipBytes(o.src), 26);
  p.set(ipBytes(o.dst), 30);
  d.setUint16(24, ~onesSum(p.subarray(14, 34)) & 0xffff);
  d.setUint16(34, o.sport);
  d.setUint16(36, o.dport);
  if (o.proto === 6) {
    d.setUint32(38, 0x01020304);
    p[46] = 0x50;
    p[47] = 0x02;
    d.setUint16(48, 64240);
    p.set(payload, 54);
    d.setUint16(50, ~pseudoSum(p) & 0xffff);
  } else {
    d.setUint16(38, l4len);
    p.set(payload, 42);
    if (!o.noUdpChecksum) d.setUint16(40, ~pseudoSum(p) & 0xffff || 0xffff);
  }
  return p;
}

/** What a packet says, and whether its checksums verify (a UDP checksum of 0 is none). */
function readFrame(p: Uint8Array) {
  const d = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const l4csum = d.getUint16(p[23] === 6 ? 50 : 40);
  return {
    src: `${ipOf(p, 26)}:${d.getUint16(34)}`,
    dst: `${ipOf(p, 30)}:${d.getUint16(36)}`,
    ipValid: onesSum(p.subarray(14, 34)) === 0xffff,
    l4Checksum: l4csum,
    l4Valid: p[23] === 17 && l4csum === 0 ? true : pseudoSum(p) === 0xffff,
  };
}

const WORLD = '10.240.0.250';
const NODE_A = '10.240.0.1';
const NODE_B = '10.240.0.2';
const POD_A = '10.244.0.10';
const POD_B = '10.244.1.10';
const EXTERNAL_IP = '192.0.2.80';
const GATEWAY = '169.254.1.1';
/** Service map sizes for a test: the defaults would allocate tens of MB per node. */
const SIZES = {
  services: 4096,
  backends: 1024,
  revNat: 1024,
  maglev: 64,
  affinity: 1024,
  affinityMatch: 1024,
  sockRevNat: 1024,
};

describe('NodePort and external IPs from the world', { skip: skipUnlessPrivileged() }, () => {
  const net = new NetScope();
  const pinA = `/sys/fs/bpf/hypha/${uniqueName('npa')}`;
  const pinB = `/sys/fs/bpf/hypha/${uniqueName('npb')}`;
  let nodeA: NetNs;
  let nodeB: NetNs;
  let smA: ServiceMaps;
  let smB: ServiceMaps;
  let hostA: HostDatapath;
  let hostB: HostDatapath;
  let reader: ReturnType<HostDatapath['eventReader']>;
  let client: LbClient;

  /** Two nodes on a bridge with the world, one pod on each, wired as the CNI wires pods. */
  async function topology(): Promise<void> {
    const [ul, world, a, b, podA, podB] = await net.namespaces(6, { prefix: 'np' });
    if (!ul || !world || !a || !b || !podA || !podB) throw new Error('namespaces missing');
    nodeA = a;
    nodeB = b;
    const batch = net.batch();
    batch.addBridge(ul, 'br0');
    batch.setLink(ul, 'br0', { up: true });
    const uplinks: [NetNs, string][] = [
      [world, WORLD],
      [a, NODE_A],
      [b, NODE_B],
    ];
    uplinks.forEach(([ns, ip], i) => {
      batch.addVeth({ name: 'eth0', ns, peer: `p${i}`, peerNs: ul });
      batch.setLink(ul, `p${i}`, { master: 'br0', up: true });
      batch.addAddress(ns, 'eth0', `${ip}/24`);
      batch.setLink(ns, 'eth0', { up: true });
    });
    for (const n of [a, b]) {
      batch.sysctl(n, 'net.ipv4.ip_forward', 1);
      batch.sysctl(n, 'net.ipv4.conf.all.rp_filter', 0);
      batch.sysctl(n, 'net.ipv4.conf.default.rp_filter', 0);
    }
    batch.addRoute(a, { to: '10.244.1.0/24', via: NODE_B });
    batch.addRoute(b, { to: '10.244.0.0/24', via: NODE_A });
    // An external IP of a service, routed to node A as a router upstream would.
    batch.addRoute(world, { to: `${EXTERNAL_IP}/32`, via: NODE_A });
    const pods: [NetNs, NetNs, string, string][] = [
      [a, podA, POD_A, '02:00:00:00:0a:01'],
      [b, podB, POD_B, '02:00:00:00:0b:01'],
    ];
    const hostMac = '02:00:00:00:00:01';
    for (const [node, pod, ip, podMac] of pods) {
      const host = uniqueName('v');
      batch.addVeth({ name: host, ns: node, peer: 'eth0', peerNs: pod, mac: hostMac, peerMac: podMac });
      batch.setLink(node, host, { up: true });
      batch.addRoute(node, { to: `${ip}/32`, dev: host });
      batch.addAddress(pod, 'eth0', `${ip}/32`);
      batch.setLink(pod, 'eth0', { up: true });
      batch.addRoute(pod, { to: 'default', via: GATEWAY, dev: 'eth0', onlink: true });
    }
    await batch.run();
    for (const [node, pod, ip, podMac] of pods) {
      const host = (await node.links()).find((l) => l.kind === 'veth' && l.name !== 'eth0')?.name;
      if (!host) throw new Error(`no pod veth in ${node.name}`);
      await node.ip('neigh', 'replace', ip, 'lladdr', podMac, 'dev', host, 'nud', 'permanent');
      await pod.ip('neigh', 'replace', GATEWAY, 'lladdr', hostMac, 'dev', 'eth0', 'nud', 'permanent');
    }
    await startServers(podA, [['A', '0.0.0.0']], { showClient: true });
    await startServers(podB, [['B', '0.0.0.0']], { showClient: true });
    client = await LbClient.start(
      world.spawn(NODE, ['-e', CLIENT_SCRIPT], {
        env: { ...process.env, HY_TIMEOUT_MS: '1500' },
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
      'world client',
    );
  }

  before(async () => {
    await topology();
    // Either may come first: node A's host object finds the service maps pinned, node B's
    // creates them at ServiceMaps' sizes, and ServiceMaps then reuses them.
    smA = ServiceMaps.open({ pinDir: pinA, sizes: SIZES });
    hostA = HostDatapath.load({
      pinDir: pinA,
      device: 'eth0',
      netns: nodeA.name,
      nodeIp: NODE_A,
      natEntries: 4096,
    });
    hostB = HostDatapath.load({
      pinDir: pinB,
      device: 'eth0',
      netns: nodeB.name,
      nodeIp: NODE_B,
      natEntries: 4096,
      sizes: SIZES,
    });
    smB = ServiceMaps.open({ pinDir: pinB, sizes: SIZES });
    hostA.attach();
    hostB.attach();
    reader = hostA.eventReader();
  });

  after(async () => {
    reader?.close();
    try {
      hostA?.destroy();
      hostB?.destroy();
      smA?.destroy();
      smB?.destroy();
    } finally {
      await net.dispose();
      rmSync(pinA, { recursive: true, force: true });
      rmSync(pinB, { recursive: true, force: true });
    }
  });

  const ask = (req: Record<string, unknown>) => client.ask(req);
  const tcp = (host: string, port: number, n = 1) => ask({ op: 'tcp', host, port, n });
  const udp = (host: string, port: number, n = 1, localPort?: number) =>
    ask({ op: 'udp', host, port, n, ...(localPort ? { localPort } : {}) });
  const drops = () =>
    decodeEvents(reader.drain()).filter((e) => e.type === EventType.Drop && e.subtype === DROP_NO_SERVICE);

  const backends = (port: number, which: ('A' | 'B')[]): BackendSpec[] =>
    which.map((n) => ({ ip: n === 'A' ? POD_A : POD_B, port, local: n === 'A' }));
  const nodePort = (
    port: number,
    protocol: Frontend['protocol'],
    which: ('A' | 'B')[],
    extra: Partial<ServiceSpec> = {},
  ): ServiceSpec => ({
    frontend: { ip: NODE_A, port, protocol },
    type: 'NodePort',
    backends: backends(protocol === 'TCP' ? 8080 : 5353, which),
    ...extra,
  });

  test('TCP to node A reaches the backends on both nodes; the remote one sees node A', async () => {
    smA.upsertService(nodePort(30080, 'TCP', ['A', 'B']));
    const seen = served(await tcp(NODE_A, 30080, 30));
    // Local backends see the client; a remote one sees the node that translated the source.
    for (const s of seen) assert.ok(s === `A ${WORLD}` || s === `B ${NODE_A}`, s);
    assert.deepEqual([...new Set(seen)].sort(), [`A ${WORLD}`, `B ${NODE_A}`]);
  });

  test('a service with only a remote backend: SNAT to a node port, replies back to the client', async () => {
    smA.upsertService(nodePort(30081, 'TCP', ['B']));
    assert.deepEqual(served(await tcp(NODE_A, 30081, 5)), Array(5).fill(`B ${NODE_A}`));
    const snat = hostA.connections().filter((c) => c.frontend === `${NODE_A}:30081`);
    assert.equal(snat.length, 5);
    for (const c of snat) {
      assert.equal(c.backend, `${POD_B}:8080`);
      assert.match(c.client, /^10\.240\.0\.250:\d+$/);
      const [ip, port] = (c.snat ?? '').split(':');
      assert.equal(ip, NODE_A);
      assert.ok(Number(port) >= 61000 && Number(port) <= 65535, `node port ${port}`);
      assert.ok(c.closing, 'the FIN went through the forward entry');
    }
    // Node B translated nothing: the reply went back to node A untouched.
    assert.deepEqual(hostB.connections(), []);
  });

  test('crafted packets: DNAT in, the reply back out, checksums verify (TCP, UDP, UDP without)', () => {
    smA.upsertService(nodePort(30090, 'TCP', ['A']));
    smA.upsertService(nodePort(30090, 'UDP', ['A']));
    const client = '198.51.100.7';
    const cases = [
      { proto: 6, sport: 12345, backendPort: 8080 },
      { proto: 17, sport: 12345, backendPort: 5353 },
      { proto: 17, sport: 12346, backendPort: 5353, noUdpChecksum: true },
    ] as const;
    for (const c of cases) {
      const what = `proto ${c.proto} from :${c.sport}`;
      const extra = 'noUdpChecksum' in c ? { noUdpChecksum: true } : {};
      const inbound = frame({
        src: client,
        dst: NODE_A,
        proto: c.proto,
        sport: c.sport,
        dport: 30090,
        ...extra,
      });
      const fwd = hostA.program('ingress').testRun({ data: inbound });
      assert.equal(fwd.retval, TC_ACT_OK, what);
      const f = readFrame(fwd.data);
      assert.equal(f.dst, `${POD_A}:${c.backendPort}`, what);
      assert.equal(f.src, `${client}:${c.sport}`, `${what}: local backend, source kept`);
      assert.ok(f.ipValid && f.l4Valid, `${what}: checksums after DNAT`);
      if ('noUdpChecksum' in c) assert.equal(f.l4Checksum, 0, 'no UDP checksum stays none');

      const reply = frame({
        src: POD_A,
        dst: client,
        proto: c.proto,
        sport: c.backendPort,
        dport: c.sport,
        ...extra,
      });
      const rev = hostA.program('egress').testRun({ data: reply });
      assert.equal(rev.retval, TC_ACT_OK, what);
      const r = readFrame(rev.data);
      assert.equal(r.src, `${NODE_A}:30090`, `${what}: the reply comes from the frontend`);
      assert.equal(r.dst, `${client}:${c.sport}`);
      assert.ok(r.ipValid && r.l4Valid, `${what}: checksums after reverse DNAT`);
    }
    // Not a frontend: untouched.
    const other = frame({ src: client, dst: NODE_A, proto: 6, sport: 1000, dport: 22 });
    const passed = hostA.program('ingress').testRun({ data: other });
    assert.equal(passed.retval, TC_ACT_OK);
    assert.deepEqual(passed.data, other);
  });

  test('bulk TCP both ways through the translated paths arrives intact', async () => {
    smA.upsertService({ ...nodePort(30085, 'TCP', ['B']), backends: [{ ip: POD_B, port: 8081 }] });
    smA.upsertService({
      ...nodePort(30086, 'TCP', ['A']),
      backends: [{ ip: POD_A, port: 8081, local: true }],
    });
    const size = 4 << 20;
    assert.deepEqual(served(await ask({ op: 'echo', host: NODE_A, port: 30085, size })), ['same']);
    assert.deepEqual(served(await ask({ op: 'echo', host: NODE_A, port: 30086, size })), ['same']);
  });

  test('UDP to node A: both backends, and every reply comes from the frontend', async () => {
    smA.upsertService(nodePort(30080, 'UDP', ['A', 'B']));
    const rs = await udp(NODE_A, 30080, 30);
    for (const r of rs) assert.equal(r.from, `${NODE_A}:30080`, r.error);
    const seen = served(rs);
    assert.deepEqual([...new Set(seen)].sort(), [`A ${WORLD}`, `B ${NODE_A}`]);
    smA.upsertService(nodePort(30081, 'UDP', ['B']));
    const [remote] = await udp(NODE_A, 30081);
    assert.equal(remote?.data, `B ${NODE_A}`);
    assert.equal(remote?.from, `${NODE_A}:30081`);
  });

  test('a connection stays on its backend: one client port, one backend', async () => {
    const seen = new Set(served(await udp(NODE_A, 30080, 8, 40123)));
    assert.equal(seen.size, 1, [...seen].join(' '));
    const pinned = hostA.connections().filter((c) => c.client === `${WORLD}:40123`);
    assert.equal(pinned.length, 1);
  });

  test('externalTrafficPolicy Local: only the local backend serves, and sees the client', async () => {
    smA.upsertService(nodePort(30082, 'TCP', ['A', 'B'], { externalTrafficPolicy: 'Local' }));
    smA.upsertService(nodePort(30082, 'UDP', ['A', 'B'], { externalTrafficPolicy: 'Local' }));
    assert.deepEqual(new Set(served(await tcp(NODE_A, 30082, 20))), new Set([`A ${WORLD}`]));
    const rs = await udp(NODE_A, 30082, 10);
    assert.deepEqual(new Set(served(rs)), new Set([`A ${WORLD}`]));
    for (const r of rs) assert.equal(r.from, `${NODE_A}:30082`);
    const local = hostA.connections().filter((c) => c.frontend === `${NODE_A}:30082`);
    assert.ok(local.length > 0 && local.every((c) => c.snat === undefined));
  });

  test('ClientIP affinity on the device: one client address, one backend, remembered by that address', async () => {
    smA.upsertService(nodePort(30087, 'TCP', ['A', 'B'], { affinityTimeoutSec: 60 }));
    // 20 connections from 20 source ports: random selection would use both (all one: 1 in 2^19).
    const seen = served(await tcp(NODE_A, 30087, 20));
    assert.equal(new Set(seen).size, 1, seen.join(' '));
    const ids = smA.upsertService(nodePort(30087, 'TCP', ['A', 'B'], { affinityTimeoutSec: 60 }));
    const entries = smA.maps.affinity.lookupBatch().filter(([k]) => k.rev_nat_index === ids.revNatIndex);
    assert.equal(entries.length, 1);
    const [key, val] = entries[0]!;
    // No socket on the device: the key is the client's address (as the packet carries it), not a netns.
    const world = new DataView(Uint8Array.from(WORLD.split('.').map(Number)).buffer).getUint32(0, true);
    assert.equal(key.netns_cookie, 0);
    assert.equal(BigInt(key.client_cookie), BigInt(world));
    assert.ok(ids.backendIds.includes(val.backend_id));
    smA.deleteService({ ip: NODE_A, port: 30087, protocol: 'TCP' });
  });

  test('an external IP routed to node A is served like a NodePort', async () => {
    smA.upsertService({
      frontend: { ip: EXTERNAL_IP, port: 80, protocol: 'TCP' },
      type: 'ExternalIP',
      backends: backends(8080, ['B']),
    });
    assert.deepEqual(served(await tcp(EXTERNAL_IP, 80, 3)), Array(3).fill(`B ${NODE_A}`));
  });

  test('no backend: the client gets no answer and a drop (158) is reported', async () => {
    reader.drain();
    smA.upsertService(nodePort(30083, 'TCP', []));
    // Local policy and only a remote backend: no backend either.
    smA.upsertService(nodePort(30084, 'UDP', ['B'], { externalTrafficPolicy: 'Local' }));
    assert.deepEqual(served(await tcp(NODE_A, 30083)), ['error TIMEOUT']);
    assert.deepEqual(served(await udp(NODE_A, 30084)), ['error TIMEOUT']);
    const ds = drops();
    assert.ok(ds.length >= 2, `${ds.length} drops`);
    assert.ok(ds.every((d) => d.ifindex === hostA.ifindex));
    assert.equal(hostA.connections().filter((c) => /:3008[34]$/.test(c.frontend)).length, 0);
  });

  test('removing the service stops it', async () => {
    assert.deepEqual(served(await tcp(NODE_A, 30081)), [`B ${NODE_A}`]);
    smA.deleteService({ ip: NODE_A, port: 30081, protocol: 'TCP' });
    smA.deleteService({ ip: NODE_A, port: 30081, protocol: 'UDP' });
    const [r] = await tcp(NODE_A, 30081);
    assert.equal(r?.data, undefined, 'no backend answered');
    assert.equal(r?.error, 'ECONNREFUSED', 'node A itself refuses: nothing listens on the port');
    assert.deepEqual(served(await udp(NODE_A, 30081)), ['error TIMEOUT']);
  });

  test('node B serves its own frontend, translating towards node A', async () => {
    smB.upsertService({
      frontend: { ip: NODE_B, port: 30080, protocol: 'TCP' },
      type: 'NodePort',
      backends: [
        { ip: POD_A, port: 8080 },
        { ip: POD_B, port: 8080, local: true },
      ],
    });
    const seen = new Set(served(await tcp(NODE_B, 30080, 30)));
    assert.deepEqual([...seen].sort(), [`A ${NODE_B}`, `B ${WORLD}`]);
    assert.ok(hostB.connections().some((c) => c.snat?.startsWith(`${NODE_B}:`)));
  });

  test('detaching stops translation; attaching again (replace) restores it, without fd leaks', async () => {
    await withoutFdLeak(async () => {
      hostA.detach();
      assert.equal(hostA.attached, false);
      assert.deepEqual(served(await tcp(NODE_A, 30082)), ['error ECONNREFUSED']);
      hostA.attach({ replace: true });
      assert.deepEqual(served(await tcp(NODE_A, 30082)), [`A ${WORLD}`]);
    });
  });
});
