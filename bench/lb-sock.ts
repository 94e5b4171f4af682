/**
 * The socket load balancer, both halves:
 *  - control plane: N services with 10 backends each loaded into the maps, applied again
 *    unchanged, one backend removed, and the state restored from the pins by a new
 *    instance; the load's baseline is the same entries written straight with updateBatch
 *    into fresh maps (the kernel's and the codecs' share, without the reconciler);
 *  - datapath: TCP connect+close round trips from a process in a cgroup with the programs
 *    attached, to a service (translated at connect) against the same to its backend
 *    directly (the hooks' fast miss), in the same run.
 *
 *   node dist/bench/lb-sock.js [services]
 *
 * Writes bench/results/lb-sock.json. ratio = value / baseline.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { cgroup2Root, createMap, MapType } from '../src/bpf/index.js';
import {
  lb4Backend,
  lb4BackendId,
  lb4Key,
  lb4Service,
  ServiceMaps,
  type ServiceSpec,
} from '../src/datapath/index.js';
import { NETNS_RUN_DIR, NetScope, uniqueName } from '../src/lab/net/index.js';
import { type Figure, figure, repoRoot, writeResults } from './report.js';

const SERVICES = Number(process.argv[2] ?? 100_000);
const BACKENDS = 10;
const CONNECTS = 2000;
const NODE = join(repoRoot, 'node_modules/.bin/node');

const ip = (base: number, n: number) => `10.${base + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;

function specs(): ServiceSpec[] {
  return Array.from({ length: SERVICES }, (_, i) => ({
    frontend: { ip: ip(96, i), port: 80, protocol: 'TCP' as const },
    type: 'ClusterIP' as const,
    backends: Array.from({ length: BACKENDS }, (_, j) => ({ ip: ip(128, i * BACKENDS + j), port: 8080 })),
  }));
}

function ms<T>(fn: () => T): [T, number] {
  const t = performance.now();
  const r = fn();
  return [r, performance.now() - t];
}

function controlPlane(pinDir: string): Figure[] {
  const all = specs();
  const sm = ServiceMaps.open({ pinDir });
  try {
    const [, load] = ms(() => sm.upsertServices(all));
    const written = sm.lastWrites;
    // Baseline: the same entries, already decoded, written straight into fresh maps.
    const svcEntries = sm.maps.services.lookupBatch();
    const beEntries = sm.maps.backends.lookupBatch();
    using svc = createMap({
      type: MapType.Hash,
      key: lb4Key,
      value: lb4Service,
      maxEntries: svcEntries.length,
    });
    using be = createMap({
      type: MapType.Hash,
      key: lb4BackendId,
      value: lb4Backend,
      maxEntries: beEntries.length,
    });
    const [, baseline] = ms(() => {
      for (let i = 0; i < svcEntries.length; i += 65536) svc.updateBatch(svcEntries.slice(i, i + 65536));
      for (let i = 0; i < beEntries.length; i += 65536) be.updateBatch(beEntries.slice(i, i + 65536));
    });
    const [, again] = ms(() => sm.upsertServices(all));
    const unchangedWrites = sm.lastWrites;
    const one = all[SERVICES >> 1]!;
    const [, change] = ms(() => sm.upsertService({ ...one, backends: one.backends.slice(1) }));
    const changeWrites = sm.lastWrites;
    sm.close();
    const [restored, restore] = ms(() => ServiceMaps.open({ pinDir }));
    restored.destroy();
    return [
      figure(`load ${SERVICES} services x ${BACKENDS} backends`, load, 'ms', baseline),
      figure('entries written by the load', written, 'entries'),
      figure('apply the same services again', again, 'ms', load),
      figure('entries written when nothing changed', unchangedWrites, 'entries'),
      figure('remove one backend of one service', change * 1000, 'µs'),
      figure('entries written for that change', changeWrites, 'entries'),
      figure('restore the state from the pins (new instance)', restore, 'ms', load),
    ];
  } catch (err) {
    sm.destroy();
    throw err;
  }
}

const CLIENT = String.raw`
const net = require('net');
const [host, port, n] = process.argv.slice(-3);
let i = 0; const t0 = process.hrtime.bigint();
const one = () => {
  if (i++ === Number(n)) { process.stdout.write(String(Number(process.hrtime.bigint() - t0) / Number(n)) + '\n'); return; }
  const s = net.connect(Number(port), host);
  s.on('connect', () => s.destroy()); s.on('close', one); s.on('error', (e) => { console.error(e.code); process.exit(1); });
};
one();
`;

async function datapath(pinDir: string): Promise<Figure[]> {
  const net = new NetScope();
  const cgroup = `${cgroup2Root()}/${uniqueName('lbb')}`;
  const sm = ServiceMaps.open({ pinDir });
  try {
    const ns = await net.netns({ prefix: 'lbb' });
    await ns.addAddress('lo', '10.200.0.1/32');
    const server = ns.spawn(
      NODE,
      [
        '-e',
        `require('net').createServer((s) => s.destroy()).listen(8080, '10.200.0.1', () => console.log('ready'))`,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    await createInterface({ input: server.stdout! })[Symbol.asyncIterator]().next();
    mkdirSync(cgroup);
    sm.attach(cgroup);
    sm.upsertService({
      frontend: { ip: '10.96.0.50', port: 80, protocol: 'TCP' },
      type: 'ClusterIP',
      backends: [{ ip: '10.200.0.1', port: 8080 }],
    });
    const run = async (host: string, port: number): Promise<number> => {
      const child = spawn(
        'nsenter',
        [
          `--net=${NETNS_RUN_DIR}/${ns.name}`,
          'sh',
          '-c',
          'echo $$ > "$CG/cgroup.procs" && exec "$N" -e "$C" -- "$@"',
          'sh',
          host,
          String(port),
          String(CONNECTS),
        ],
        { env: { ...process.env, CG: cgroup, N: NODE, C: CLIENT }, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      net.adopt(child);
      const line = await createInterface({ input: child.stdout! })[Symbol.asyncIterator]().next();
      return Number(line.value) / 1000;
    };
    const direct: number[] = [];
    const service: number[] = [];
    for (let round = 0; round < 3; round++) {
      direct.push(await run('10.200.0.1', 8080));
      service.push(await run('10.96.0.50', 80));
    }
    const best = (xs: number[]) => Math.min(...xs);
    return [figure('TCP connect+close via the service (best of 3)', best(service), 'µs', best(direct))];
  } finally {
    sm.destroy();
    await net.dispose();
    for (let i = 0; i < 50 && existsSync(cgroup); i++) {
      try {
        rmdirSync(cgroup);
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
}

const pinDir = `/sys/fs/bpf/hypha/${uniqueName('lbb')}`;
try {
  const figures = [...controlPlane(pinDir), ...(await datapath(pinDir))];
  writeResults('lb-sock', figures);
} finally {
  rmSync(pinDir, { recursive: true, force: true });
}
