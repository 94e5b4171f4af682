/**
 * The DNS redirect on real packets: a pod's DNS to a server under a dns rule is translated
 * to the DNS proxy (the real `hypha proxy dns` child, in the node's namespace, with this
 * test standing in for the agent on its IPC channel) and the answers come back from the
 * server's address. UDP and TCP; a denied name is REFUSED; with the proxy gone, DNS is
 * dropped with SOCKET_LOOKUP_FAILED (178), never let through to the server.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unpin } from '../../src/bpf/index.js';
import { Datapath, type DatapathEvent, decodeEvents, EventType } from '../../src/datapath/index.js';
import { type NetNs, NetScope } from '../../src/lab/net/index.js';
import type { PolicyEntry } from '../../src/policy/index.js';
import type { DnsRecord } from '../../src/proxy/dns/proxy.js';
import type { AgentToDnsProxy, DnsProxyToAgent } from '../../src/proxy/dns/rules.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';
import { wirePod } from '../helpers/pods.js';

const NODE = join(repoRoot, 'node_modules/.bin/node');
const CLI = join(repoRoot, 'dist/src/cli/main.js');
const PROXY = { ip: '10.99.53.1', port: 10053 };
const A = {
  ip: '10.244.9.10',
  identity: 6001,
  id: 21,
  mac: '02:00:0a:f4:09:0a',
  hostMac: '02:00:0a:f4:09:aa',
};
const B = {
  ip: '10.244.9.20',
  identity: 6002,
  id: 22,
  mac: '02:00:0a:f4:09:14',
  hostMac: '02:00:0a:f4:09:bb',
};

/** A client in pod A: one query, prints JSON {rcode, ips, from} or {timeout}. */
const CLIENT = `
const [, server, name, transport] = process.argv;
const { decodeMessage, encodeMessage, query } = require(${JSON.stringify(join(repoRoot, 'dist/src/dns/message.js'))});
{
  const q = encodeMessage(query(4242, name, 1));
  const done = (o) => { process.stdout.write(JSON.stringify(o)); process.exit(0); };
  setTimeout(() => done({ timeout: true }), 1500);
  const show = (buf, from) => { const r = decodeMessage(buf);
    done({ rcode: r.rcode, ips: r.answers.map((a) => a.data.address), from }); };
  if (transport === 'tcp') {
    const s = require('net').connect(53, server);
    const f = Buffer.alloc(2 + q.length); f.writeUInt16BE(q.length); f.set(q, 2);
    let b = Buffer.alloc(0);
    s.on('data', (d) => { b = Buffer.concat([b, d]);
      if (b.length >= 2 + b.readUInt16BE(0)) show(b.subarray(2, 2 + b.readUInt16BE(0)), s.remoteAddress + ':' + s.remotePort); });
    s.on('error', () => {});
    s.write(f);
  } else {
    const u = require('dgram').createSocket('udp4');
    u.on('message', (msg, r) => show(msg, r.address + ':' + r.port));
    u.send(q, 53, server);
  }
}
`;

describe('DNS redirect to the DNS proxy', { skip: skipUnlessPrivileged() }, () => {
  const net = new NetScope();
  const pinDir = `/sys/fs/bpf/hypha/hytest-dnsp-${process.pid}`;
  let node: NetNs;
  let podA: NetNs;
  let podB: NetNs;
  let dp: Datapath;
  let server: ChildProcess;
  let proxy: ChildProcess | undefined;
  let reader: ReturnType<Datapath['eventReader']>;
  const records: DnsRecord[] = [];
  const answers: string[] = [];
  const ifindex: Record<string, number> = {};
  const dir = join('/tmp', `hytest-dnsp-${process.pid}`);

  const startProxy = async () => {
    const child = spawn(
      'nsenter',
      [
        `--net=/var/run/netns/${node.name}`,
        '--',
        NODE,
        CLI,
        'proxy',
        'dns',
        '--address',
        PROXY.ip,
        '--port',
        String(PROXY.port),
        '--pin-dir',
        pinDir,
      ],
      { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] },
    );
    const send = (m: AgentToDnsProxy) => child.send(m);
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (c) => reject(new Error(`proxy exited with ${c}`)));
      child.on('message', (raw) => {
        const m = raw as DnsProxyToAgent;
        if (m.type === 'ready') {
          send({
            type: 'rules',
            endpoints: [
              {
                id: A.id,
                identity: A.identity,
                rules: [17, 6].map((protocol) => ({
                  identity: B.identity,
                  protocol,
                  port: 53,
                  portPrefixLen: 16,
                  selectors: [{ matchPattern: '*.allowed.example' }],
                  cookie: 9,
                })),
              },
            ],
          });
          resolve();
        } else if (m.type === 'answer') {
          answers.push(`${m.name}=${m.ips.join(',')}`);
          send({ type: 'applied', seq: m.seq });
        } else if (m.type === 'batch') records.push(...m.records);
      });
    });
    proxy = child;
  };
  const stopProxy = async () => {
    const p = proxy;
    proxy = undefined;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill('SIGTERM');
    });
  };

  before(async () => {
    node = await net.netns({ prefix: 'nd' });
    podA = await net.netns({ prefix: 'pa' });
    podB = await net.netns({ prefix: 'pb' });
    await node.sysctl('net.ipv4.ip_forward', 1);
    await node.addAddress('lo', `${PROXY.ip}/32`);
    await node.setUp('lo');
    for (const [pod, p, host] of [
      [podA, A, 'hydpA'],
      [podB, B, 'hydpB'],
    ] as const)
      ifindex[host] = await wirePod(node, pod, { ip: p.ip, mac: p.mac, hostMac: p.hostMac, host });
    dp = Datapath.open({ pinDir, dnsProxy: PROXY });
    reader = dp.eventReader();
    dp.upsertIpcache(`${A.ip}/32`, A.identity);
    dp.upsertIpcache(`${B.ip}/32`, B.identity);
    for (const [host, p] of [
      ['hydpA', A],
      ['hydpB', B],
    ] as const)
      dp.attachEndpoint({
        id: p.id,
        ip4: p.ip,
        identity: p.identity,
        hostIfname: host,
        hostIfindex: ifindex[host]!,
        netns: node.name!,
        enforceIngress: false,
        enforceEgress: p === A,
      });
    const entry = (protocol: number): PolicyEntry => ({
      direction: 'egress',
      identity: B.identity,
      protocol,
      port: 53,
      portPrefixLen: 16,
      verdict: 'redirect',
      proxy: 'dns',
      l7: { dns: [{ matchPattern: '*.allowed.example' }] },
      cookie: 9,
    });
    dp.applyPolicy(A.id, { added: [entry(17), entry(6)], removed: [] });
    // The cluster DNS on pod B.
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    const zone = join(dir, 'zone.json');
    writeFileSync(
      zone,
      JSON.stringify({
        domain: 'cluster.local',
        ttl: 30,
        services: [],
        hosts: [
          { name: 'api.allowed.example', ip: '203.0.113.10' },
          { name: 'denied.example', ip: '203.0.113.20' },
        ],
      }),
    );
    server = podB.spawn(NODE, [CLI, 'lab', 'dns-server', '--zone-file', zone, '--port', '53'], {
      stdio: 'ignore',
    });
    await startProxy();
    await new Promise((r) => setTimeout(r, 300));
  });
  after(async () => {
    await stopProxy();
    server?.kill('SIGKILL');
    reader?.close();
    if (dp) dp.destroy();
    else unpin(pinDir);
    await net.dispose();
    const { rmSync } = await import('node:fs');
    rmSync(dir, { recursive: true, force: true });
  });

  /** The first record matching, waiting for the proxy's next batch if need be. */
  const record = async (pred: (r: DnsRecord) => boolean) => {
    for (let i = 0; i < 40 && !records.some(pred); i++) await new Promise((r) => setTimeout(r, 25));
    return records.find(pred);
  };
  const ask = async (name: string, transport: 'udp' | 'tcp' = 'udp') => {
    const r = await podA.exec(NODE, ['-e', CLIENT, '--', B.ip, name, transport]);
    return JSON.parse(r.stdout || '{}') as {
      rcode?: number;
      ips?: string[];
      from?: string;
      timeout?: boolean;
    };
  };
  // IPv4 only: the node's IPv6 neighbour discovery is dropped with 139 and is not this test's.
  const events = (): DatapathEvent[] =>
    decodeEvents(reader.drain()).filter((e) => e.subtype !== 139 || e.type !== EventType.Drop);

  test('UDP: an allowed name is answered from the server address, through the proxy', async () => {
    const r = await ask('api.allowed.example');
    assert.deepEqual(r, { rcode: 0, ips: ['203.0.113.10'], from: `${B.ip}:53` });
    assert.deepEqual(answers, ['api.allowed.example=203.0.113.10']);
    const resp = await record((x) => x.type === 'response' && x.name === 'api.allowed.example');
    assert.equal(resp?.verdict, 'forwarded');
    assert.equal(resp?.endpointId, A.id);
    assert.deepEqual(resp?.destination, { ip: B.ip, port: 53 });
    assert.equal(resp?.upstreamIdentity, B.identity);
    assert.equal(resp?.cookie, 9);
    const evs = events();
    assert.ok(
      evs.some((e) => e.type === EventType.Trace && e.subtype === 1 && e.proxy_port === PROXY.port),
      'the first packet is traced to the proxy',
    );
    assert.ok(
      !evs.some((e) => e.type === EventType.Drop),
      String(evs.filter((e) => e.type === EventType.Drop).map((e) => e.subtype)),
    );
  });

  test('UDP: another name is REFUSED by the proxy, and the server never sees it', async () => {
    const r = await ask('denied.example');
    assert.equal(r.rcode, 5);
    assert.equal(r.from, `${B.ip}:53`);
    assert.ok(
      await record((x) => x.type === 'query' && x.verdict === 'refused' && x.name === 'denied.example'),
    );
    assert.ok(!answers.some((a) => a.startsWith('denied.example')));
  });

  test('TCP: the same rules over a stream', async () => {
    assert.deepEqual(await ask('api.allowed.example', 'tcp'), {
      rcode: 0,
      ips: ['203.0.113.10'],
      from: `${B.ip}:53`,
    });
    assert.equal((await ask('denied.example', 'tcp')).rcode, 5);
    assert.ok(await record((x) => x.transport === 'tcp' && x.name === 'api.allowed.example'));
  });

  test('with the proxy down, DNS is dropped with 178, not sent to the server', async () => {
    await stopProxy();
    events();
    const r = await ask('api.allowed.example');
    assert.equal(r.timeout, true);
    const drops = events().filter((e) => e.type === EventType.Drop);
    assert.ok(
      drops.length > 0 && drops.every((e) => e.subtype === 178),
      JSON.stringify(drops.map((d) => d.subtype)),
    );
    await startProxy();
    assert.equal((await ask('api.allowed.example')).rcode, 0, 'back once the proxy is');
  });
});
