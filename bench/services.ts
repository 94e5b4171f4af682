/**
 * kube-proxy replacement against kube-proxy's iptables mode, side by side in one run.
 * For N = 10, 1,000, 10,000 and 100,000 services (one target, the rest filler), connection
 * setup latency to the target's ClusterIP (a C connect/read/close loop,
 * bench/native/connect_bench.c), with:
 *  - iptables: kube-proxy's KUBE-SERVICES/KUBE-SVC-/KUBE-SEP- chains loaded with
 *    iptables-restore into a twin client namespace, the target's rule last in the chain;
 *  - Hypha: the same services in the socket load balancer's maps, the client in a cgroup
 *    with the programs attached.
 * Reported: latency(N)/latency(10) for each, and the time to apply one service change at
 * each N (iptables: a full iptables-restore, as kube-proxy's full sync writes it; Hypha:
 * one upsert of the changed service).
 *
 *   node dist/bench/services.js [maxServices]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Root } from '../src/bpf/index.js';
import { ServiceMaps, type ServiceSpec } from '../src/datapath/index.js';
import { NetScope } from '../src/lab/net/index.js';
import { type BenchService, iptablesRules } from './kube-proxy-iptables.js';
import { type Figure, figure, repoRoot, writeResults } from './report.js';

const MAX = Number(process.argv[2] ?? 100_000);
const SIZES = [10, 1_000, 10_000, 100_000].filter((n) => n <= MAX);
const CONNECTS = Number(process.env.HYPHA_BENCH_CONNECTS ?? 3000);
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

const p50 = (out: string) => (JSON.parse(out) as { p50: number }).p50;
/** The median of three runs' p50s: one run on this machine can be off by a fifth. */
const median3 = (run: () => number) => {
  const v = [run(), run(), run()].sort((a, b) => a - b);
  return v[1]!;
};

await using net = new NetScope();
const cli = await net.netns({ prefix: 'bsc' });
const srv = await net.netns({ prefix: 'bss' });
const run = (args: string[], input?: string) =>
  execFileSync(args[0]!, args.slice(1), { ...(input !== undefined ? { input } : {}), maxBuffer: 1 << 30 });
run([
  'ip',
  'link',
  'add',
  'hybs0',
  'netns',
  cli.name!,
  'type',
  'veth',
  'peer',
  'name',
  'hybs1',
  'netns',
  srv.name!,
]);
for (const [ns, dev, addr] of [
  [cli.name!, 'hybs0', '10.250.0.1/24'],
  [srv.name!, 'hybs1', '10.250.0.2/24'],
] as const) {
  run(['ip', '-n', ns, 'addr', 'add', addr, 'dev', dev]);
  run(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
}
run(['ip', '-n', cli.name!, 'route', 'add', '10.96.0.0/12', 'dev', 'hybs0']);
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
const cgroup = join(cgroup2Root(), `hybench-svc-${process.pid}`);
mkdirSync(cgroup);
const pinDir = `/sys/fs/bpf/hypha/hybench-svc-${process.pid}`;
const figures: Figure[] = [];
const connect = (target: string, inCgroup: boolean) =>
  run([
    'nsenter',
    `--net=/var/run/netns/${cli.name}`,
    '--',
    ...(inCgroup ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup] : []),
    CONNECT_BENCH,
    target,
    '80',
    String(CONNECTS),
  ]).toString();
let lb: ServiceMaps | undefined;
try {
  await new Promise((r) => setTimeout(r, 500));
  lb = ServiceMaps.open({ pinDir });
  lb.attach(cgroup);
  const base: Record<'iptables' | 'hypha', number> = { iptables: 0, hypha: 0 };
  for (const n of SIZES) {
    const svcs = services(n);
    const target = svcs[n - 1]!;
    // iptables: the whole table, then a change rewritten the way a full sync writes it.
    const rules = iptablesRules(svcs);
    let t = performance.now();
    run(['ip', 'netns', 'exec', cli.name!, 'iptables-restore'], rules);
    const iptLoad = performance.now() - t;
    const iptLat = median3(() => p50(connect(target.ip, false)));
    const changed = [...svcs];
    changed[0] = { ...changed[0]!, backends: [{ ip: '10.253.0.1', port: 8080 }] };
    const rules2 = iptablesRules(changed);
    t = performance.now();
    run(['ip', 'netns', 'exec', cli.name!, 'iptables-restore'], rules2);
    const iptChange = performance.now() - t;
    run(['ip', 'netns', 'exec', cli.name!, 'iptables', '-t', 'nat', '-F']);
    run(['ip', 'netns', 'exec', cli.name!, 'iptables', '-t', 'nat', '-X']);
    // Hypha: the same services in the maps (what is there from the last N stays: only new ones are written).
    t = performance.now();
    lb.upsertServices(svcs.map(toSpec));
    const hyLoad = performance.now() - t;
    const hyLat = median3(() => p50(connect(target.ip, true)));
    t = performance.now();
    lb.upsertService(toSpec(changed[0]!));
    const hyChange = performance.now() - t;
    lb.upsertService(toSpec(svcs[0]!));
    if (n === SIZES[0]) {
      base.iptables = iptLat;
      base.hypha = hyLat;
    }
    console.log(
      `N=${n}: iptables p50 ${iptLat.toFixed(1)} µs (load ${(iptLoad / 1000).toFixed(2)} s, change ${iptChange.toFixed(0)} ms); ` +
        `hypha p50 ${hyLat.toFixed(1)} µs (load ${(hyLoad / 1000).toFixed(2)} s, change ${hyChange.toFixed(2)} ms)`,
    );
    figures.push(
      figure(
        `connect p50 to the target ClusterIP, ${n} services, Hypha, vs Hypha at 10`,
        hyLat,
        'µs',
        base.hypha,
      ),
      figure(
        `connect p50 to the target ClusterIP, ${n} services, iptables, vs iptables at 10`,
        iptLat,
        'µs',
        base.iptables,
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
  }
} finally {
  server.kill();
  lb?.destroy();
  rmSync(pinDir, { recursive: true, force: true });
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(cgroup);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
writeResults('services', figures);
