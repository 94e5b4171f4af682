/**
 * Real packets: two pods and a node as network namespaces, the endpoint programs on the
 * pods' host-side veths, and policy enforced on TCP, UDP and ICMP traffic between them.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Datapath, type DatapathEvent, decodeEvents, EventType } from '../../src/datapath/index.js';
import { type NetNs, NetScope } from '../../src/lab/net/index.js';
import type { PolicyEntry } from '../../src/policy/index.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';
import { wirePod } from '../helpers/pods.js';

const NODE = join(repoRoot, 'node_modules/.bin/node');
const A = {
  ip: '10.244.7.10',
  identity: 5001,
  id: 11,
  mac: '02:00:0a:f4:07:0a',
  hostMac: '02:00:0a:f4:07:aa',
};
const B = {
  ip: '10.244.7.20',
  identity: 5002,
  id: 12,
  mac: '02:00:0a:f4:07:14',
  hostMac: '02:00:0a:f4:07:bb',
};

describe('endpoint programs on real traffic', { skip: skipUnlessPrivileged() }, () => {
  const net = new NetScope();
  const pinDir = `/sys/fs/bpf/hypha/hytest-veth-${process.pid}`;
  let node: NetNs;
  let podA: NetNs;
  let podB: NetNs;
  let dp: Datapath;
  let server: ChildProcess;
  let reader: ReturnType<Datapath['eventReader']>;
  const ifindex: Record<string, number> = {};

  before(async () => {
    node = await net.netns({ prefix: 'nd' });
    podA = await net.netns({ prefix: 'pa' });
    podB = await net.netns({ prefix: 'pb' });
    await node.sysctl('net.ipv4.ip_forward', 1);
    for (const [pod, p, host] of [
      [podA, A, 'hyvA'],
      [podB, B, 'hyvB'],
    ] as const) {
      ifindex[host] = await wirePod(node, pod, { ip: p.ip, mac: p.mac, hostMac: p.hostMac, host });
    }
    dp = Datapath.open({ pinDir });
    reader = dp.eventReader();
    dp.upsertIpcache(`${A.ip}/32`, A.identity);
    dp.upsertIpcache(`${B.ip}/32`, B.identity);
    for (const [host, p] of [
      ['hyvA', A],
      ['hyvB', B],
    ] as const) {
      dp.attachEndpoint({
        id: p.id,
        ip4: p.ip,
        identity: p.identity,
        hostIfname: host,
        hostIfindex: ifindex[host]!,
        netns: node.name!,
        enforceIngress: false,
        enforceEgress: false,
      });
    }
    // An echo server for TCP and UDP on pod B.
    server = podB.spawn(NODE, [
      '-e',
      `const n=require('net'),d=require('dgram');n.createServer(s=>{s.on('error',()=>{});s.pipe(s)}).listen(8080);` +
        `const u=d.createSocket('udp4');u.on('message',(m,r)=>u.send(m,r.port,r.address));u.bind(5353);`,
    ]);
    await new Promise((r) => setTimeout(r, 400));
  });
  after(async () => {
    reader?.close();
    dp?.destroy();
    await net.dispose();
  });

  const tcp = (port: number, seconds = 2) =>
    podA.exec('timeout', [
      String(seconds),
      'bash',
      '-c',
      `exec 3<>/dev/tcp/${B.ip}/${port} && echo hello >&3 && head -c 5 <&3`,
    ]);
  const ping = (from = A.ip) => podA.exec('ping', ['-c', '1', '-W', '1', '-I', from, B.ip]);
  const events = (): DatapathEvent[] => decodeEvents(reader.drain());
  const ingressAllow = (e: Partial<PolicyEntry>): PolicyEntry => ({
    direction: 'ingress',
    identity: A.identity,
    protocol: 6,
    port: 8080,
    portPrefixLen: 16,
    verdict: 'allow',
    cookie: 3,
    ...e,
  });

  test('with no policy, TCP, UDP and ICMP flow between the pods', async () => {
    assert.equal((await tcp(8080)).stdout, 'hello');
    assert.equal((await ping()).code, 0);
    const udp = await podA.exec('timeout', [
      '2',
      NODE,
      '-e',
      `const u=require('dgram').createSocket('udp4');u.on('message',m=>{process.stdout.write(m);process.exit(0)});u.send('ping!',5353,'${B.ip}')`,
    ]);
    assert.equal(udp.stdout, 'ping!');
    assert.ok(events().some((e) => e.type === EventType.Trace));
  });

  test('ingress enforcement admits only what the policy allows, and reports the drops', async () => {
    dp.updateEndpoint(ifindex.hyvB!, { enforceIngress: true });
    dp.applyPolicy(B.id, { added: [ingressAllow({})], removed: [] });
    events();
    assert.equal((await tcp(8080)).stdout, 'hello', 'TCP 8080 from A is allowed');
    assert.notEqual((await ping()).code, 0, 'ICMP is not');
    const drops = events().filter((e) => e.type === EventType.Drop);
    assert.ok(
      drops.some((e) => e.subtype === 133 && e.src_identity === A.identity && e.dst_identity === B.identity),
      drops.map((e) => `${e.subtype} ${e.src_identity}->${e.dst_identity}`).join(', '),
    );
  });

  test('removing the allow stops new connections at once while an open one keeps flowing', async () => {
    const loop = podA.exec('bash', [
      '-c',
      `exec 3<>/dev/tcp/${B.ip}/8080 || exit 9; for i in $(seq 1 15); do echo $i >&3; read -t 2 line <&3 || exit 1; sleep 0.1; done; echo ok`,
    ]);
    await new Promise((r) => setTimeout(r, 400));
    dp.applyPolicy(B.id, { added: [], removed: [ingressAllow({})] });
    const fresh = await tcp(8080, 2);
    assert.notEqual(fresh.stdout, 'hello', 'a new connection is dropped');
    const open = await loop;
    assert.equal(
      open.stdout.trim(),
      'ok',
      `the established connection completed (${open.code} ${open.stderr})`,
    );
  });

  test('a deny wins over an allow for the same peer', async () => {
    dp.applyPolicy(B.id, {
      added: [
        ingressAllow({}),
        ingressAllow({ identity: 0, protocol: 0, port: 0, portPrefixLen: 0, verdict: 'deny', cookie: 8 }),
      ],
      removed: [],
    });
    events();
    assert.notEqual((await tcp(8080)).stdout, 'hello');
    assert.ok(events().some((e) => e.type === EventType.Drop && e.subtype === 181 && e.cookie === 8));
  });

  test('a pod sending from an address that is not its own is dropped with 132', async () => {
    await podA.addAddress('eth0', '10.244.7.99/32');
    events();
    assert.notEqual((await ping('10.244.7.99')).code, 0);
    assert.ok(events().some((e) => e.type === EventType.Drop && e.subtype === 132 && e.source === A.id));
  });

  test('the server is still up (nothing crashed on the way)', () => {
    assert.equal(server.exitCode, null);
  });
});
