/**
 * kube-proxy replacement against kube-proxy's iptables mode, side by side in one run.
 * For N = 10, 1,000, 10,000 and 100,000 services (one target, the rest filler), connection
 * setup latency to the target's ClusterIP (a C connect/read/close loop,
 * bench/native/connect_bench.c), with:
 *  - iptables: kube-proxy's KUBE-SERVICES/KUBE-SVC-/KUBE-SEP- chains loaded with
 *    iptables-restore into client namespaces of their own, the target's rule last in the
 *    chain;
 *  - Hypha: the same services in the socket load balancer's maps, the client in a cgroup
 *    with the programs attached, in a namespace without iptables rules.
 * Reported: latency(N)/latency(10) for each, and the time to apply one service change at
 * each N (iptables: a full iptables-restore, as kube-proxy's full sync writes it; Hypha:
 * one upsert of the changed service).
 *
 * latency(10) is measured alongside every N, not once at the start: a second load balancer
 * (its own maps and cgroup) and a second iptables namespace hold the 10-service set, and
 * the rounds of the four clients alternate. On a shared machine the connect latency drifts
 * by a tenth or more over a run; measured apart, that drift showed up as a step between
 * the first N and the rest.
 *
 *   node dist/bench/services.js [maxServices] [--no-iptables]
 *
 * A whole run writes bench/results/services.json; a partial one (fewer services, or
 * Hypha alone, for a quick look) prints its figures only.
 * HYPHA_BENCH_CONNECTS (default 1000) connects per round, HYPHA_BENCH_ROUNDS (default 8)
 * rounds per client and N; a client's figure is the median of its rounds' p50s.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Root } from '../src/bpf/index.js';
import { ServiceMaps, type ServiceSpec } from '../src/datapath/index.js';
import { type NetNs, NetScope } from '../src/lab/net/index.js';
import { type BenchService, iptablesRules } from './kube-proxy-iptables.js';
import { type Figure, figure, repoRoot, writeResults } from './report.js';

const args = process.argv.slice(2);
const MAX = Number(args.find((a) => !a.startsWith('--')) ?? 100_000);
const IPTABLES = !args.includes('--no-iptables');
const SIZES = [10, 1_000, 10_000, 100_000].filter((n) => n <= MAX);
const CONNECTS = Number(process.env.HYPHA_BENCH_CONNECTS ?? 1000);
const ROUNDS = Number(process.env.HYPHA_BENCH_ROUNDS ?? 8);
const CONNECT_BENCH = join(repoRoot, 'dist/bench/native/connect_bench');
const NODE = join(repoRoot, 'node_modules/.bin/node');
const BACKEND = { ip: '10.250.0.2', port: 8080 };

/** Service i's ClusterIP in 10.96.0.0/12, last octets 1 to 254: every service its own address. */
const clusterIp = (i: number) => {
  const k = Math.floor(i / 254);
  return `10.${96 + (k >> 8)}.${k & 255}.${(i % 254) + 1}`;
};

function services(n: number): BenchService[] {
  return Array.from({ length: n }, (_, i) => ({
    namespace: 'bench',
    name: `svc-${i}`,
    ip: clusterIp(i),
    port: 80,
    // Filler services point at other addresses; the target (last) at the real server.
    backends:
      i === n - 1
        ? [BACKEND]
        : [
            { ip: `10.251.${(i >> 8) & 255}.${i & 255 || 1}`, port: 8080 },
            { ip: `10.252.${(i >> 8) & 255}.${i & 255 || 1}`, port: 8080 },
          ],
  }));
}

const toSpec = (s: BenchService): ServiceSpec => ({
  frontend: { ip: s.ip, port: s.port, protocol: 'TCP' },
  type: 'ClusterIP',
  backends: s.backends.filter((b, i, all) => all.findIndex((x) => x.ip === b.ip && x.port === b.port) === i),
});

const median = (v: readonly number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;

await using net = new NetScope();
const run = (argv: string[], input?: string) =>
  execFileSync(argv[0]!, argv.slice(1), { ...(input !== undefined ? { input } : {}), maxBuffer: 1 << 30 });
const srv = await net.netns({ prefix: 'bss' });
run(['ip', '-n', srv.name!, 'link', 'set', 'lo', 'up']);
run(['ip', '-n', srv.name!, 'addr', 'add', `${BACKEND.ip}/32`, 'dev', 'lo']);
/** A client namespace with its own link to the server's namespace, ClusterIPs routed there. */
async function clientNetns(i: number): Promise<NetNs> {
  const ns = await net.netns({ prefix: 'bsc' });
  const [here, there] = [`hybs${i}c`, `hybs${i}s`];
  run([
    'ip',
    'link',
    'add',
    here,
    'netns',
    ns.name!,
    'type',
    'veth',
    'peer',
    'name',
    there,
    'netns',
    srv.name!,
  ]);
  run(['ip', '-n', ns.name!, 'addr', 'add', `10.250.${i + 1}.1/24`, 'dev', here]);
  run(['ip', '-n', srv.name!, 'addr', 'add', `10.250.${i + 1}.2/24`, 'dev', there]);
  for (const [n, dev] of [
    [ns.name!, here],
    [srv.name!, there],
    [ns.name!, 'lo'],
  ] as const)
    run(['ip', '-n', n, 'link', 'set', dev, 'up']);
  run(['ip', '-n', ns.name!, 'route', 'add', `${BACKEND.ip}/32`, 'via', `10.250.${i + 1}.2`]);
  run(['ip', '-n', ns.name!, 'route', 'add', '10.96.0.0/12', 'dev', here]);
  return ns;
}
const hyNs = await clientNetns(0);
const ipt10Ns = IPTABLES ? await clientNetns(1) : undefined;
const iptNs = IPTABLES ? await clientNetns(2) : undefined;
const server = spawn(
  'nsenter',
  [
    `--net=/var/run/netns/${srv.name}`,
    '--',
    NODE,
    '-e',
    `require('net').createServer(s=>{s.on('error',()=>{});s.end('x')}).listen(${BACKEND.port},'${BACKEND.ip}')`,
  ],
  { stdio: 'ignore' },
);
const cgroups = ['n', '10'].map((s) => join(cgroup2Root(), `hybench-svc${s}-${process.pid}`));
for (const c of cgroups) mkdirSync(c);
const pinDirs = ['n', '10'].map((s) => `/sys/fs/bpf/hypha/hybench-svc${s}-${process.pid}`);
const figures: Figure[] = [];
const p50 = (ns: NetNs, target: string, cgroup?: string) =>
  (
    JSON.parse(
      run([
        'nsenter',
        `--net=/var/run/netns/${ns.name}`,
        '--',
        ...(cgroup ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup] : []),
        CONNECT_BENCH,
        target,
        '80',
        String(CONNECTS),
      ]).toString(),
    ) as { p50: number }
  ).p50;
/**
 * Rounds of every client in turn (the order reversed every other round), after one
 * uncounted warm-up round; the median p50 of each.
 */
function interleaved(clients: (() => number)[]): number[] {
  for (const c of clients) c();
  const rounds: number[][] = clients.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    const order = clients.map((_, i) => i);
    if (r % 2) order.reverse();
    for (const i of order) rounds[i]!.push(clients[i]!());
  }
  return rounds.map(median);
}
const iptRestore = (ns: NetNs, rules: string) =>
  run(['ip', 'netns', 'exec', ns.name!, 'iptables-restore'], rules);

const lbs: ServiceMaps[] = [];
try {
  await new Promise((r) => setTimeout(r, 500));
  const [lb, lb10] = pinDirs.map((pinDir, i) => {
    const m = ServiceMaps.open({ pinDir });
    lbs.push(m);
    m.attach(cgroups[i]!);
    return m;
  }) as [ServiceMaps, ServiceMaps];
  const ten = services(10);
  const tenTarget = ten[9]!.ip;
  lb10.upsertServices(ten.map(toSpec));
  if (ipt10Ns) iptRestore(ipt10Ns, iptablesRules(ten));
  for (const n of SIZES) {
    const svcs = services(n);
    const target = svcs[n - 1]!;
    const changed = [...svcs];
    changed[0] = { ...changed[0]!, backends: [{ ip: '10.253.0.1', port: 8080 }] };
    // iptables: the whole table, then a change rewritten the way a full sync writes it.
    let iptLoad = Number.NaN;
    let iptChange = Number.NaN;
    if (iptNs) {
      // A restore replaces the whole nat table; the changed one stays for the latency runs
      // (its change is to the first service, the target is the last).
      let t = performance.now();
      iptRestore(iptNs, iptablesRules(svcs));
      iptLoad = performance.now() - t;
      const rules2 = iptablesRules(changed);
      t = performance.now();
      iptRestore(iptNs, rules2);
      iptChange = performance.now() - t;
    }
    // Hypha: the same services in the maps (what is there from the last N stays: only new ones are written).
    let t = performance.now();
    lb.upsertServices(svcs.map(toSpec));
    const hyLoad = performance.now() - t;
    t = performance.now();
    lb.upsertService(toSpec(changed[0]!));
    const hyChange = performance.now() - t;
    lb.upsertService(toSpec(svcs[0]!));

    const clients = [() => p50(hyNs, target.ip, cgroups[0]), () => p50(hyNs, tenTarget, cgroups[1])];
    if (iptNs && ipt10Ns)
      clients.push(
        () => p50(iptNs, target.ip),
        () => p50(ipt10Ns, tenTarget),
      );
    const [hyLat, hy10, iptLat = Number.NaN, ipt10 = Number.NaN] = interleaved(clients) as [
      number,
      number,
      number?,
      number?,
    ];
    console.log(
      `N=${n}: hypha p50 ${hyLat.toFixed(1)} µs (10 services alongside: ${hy10.toFixed(1)} µs; load ${(hyLoad / 1000).toFixed(2)} s, change ${hyChange.toFixed(2)} ms)` +
        (iptNs
          ? `; iptables p50 ${iptLat.toFixed(1)} µs (10 alongside: ${ipt10.toFixed(1)} µs; load ${(iptLoad / 1000).toFixed(2)} s, change ${iptChange.toFixed(0)} ms)`
          : ''),
    );
    figures.push(
      figure(`connect p50 to the target ClusterIP, ${n} services, Hypha, vs Hypha at 10`, hyLat, 'µs', hy10),
    );
    if (iptNs)
      figures.push(
        figure(
          `connect p50 to the target ClusterIP, ${n} services, iptables, vs iptables at 10`,
          iptLat,
          'µs',
          ipt10,
        ),
        figure(`connect p50, ${n} services, Hypha vs iptables`, hyLat, 'µs', iptLat),
        figure(
          `apply one service change, ${n} services, Hypha vs iptables full restore`,
          hyChange,
          'ms',
          iptChange,
        ),
        figure(`load ${n} services, Hypha vs iptables-restore`, hyLoad / 1000, 's', iptLoad / 1000),
      );
    else
      figures.push(
        figure(`apply one service change, ${n} services, Hypha`, hyChange, 'ms'),
        figure(`load ${n} services, Hypha`, hyLoad / 1000, 's'),
      );
  }
} finally {
  server.kill();
  for (const lb of lbs) lb.destroy();
  for (const p of pinDirs) rmSync(p, { recursive: true, force: true });
  for (const c of cgroups)
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(c);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
}
// Only a whole run (every N, both sides) replaces the recorded results; a partial one prints.
if (IPTABLES && MAX >= 100_000) writeResults('services', figures);
else for (const f of figures) console.log(JSON.stringify(f));
