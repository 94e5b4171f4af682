/**
 * The endpoint programs' cost on real traffic between two pods on one node:
 * (a) plain veths and routes, no programs; (b) Hypha's programs with enforcement on in
 * both directions and 100 policy entries in force. Request/response latency (sockperf
 * TCP ping-pong), connection setup rate (a connect/request/close loop) and stream
 * throughput (iperf3), as ratios (b)/(a) measured in the same run.
 */
import { join } from 'node:path';
import { Datapath } from '../src/datapath/index.js';
import { type NetNs, NetScope } from '../src/lab/net/index.js';
import type { PolicyEntry } from '../src/policy/index.js';
import { wirePod } from '../test/helpers/pods.js';
import { figure, percentile, repoRoot, writeResults } from './report.js';

const NODE = join(repoRoot, 'node_modules/.bin/node');
const SECONDS = Number(process.env.HYPHA_BENCH_SECONDS ?? 4);
const A = {
  ip: '10.244.9.10',
  identity: 7001,
  id: 21,
  mac: '02:00:0a:f4:09:0a',
  hostMac: '02:00:0a:f4:09:aa',
};
const B = {
  ip: '10.244.9.20',
  identity: 7002,
  id: 22,
  mac: '02:00:0a:f4:09:14',
  hostMac: '02:00:0a:f4:09:bb',
};

async function measure(a: NetNs, b: NetNs) {
  const servers = [
    b.spawn('sockperf', ['server', '--tcp', '-i', B.ip, '-p', '11111'], { stdio: 'ignore' }),
    b.spawn('iperf3', ['-s', '-B', B.ip, '-p', '5201'], { stdio: 'ignore' }),
    b.spawn(
      NODE,
      [
        '-e',
        `require('net').createServer(s=>{s.on('error',()=>{});s.on('data',()=>s.end('ok'))}).listen(7000,'${B.ip}')`,
      ],
      {
        stdio: 'ignore',
      },
    ),
  ];
  await new Promise((r) => setTimeout(r, 800));
  try {
    const rr = await a.exec('sockperf', [
      'ping-pong',
      '--tcp',
      '-i',
      B.ip,
      '-p',
      '11111',
      '-t',
      String(SECONDS),
      '-m',
      '64',
    ]);
    const lat =
      /avg-latency=([\d.]+)/.exec(rr.stdout + rr.stderr)?.[1] ??
      /Summary: Latency is ([\d.]+)/.exec(rr.stdout + rr.stderr)?.[1];
    if (!lat) throw new Error(`sockperf gave no latency: ${rr.stdout}${rr.stderr}`);
    const crr = await a.exec(NODE, [
      '-e',
      `const n=require('net');let c=0;const end=Date.now()+${SECONDS * 1000};` +
        `(function go(){if(Date.now()>end){console.log(c/${SECONDS});return}` +
        `const s=n.connect(7000,'${B.ip}',()=>s.write('x'));s.on('data',()=>{});s.on('end',()=>{c++;s.destroy();go()});s.on('error',e=>{console.error(e.message);process.exit(1)})})()`,
    ]);
    const stream = await a.exec('iperf3', ['-c', B.ip, '-p', '5201', '-t', String(SECONDS), '-J']);
    const bps = (JSON.parse(stream.stdout) as { end: { sum_received: { bits_per_second: number } } }).end
      .sum_received.bits_per_second;
    return { rrUs: Number(lat), crrPerS: Number(crr.stdout.trim()), streamGbps: bps / 1e9 };
  } finally {
    for (const s of servers) s.kill('SIGTERM');
  }
}

await using net = new NetScope();
const node = await net.netns({ prefix: 'bn' });
const podA = await net.netns({ prefix: 'ba' });
const podB = await net.netns({ prefix: 'bb' });
await node.sysctl('net.ipv4.ip_forward', 1);
const ifindex: Record<string, number> = {};
for (const [pod, p, host] of [
  [podA, A, 'hybA'],
  [podB, B, 'hybB'],
] as const) {
  await pod.setUp('lo');
  ifindex[host] = await wirePod(node, pod, { ip: p.ip, mac: p.mac, hostMac: p.hostMac, host });
}

const dp = Datapath.open({ pinDir: `/sys/fs/bpf/hypha/hybench-${process.pid}` });
const entry = (
  direction: 'ingress' | 'egress',
  identity: number,
  port: number,
  cookie: number,
): PolicyEntry => ({
  direction,
  identity,
  protocol: 6,
  port,
  portPrefixLen: 16,
  verdict: 'allow',
  cookie,
});

function attach() {
  for (const [host, p] of [
    ['hybA', A],
    ['hybB', B],
  ] as const) {
    dp.attachEndpoint({
      id: p.id,
      ip4: p.ip,
      identity: p.identity,
      hostIfname: host,
      hostIfindex: ifindex[host]!,
      netns: node.name!,
      enforceIngress: true,
      enforceEgress: true,
    });
  }
  // 100 policy entries in force: 48 unrelated ones per endpoint, plus what the traffic needs.
  for (const [p, peer] of [
    [A, B],
    [B, A],
  ] as const) {
    const added: PolicyEntry[] = [];
    for (let i = 0; i < 48; i++) added.push(entry(i % 2 ? 'ingress' : 'egress', 9000 + i, 1000 + i, i + 1));
    for (const port of [11111, 5201, 7000])
      added.push(entry(p === A ? 'egress' : 'ingress', peer.identity, port, 100 + port));
    dp.applyPolicy(p.id, { added, removed: [] });
  }
}

function detach() {
  dp.detachEndpoint(A.id, ifindex.hybA!);
  dp.detachEndpoint(B.id, ifindex.hybB!);
}

// Alternate plain and Hypha runs and take medians: this machine's noise is larger than the
// difference being measured, and alternating spreads it evenly over both.
const ROUNDS = Number(process.env.HYPHA_BENCH_ROUNDS ?? 3);
const runs: { plain: Awaited<ReturnType<typeof measure>>; hypha: Awaited<ReturnType<typeof measure>> }[] = [];
try {
  dp.upsertIpcache(`${A.ip}/32`, A.identity);
  dp.upsertIpcache(`${B.ip}/32`, B.identity);
  for (let r = 0; r < ROUNDS; r++) {
    const plain = await measure(podA, podB);
    attach();
    const hypha = await measure(podA, podB);
    detach();
    runs.push({ plain, hypha });
  }
} finally {
  dp.destroy();
}
const med = (f: (x: (typeof runs)[number]) => number) => percentile(runs.map(f), 50);
const rr = { h: med((x) => x.hypha.rrUs), p: med((x) => x.plain.rrUs) };
writeResults('datapath', [
  figure(`TCP_RR latency (sockperf ping-pong, 64 B), median of ${ROUNDS}, Hypha vs plain`, rr.h, 'µs', rr.p),
  figure('TCP_RR rate (1/latency), Hypha vs plain', 1e6 / rr.h, 'transactions/s', 1e6 / rr.p),
  figure(
    'TCP_CRR (connect, request, close), Hypha vs plain',
    med((x) => x.hypha.crrPerS),
    'connections/s',
    med((x) => x.plain.crrPerS),
  ),
  figure(
    'TCP_STREAM (iperf3), Hypha vs plain',
    med((x) => x.hypha.streamGbps),
    'Gbit/s',
    med((x) => x.plain.streamGbps),
  ),
]);
