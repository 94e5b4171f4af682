/**
 * The endpoint programs' cost on real traffic between two pods on one node:
 * (a) plain veths and routes, no programs; (b) Hypha's programs with enforcement on in
 * both directions and 100 policy entries in force. Request/response latency (sockperf
 * TCP ping-pong), connection setup rate (a connect/request/close loop) and stream
 * throughput (iperf3), as ratios (b)/(a) measured in the same run.
 *
 * This machine's noise is larger than the difference being measured, so: a warm-up of
 * each test and configuration is discarded; each test runs plain and Hypha back to back,
 * in alternating order, so noise from outside lands on both halves of a pair; client and
 * servers are pinned to separate CPUs, identically in both; the figures are medians, with
 * the lowest, median and highest per-round ratio beside them. The events ring is drained
 * and decoded throughout, as the agent does: an undrained ring fills within a second, and
 * then the programs would no longer pay for their events.
 *
 *   HYPHA_BENCH_ROUNDS (default 20), HYPHA_BENCH_SECONDS per run (default 2),
 *   HYPHA_BENCH_PIN=0 to leave placement to the scheduler,
 *   HYPHA_BENCH_OBJECT=path/to/lxc.o to measure another build (e.g. a previous commit's).
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Datapath, decodeEvents } from '../src/datapath/index.js';
import { type NetNs, NetScope } from '../src/lab/net/index.js';
import type { PolicyEntry } from '../src/policy/index.js';
import { wirePod } from '../test/helpers/pods.js';
import { figure, percentile, repoRoot, writeResults } from './report.js';

const NODE = join(repoRoot, 'node_modules/.bin/node');
const SECONDS = Number(process.env.HYPHA_BENCH_SECONDS ?? 2);
const ROUNDS = Number(process.env.HYPHA_BENCH_ROUNDS ?? 20);
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

/** Client on CPU 0, servers on CPU 1: the scheduler's placement is one noise source fewer. */
const PINNED = availableParallelism() >= 2 && process.env.HYPHA_BENCH_PIN !== '0';
const CLIENT_CPU = '0';
const SERVER_CPU = '1';
function pinned(cpu: string, command: string, args: string[]): [string, string[]] {
  return PINNED ? ['taskset', ['-c', cpu, command, ...args]] : [command, args];
}

type Test = 'rr' | 'crr' | 'stream';
const TESTS: Test[] = ['rr', 'crr', 'stream'];

function startServers(b: NetNs) {
  return [
    b.spawn(...pinned(SERVER_CPU, 'sockperf', ['server', '--tcp', '-i', B.ip, '-p', '11111']), {
      stdio: 'ignore',
    }),
    b.spawn(...pinned(SERVER_CPU, 'iperf3', ['-s', '-B', B.ip, '-p', '5201']), { stdio: 'ignore' }),
    b.spawn(
      ...pinned(SERVER_CPU, NODE, [
        '-e',
        `require('net').createServer(s=>{s.on('error',()=>{});s.on('data',()=>s.end('ok'))}).listen(7000,'${B.ip}')`,
      ]),
      { stdio: 'ignore' },
    ),
  ];
}

/** One test from pod A: TCP_RR in µs per transaction, TCP_CRR in connections/s, TCP_STREAM in Gbit/s. */
async function measure(a: NetNs, test: Test, seconds: number): Promise<number> {
  switch (test) {
    case 'rr': {
      const rr = await a.exec(
        ...pinned(CLIENT_CPU, 'sockperf', [
          'ping-pong',
          '--tcp',
          '-i',
          B.ip,
          '-p',
          '11111',
          '-t',
          String(seconds),
          '-m',
          '64',
        ]),
      );
      const lat =
        /avg-latency=([\d.]+)/.exec(rr.stdout + rr.stderr)?.[1] ??
        /Summary: Latency is ([\d.]+)/.exec(rr.stdout + rr.stderr)?.[1];
      if (!lat) throw new Error(`sockperf gave no latency: ${rr.stdout}${rr.stderr}`);
      return Number(lat);
    }
    case 'crr': {
      const crr = await a.exec(
        ...pinned(CLIENT_CPU, NODE, [
          '-e',
          `const n=require('net');let c=0;const end=Date.now()+${seconds * 1000};` +
            `(function go(){if(Date.now()>end){console.log(c/${seconds});return}` +
            `const s=n.connect(7000,'${B.ip}',()=>s.write('x'));s.on('data',()=>{});s.on('end',()=>{c++;s.destroy();go()});s.on('error',e=>{console.error(e.message);process.exit(1)})})()`,
        ]),
      );
      const rate = Number(crr.stdout.trim());
      if (!(rate > 0)) throw new Error(`the CRR client failed: ${crr.stdout}${crr.stderr}`);
      return rate;
    }
    case 'stream': {
      const stream = await a.exec(
        ...pinned(CLIENT_CPU, 'iperf3', ['-c', B.ip, '-p', '5201', '-t', String(seconds), '-J']),
      );
      const bps = (JSON.parse(stream.stdout) as { end: { sum_received: { bits_per_second: number } } }).end
        .sum_received.bits_per_second;
      return bps / 1e9;
    }
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

const dp = Datapath.open({
  pinDir: `/sys/fs/bpf/hypha/hybench-${process.pid}`,
  ...(process.env.HYPHA_BENCH_OBJECT ? { objectPath: process.env.HYPHA_BENCH_OBJECT } : {}),
});
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

async function hypha(test: Test, seconds: number): Promise<number> {
  attach();
  try {
    return await measure(podA, test, seconds);
  } finally {
    detach();
  }
}

// The agent's event loop, in this process: drain every batch and decode every record.
const stopDraining = new AbortController();
let records = 0;
const draining = (async () => {
  using reader = dp.eventReader();
  for await (const batch of reader.batches(stopDraining.signal)) records += decodeEvents(batch).length;
})();

const runs: Record<Test, { plain: number; hypha: number }[]> = { rr: [], crr: [], stream: [] };
const servers = startServers(podB);
try {
  dp.upsertIpcache(`${A.ip}/32`, A.identity);
  dp.upsertIpcache(`${B.ip}/32`, B.identity);
  await new Promise((r) => setTimeout(r, 800));
  // A warm-up round as long as the others, discarded: the first runs are slower in both.
  for (const test of TESTS) {
    await measure(podA, test, SECONDS);
    await hypha(test, SECONDS);
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const test of TESTS) {
      let pair: { plain: number; hypha: number };
      if (r % 2 === 0) {
        const plain = await measure(podA, test, SECONDS);
        pair = { plain, hypha: await hypha(test, SECONDS) };
      } else {
        const h = await hypha(test, SECONDS);
        pair = { plain: await measure(podA, test, SECONDS), hypha: h };
      }
      runs[test].push(pair);
      console.error(`round ${r + 1} ${test}: plain ${pair.plain}, Hypha ${pair.hypha}`);
    }
  }
} finally {
  for (const s of servers) s.kill('SIGTERM');
  stopDraining.abort();
  await draining;
  dp.destroy();
}

const med = (test: Test, side: 'plain' | 'hypha') =>
  percentile(
    runs[test].map((x) => x[side]),
    50,
  );
/** Per-round ratios, Hypha vs plain (above 1 is better for Hypha). */
const ratios = (test: Test) => runs[test].map((x) => (test === 'rr' ? x.plain / x.hypha : x.hypha / x.plain));
const spread = (name: string, test: Test) => [
  figure(`${name} ratio, lowest of ${ROUNDS} rounds`, Math.min(...ratios(test)), 'ratio'),
  figure(`${name} ratio, median of ${ROUNDS} rounds`, percentile(ratios(test), 50), 'ratio'),
  figure(`${name} ratio, highest of ${ROUNDS} rounds`, Math.max(...ratios(test)), 'ratio'),
];
const rr = { h: med('rr', 'hypha'), p: med('rr', 'plain') };
writeResults('datapath', [
  figure(`TCP_RR latency (sockperf ping-pong, 64 B), median of ${ROUNDS}, Hypha vs plain`, rr.h, 'µs', rr.p),
  figure('TCP_RR rate (1/latency), Hypha vs plain', 1e6 / rr.h, 'transactions/s', 1e6 / rr.p),
  figure(
    'TCP_CRR (connect, request, close), Hypha vs plain',
    med('crr', 'hypha'),
    'connections/s',
    med('crr', 'plain'),
  ),
  figure('TCP_STREAM (iperf3), Hypha vs plain', med('stream', 'hypha'), 'Gbit/s', med('stream', 'plain')),
  ...spread('TCP_RR rate', 'rr'),
  ...spread('TCP_CRR', 'crr'),
  ...spread('TCP_STREAM', 'stream'),
  figure('datapath events drained and decoded', records, 'records'),
]);
