/**
 * L7 HTTP policy's cost, in a lab with the tutorial's workloads: keep-alive GETs from a
 * frontend pod to a catalog pod on the same node, over three paths measured in one run:
 *   direct  the 5.3 policy without its http rules (L4 allow): no proxy;
 *   proxy   the tutorial's 5.3 policy: through the node's HTTP proxy (its workers), with
 *           the L7 flows it reports to the agent;
 *   nginx   Debian's nginx (as many workers as the proxy, no access log) as a reverse proxy in the node's
 *           namespace (upstream keep-alive), the client connecting to it; under the L4
 *           policy (nginx's connections come from the node: allow-localhost).
 * Each path: one connection for latency (p50/p99), then a sweep of concurrencies (SWEEP,
 * CONNS the first) for requests/s and p99 under load. Two throughput figures: requests/s
 * at CONNS connections, where a path that adds latency loses throughput too (a proxy's
 * extra wake-ups), and the path's peak over the sweep, its capacity on this machine (a
 * proxy catches up as its workers find more than one event per wake-up). ROUNDS rounds of
 * the three paths in alternating orders, the figures medians over rounds (this 2-CPU
 * machine drifts by tens of percent between runs a minute apart), and the spread of the
 * per-round ratios. The load generator is this file in client mode, run inside the
 * frontend pod: raw sockets, one request in flight per connection.
 *
 *   node dist/bench/l7.js     (root; HYPHA_BENCH_SECONDS, HYPHA_BENCH_CONNS, HYPHA_BENCH_SWEEP
 *                              (e.g. 8,16,32,64), HYPHA_BENCH_ROUNDS, HYPHA_BENCH_PROXY_WORKERS)
 *   node dist/bench/l7.js client <ip> <port> <path> <conns> <seconds>
 *
 * Writes bench/results/l7.json; ratios are against direct.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { AgentStatus } from '../src/agent/agent.js';
import { callAgent } from '../src/agent/client.js';
import { applyFiles } from '../src/cli/commands/lab.js';
import { KubeClient, loadKubeconfig } from '../src/k8s/client.js';
import { execInPod } from '../src/k8s/exec.js';
import { Lab, type LabState } from '../src/lab/lab.js';
import { type Figure, figure, percentile, repoRoot, writeResults } from './report.js';

interface ClientResult {
  requests: number;
  errors: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  statuses?: Record<string, number>;
}

/** Client mode: `conns` keep-alive connections, each sending GETs back to back for `seconds`. */
async function client(ip: string, port: number, path: string, conns: number, seconds: number): Promise<void> {
  const req = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: catalog:8080\r\nUser-Agent: hypha-bench\r\n\r\n`);
  const latencies: number[] = [];
  let errors = 0;
  /** Answers other than 200, by status line. */
  const statuses: Record<string, number> = {};
  const end = performance.now() + seconds * 1000;
  const one = () =>
    new Promise<void>((resolve) => {
      const s = connect(port, ip);
      s.setNoDelay(true);
      let buf: Buffer = Buffer.alloc(0);
      let sent = 0;
      const send = () => {
        if (performance.now() >= end) {
          s.end();
          resolve();
          return;
        }
        buf = Buffer.alloc(0);
        sent = performance.now();
        s.write(req);
      };
      s.on('connect', send);
      s.on('data', (d: Buffer) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        const head = buf.indexOf('\r\n\r\n');
        if (head < 0) return;
        const h = buf.subarray(0, head).toString('latin1');
        const len = /\r\ncontent-length: *(\d+)/i.exec(h);
        const done = len
          ? buf.length >= head + 4 + Number(len[1])
          : buf.subarray(buf.length - 5).toString('latin1') === '0\r\n\r\n';
        if (!done) return;
        if (!h.startsWith('HTTP/1.1 200')) {
          errors++;
          const line = h.slice(0, h.indexOf('\r\n'));
          statuses[line] = (statuses[line] ?? 0) + 1;
        }
        latencies.push(performance.now() - sent);
        send();
      });
      s.on('error', () => {
        errors++;
        resolve();
      });
      s.on('close', () => resolve());
    });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: conns }, one));
  const result: ClientResult = {
    requests: latencies.length,
    errors,
    seconds: (performance.now() - t0) / 1000,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    ...(errors ? { statuses } : {}),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

interface Pod {
  metadata: { name: string; namespace: string };
  spec: { nodeName?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

const SECONDS = Number(process.env.HYPHA_BENCH_SECONDS ?? 4);
const CONNS = Number(process.env.HYPHA_BENCH_CONNS ?? 8);
/** Concurrencies for the peak; CONNS first (its run gives the CONNS figures). */
const SWEEP = [
  CONNS,
  ...(process.env.HYPHA_BENCH_SWEEP ?? '16,32,64')
    .split(',')
    .map(Number)
    .filter((n) => n > 0 && n !== CONNS),
];
/** Rounds of the three paths, alternating; figures are medians over rounds. */
const ROUNDS = Number(process.env.HYPHA_BENCH_ROUNDS ?? 3);
/** The agents' HTTP proxy workers (httpProxy.workers); unset: the agent's default. */
const WORKERS = process.env.HYPHA_BENCH_PROXY_WORKERS;
const NAME = 'hyl7bench';
const POLICY = join(repoRoot, 'examples/tutorial/05.3-l7-http-policy.yaml');
const NGINX_PORT = 18080;

type Path = 'direct' | 'proxy' | 'nginx';
interface Measured {
  lat: ClientResult;
  /** At CONNS connections. */
  load: ClientResult;
  /** Requests/s at each SWEEP concurrency, in SWEEP's order. */
  sweep: number[];
  /** Failed requests over every run (answers other than 200 included). */
  errors: number;
}

const median = (xs: number[]) => percentile(xs, 50);
const rps = (x: ClientResult) => x.requests / x.seconds;
/** A round's best requests/s over the sweep. */
const peak = (m: Measured) => Math.max(...m.sweep);

async function bench(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hy-l7-bench-'));
  const lab = new Lab(
    {
      name: NAME,
      nodes: 3,
      dataDir: join(dataDir, 'lab'),
      values: WORKERS ? { httpProxy: { workers: Number(WORKERS) } } : {},
      port: 0,
      relayPort: 0,
      underlayOctet: 236,
    },
    () => {},
  );
  let nginx: ChildProcess | undefined;
  try {
    const state = await lab.up();
    const kube = new KubeClient(loadKubeconfig(state.kubeconfig));
    const quiet = new PassThrough();
    quiet.resume();
    await applyFiles(kube, [join(repoRoot, 'examples/tutorial/00-workloads.yaml')], quiet);
    const pods = await readyPods(kube);
    // A frontend and a catalog on one node: the proxy (and nginx) run on that node.
    const front = pods.find((p) => p.metadata.name.startsWith('frontend-'))!;
    const cat = pods.find(
      (p) => p.metadata.name.startsWith('catalog-') && p.spec.nodeName === front.spec.nodeName,
    );
    if (!cat) throw new Error('no catalog pod on the node of a frontend pod');
    const node = state.nodes.find((n) => n.name === front.spec.nodeName)!;
    const catIp = cat.status!.podIP!;
    const run = (ip: string, port: number, conns: number, seconds = SECONDS) =>
      runClient(state, front, ip, port, conns, seconds);
    const measure = async (ip: string, port: number): Promise<Measured> => {
      await run(ip, port, 1, 1); // warm-up: connections, JIT, pools
      const lat = await run(ip, port, 1);
      const loads: ClientResult[] = [];
      for (const conns of SWEEP) loads.push(await run(ip, port, conns));
      for (const r of [lat, ...loads])
        if (r.statuses) console.error(`${ip}:${port} ${JSON.stringify(r.statuses)}`);
      const errors = [lat, ...loads].reduce((a, r) => a + r.errors, 0);
      return { lat, load: loads[0]!, sweep: loads.map(rps), errors };
    };

    // direct: the same policy, its http rules removed.
    const l7Doc = parseYaml(readFileSync(POLICY, 'utf8')) as {
      spec: { ingress: { toPorts: { rules?: unknown }[] }[] };
    };
    const l4Doc = structuredClone(l7Doc);
    for (const r of l4Doc.spec.ingress) for (const tp of r.toPorts) delete tp.rules;
    const l4File = join(dataDir, 'l4.yaml');
    writeFileSync(l4File, JSON.stringify(l4Doc));
    // nginx gets as many worker processes as the proxy has workers.
    const status = await callAgent<AgentStatus>(node.agentSocket, 'GET', '/v1/status');
    const workers = status.httpProxy?.workers.length ?? 0;
    if (!workers) throw new Error(`the HTTP proxy on ${node.name} has no workers`);
    nginx = startNginx(dataDir, node.netns, node.ip, catIp, workers);

    const paths: Record<Path, () => Promise<Measured>> = {
      direct: async () => {
        await kubectl(state, 'apply', '-f', l4File);
        await waitFor(state, front, catIp, (code) => code === '200', 'POST allowed at L4');
        return measure(catIp, 8080);
      },
      proxy: async () => {
        await kubectl(state, 'apply', '-f', POLICY);
        await waitFor(state, front, catIp, (code) => code === '403', 'POST refused by the proxy');
        return measure(catIp, 8080);
      },
      // Under the L4 policy as well: nginx's upstream connections come from the node, which
      // reaches its pods by allow-localhost.
      nginx: async () => {
        await kubectl(state, 'apply', '-f', l4File);
        await waitFor(state, front, node.ip, (code) => code === '200', 'nginx answering', NGINX_PORT);
        return measure(node.ip, NGINX_PORT);
      },
    };
    // Rounds alternate the order, so that a drift of this shared machine falls on every path.
    const results: Record<Path, Measured[]> = { direct: [], proxy: [], nginx: [] };
    const orders: Path[][] = [
      ['direct', 'proxy', 'nginx'],
      ['nginx', 'proxy', 'direct'],
      ['proxy', 'direct', 'nginx'],
    ];
    for (let round = 0; round < ROUNDS; round++)
      for (const path of orders[round % orders.length]!) {
        const m = await paths[path]();
        results[path].push(m);
        const at = m.sweep.map((r, i) => `${Math.round(r)}@${SWEEP[i]}`).join(' ');
        console.error(`round ${round + 1}/${ROUNDS} ${path}: req/s ${at}`);
      }

    const med = (path: Path, f: (m: Measured) => number) => median(results[path].map(f));
    const figures: Figure[] = [];
    for (const path of ['direct', 'proxy', 'nginx'] as const) {
      const base = path === 'direct' ? undefined : 'direct';
      const fig = (what: string, f: (m: Measured) => number, unit: string) =>
        figures.push(figure(`l7.${path}.${what}`, med(path, f), unit, base && med(base, f)));
      fig(`rps_${CONNS}conns`, (m) => rps(m.load), 'req/s');
      for (const [i, conns] of SWEEP.entries())
        if (i > 0) fig(`rps_${conns}conns`, (m) => m.sweep[i]!, 'req/s');
      fig('rps_peak', peak, 'req/s');
      fig('p50_1conn', (m) => m.lat.p50Ms, 'ms');
      fig('p99_1conn', (m) => m.lat.p99Ms, 'ms');
      fig(`p99_${CONNS}conns`, (m) => m.load.p99Ms, 'ms');
      figures.push(
        figure(
          `l7.${path}.errors`,
          results[path].reduce((a, m) => a + m.errors, 0),
          'requests',
        ),
      );
      if (base) {
        // The spread: each round's ratio against the same round's direct path.
        const ratios = results[path].map((m, i) => rps(m.load) / rps(results.direct[i]!.load));
        const peaks = results[path].map((m, i) => peak(m) / peak(results.direct[i]!));
        figures.push(
          figure(`l7.${path}.rps_ratio_min`, Math.min(...ratios), 'ratio'),
          figure(`l7.${path}.rps_ratio_max`, Math.max(...ratios), 'ratio'),
          figure(`l7.${path}.rps_peak_ratio_min`, Math.min(...peaks), 'ratio'),
          figure(`l7.${path}.rps_peak_ratio_max`, Math.max(...peaks), 'ratio'),
          figure(
            `l7.${path}.p99_added_1conn`,
            med(path, (m) => m.lat.p99Ms) - med('direct', (m) => m.lat.p99Ms),
            'ms',
          ),
        );
      }
    }
    figures.push(
      figure('l7.rounds', ROUNDS, 'rounds'),
      figure('l7.seconds_per_run', SECONDS, 's'),
      figure('l7.sweep_max_conns', Math.max(...SWEEP), 'connections'),
      figure('l7.proxy_workers', workers, 'processes'),
    );
    writeResults('l7', figures);
  } finally {
    if (nginx?.pid) {
      nginx.kill('SIGQUIT');
      await new Promise((r) => setTimeout(r, 300));
      if (nginx.exitCode === null) nginx.kill('SIGKILL');
    }
    await lab.down(false);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function readyPods(kube: KubeClient): Promise<Pod[]> {
  const end = Date.now() + 60_000;
  for (;;) {
    const all = (await kube.json<{ items: Pod[] }>('GET', '/api/v1/namespaces/production/pods')).items;
    if (
      all.length >= 7 &&
      all.every((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
    )
      return all;
    if (Date.now() > end) throw new Error('production pods not ready');
    await new Promise((r) => setTimeout(r, 200));
  }
}

function kubectl(state: LabState, ...args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile('kubectl', args, { env: { ...process.env, KUBECONFIG: state.kubeconfig } }, (e, _o, se) =>
      e ? reject(new Error(`kubectl ${args.join(' ')}: ${se}`)) : resolve(),
    ),
  );
}

async function exec(state: LabState, pod: Pod, command: string[]): Promise<string> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const err = new PassThrough();
  err.resume();
  const code = await execInPod(loadKubeconfig(state.kubeconfig), {
    namespace: pod.metadata.namespace,
    pod: pod.metadata.name,
    command,
    stdout: out,
    stderr: err,
  });
  if (code !== 0) throw new Error(`${command.join(' ')} in ${pod.metadata.name}: exit ${code}`);
  return Buffer.concat(chunks).toString();
}

async function waitFor(
  state: LabState,
  from: Pod,
  ip: string,
  ok: (code: string) => boolean,
  what: string,
  port = 8080,
): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const code = await exec(state, from, [
      'curl',
      '-s',
      '-o',
      '/dev/null',
      '-m',
      '2',
      '-w',
      '%{http_code}',
      '-X',
      'POST',
      `http://${ip}:${port}/api/v1/products`,
    ]).catch(() => '');
    if (ok(code)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

async function runClient(
  state: LabState,
  from: Pod,
  ip: string,
  port: number,
  conns: number,
  seconds: number,
): Promise<ClientResult> {
  const out = await exec(state, from, [
    process.execPath,
    fileURLToPath(import.meta.url),
    'client',
    ip,
    String(port),
    '/api/v1/products',
    String(conns),
    String(seconds),
  ]);
  return JSON.parse(out.trim().split('\n').at(-1)!) as ClientResult;
}

/** nginx in the node's namespace, in the foreground, its files in a temporary directory. */
function startNginx(
  dir: string,
  netns: string,
  listenIp: string,
  upstream: string,
  workers: number,
): ChildProcess {
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir};
  proxy_temp_path ${dir};
  fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir};
  scgi_temp_path ${dir};
  upstream catalog { server ${upstream}:8080; keepalive 64; }
  server {
    listen ${listenIp}:${NGINX_PORT};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://catalog;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }
  }
}
`,
  );
  return spawn('nsenter', [`--net=/var/run/netns/${netns}`, '--', '/usr/sbin/nginx', '-c', conf, '-p', dir], {
    stdio: 'ignore',
  });
}

if (process.argv[2] === 'client') {
  const [ip, port, path, conns, seconds] = process.argv.slice(3);
  await client(ip!, Number(port), path!, Number(conns), Number(seconds));
} else {
  await bench();
}
