/**
 * Creating and destroying 100 namespaces, each with a veth pair (host end in the root
 * namespace, eth0 inside) and an address: through `NetBatch` (a few `ip -batch` processes)
 * against the baseline of one `ip` process per operation, in the same run.
 *
 *   node dist/bench/netns.js [count]
 *
 * Writes bench/results/netns.json. ratio = bulk / baseline (below 1 is faster).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetBatch, NetNs, NetScope, uniqueName } from '../src/lab/net/index.js';

const COUNT = Number(process.argv[2] ?? 100);
const SETTLE_MS = 3000;
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../..');

interface Pod {
  readonly ns: string;
  readonly host: string;
  readonly ip: string;
}

interface Result {
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  ratio?: number;
}

function pods(): Pod[] {
  return Array.from({ length: COUNT }, (_, i) => ({
    ns: uniqueName('b'),
    host: uniqueName('h'),
    ip: `10.95.${i >> 8}.${(i & 255) + 1}/16`,
  }));
}

function ip(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`ip ${args.join(' ')}: ${err}`))));
  });
}

async function time(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function bulk(ps: Pod[]): Promise<{ create: number; destroy: number }> {
  const create = await time(async () => {
    const b = new NetBatch();
    for (const p of ps) b.addNetns(p.ns);
    for (const p of ps) {
      b.addVeth({ name: p.host, peer: 'eth0', peerNs: p.ns })
        .setUp(undefined, p.host)
        .addAddress(p.ns, 'eth0', p.ip)
        .setUp(p.ns, 'eth0');
    }
    await b.run();
  });
  const destroy = await time(async () => {
    const b = new NetBatch();
    // Links first, in one run, so the batch folds them into a single group deletion.
    for (const p of ps) b.deleteLink(undefined, p.host);
    for (const p of ps) b.deleteNetns(p.ns);
    await b.run();
  });
  return { create, destroy };
}

/** What a test would do without the library: one `ip` process per step. */
async function oneByOne(ps: Pod[]): Promise<{ create: number; destroy: number }> {
  const create = await time(async () => {
    for (const p of ps) {
      await ip(['netns', 'add', p.ns]);
      await ip(['-n', p.ns, 'link', 'set', 'lo', 'up']);
      await ip(['link', 'add', 'name', p.host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.ns]);
      await ip(['link', 'set', p.host, 'up']);
      await ip(['-n', p.ns, 'addr', 'add', p.ip, 'dev', 'eth0']);
      await ip(['-n', p.ns, 'link', 'set', 'eth0', 'up']);
    }
  });
  const destroy = await time(async () => {
    for (const p of ps) {
      await ip(['link', 'del', p.host]);
      await ip(['netns', 'del', p.ns]);
    }
  });
  return { create, destroy };
}

async function main(): Promise<void> {
  // A scope as a safety net: whatever a failed run leaves behind is removed.
  await using net = new NetScope();
  const run = async (fn: (ps: Pod[]) => Promise<{ create: number; destroy: number }>) => {
    const ps = pods();
    for (const p of ps) {
      net.adopt({ kind: 'link', ns: undefined, name: p.host });
      net.adopt({ kind: 'netns', name: p.ns });
    }
    const r = await fn(ps);
    const left = (await NetNs.list('hyb')).filter((n) => ps.some((p) => p.ns === n));
    if (left.length > 0) throw new Error(`namespaces left behind: ${left.join(' ')}`);
    return r;
  };
  await run(bulk); // warm-up: first namespace creation pays for module and mount setup
  await settle();
  const base = await run(oneByOne);
  await settle();
  const fast = await run(bulk);

  const entry = (name: string, value: number, baseline: number): Result[] => [
    { name: `${name}.one_by_one`, value: round(baseline), unit: 'ms' },
    {
      name: `${name}.batch`,
      value: round(value),
      unit: 'ms',
      baseline: round(baseline),
      ratio: round(value / baseline, 3),
    },
  ];
  const results: Result[] = [
    ...entry(`netns.create_${COUNT}_with_veth_and_address`, fast.create, base.create),
    ...entry(`netns.destroy_${COUNT}`, fast.destroy, base.destroy),
    ...entry(`netns.create_and_destroy_${COUNT}`, fast.create + fast.destroy, base.create + base.destroy),
  ];
  for (const r of results) {
    const cmp =
      r.ratio === undefined
        ? ''
        : `  (baseline ${r.baseline} ms, ratio ${r.ratio}, ${round(1 / r.ratio, 1)}x faster)`;
    console.log(`${r.name.padEnd(50)} ${String(r.value).padStart(8)} ${r.unit}${cmp}`);
  }
  mkdirSync(join(repoRoot, 'bench/results'), { recursive: true });
  writeFileSync(join(repoRoot, 'bench/results/netns.json'), `${JSON.stringify(results, null, 2)}\n`);
}

/**
 * The kernel frees deleted namespaces later, in a workqueue that competes with the next run
 * for locks; without a pause the second run measures the first one's teardown.
 */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

await main();
