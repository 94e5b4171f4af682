/**
 * DNS through the DNS proxy versus directly to the same server, on real packets: a pod
 * (data-exporter) under the tutorial's 5.4 policy and a DNS server pod (kube-dns), both on
 * one node with the endpoint programs attached. Queries to port 53 are translated to the
 * proxy (`hypha proxy dns`, a child of this process in the node's namespace) and every
 * answer goes through the agent's side before the pod gets it: the policy repository, the
 * policy map and ipcache writes (FqdnManager, as the agent runs it) and a DNS flow. The
 * same server also listens on port 5353, which a plain allow rule lets the pod reach
 * directly: that is the baseline.
 *
 * Per round and path: latency of sequential queries (one outstanding) and the rate with 32
 * in flight. Paths alternate, round by round, so outside noise lands on both.
 *
 *   HYPHA_BENCH_ROUNDS (default 3), HYPHA_BENCH_QUERIES per latency run (default 1000),
 *   HYPHA_BENCH_SECONDS per rate run (default 2)
 *
 * Writes bench/results/dns.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { AgentFlows } from '../src/agent/flows.js';
import { FqdnManager } from '../src/agent/fqdn.js';
import { unpin, withNetns } from '../src/bpf/index.js';
import { Datapath } from '../src/datapath/index.js';
import { endpointLabels } from '../src/identity/index.js';
import { type NetNs, NetScope } from '../src/lab/net/index.js';
import { type EndpointDiff, PolicyRepository, parsePolicy } from '../src/policy/index.js';
import { wirePod } from '../test/helpers/pods.js';
import { figure, percentile, repoRoot, writeResults } from './report.js';

const NODE = join(repoRoot, 'node_modules/.bin/node');
const ROUNDS = Number(process.env.HYPHA_BENCH_ROUNDS ?? 3);
const QUERIES = Number(process.env.HYPHA_BENCH_QUERIES ?? 1000);
const SECONDS = Number(process.env.HYPHA_BENCH_SECONDS ?? 2);
const PROXY = { ip: '10.99.53.1', port: 10053 };
const A = { ip: '10.244.9.10', id: 31, mac: '02:00:0a:f4:09:0a', hostMac: '02:00:0a:f4:09:aa' };
const B = { ip: '10.244.9.20', id: 32, mac: '02:00:0a:f4:09:14', hostMac: '02:00:0a:f4:09:bb' };
const A_LABELS = endpointLabels({ namespace: 'data-pipeline', podLabels: { app: 'data-exporter' } });
const B_LABELS = endpointLabels({ namespace: 'kube-system', podLabels: { 'k8s-app': 'kube-dns' } });

const POLICY = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: allow-external-partner, namespace: data-pipeline }
spec:
  endpointSelector: { matchLabels: { app: data-exporter } }
  egress:
    - toFQDNs: [{ matchName: api.external-partner.com }]
      toPorts: [{ ports: [{ port: "443", protocol: TCP }] }]
    - toEndpoints: [{ matchLabels: { io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns } }]
      toPorts: [{ ports: [{ port: "53", protocol: UDP }], rules: { dns: [{ matchPattern: "*" }] } }]
    - toEndpoints: [{ matchLabels: { io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns } }]
      toPorts: [{ ports: [{ port: "5353", protocol: UDP }] }]
`;

/** The server: one zone on 53 and 5353. */
const SERVER = `
import { startDnsServer } from ${JSON.stringify(join(repoRoot, 'dist/src/lab/dns/server.js'))};
import { Zone } from ${JSON.stringify(join(repoRoot, 'dist/src/lab/dns/zone.js'))};
const zone = new Zone({ domain: 'cluster.local', ttl: 30, services: [],
  hosts: [{ name: 'api.external-partner.com', ip: '203.0.113.10' }] });
for (const port of [53, 5353]) await startDnsServer({ host: '0.0.0.0', port, zone });
`;

/**
 * The client: "seq N port" prints N latencies (µs), one query outstanding; "rate S port"
 * prints the answers per second with 32 in flight for S seconds.
 */
const CLIENT = `
const [, mode, amount, port] = process.argv;
const { encodeMessage, query } = require(${JSON.stringify(join(repoRoot, 'dist/src/dns/message.js'))});
const u = require('dgram').createSocket('udp4');
const q = (id) => encodeMessage(query(id, 'api.external-partner.com', 1));
const send = (id) => u.send(q(id), Number(port), ${JSON.stringify(B.ip)});
if (mode === 'seq') {
  const out = []; let t = 0n, id = 0;
  const next = () => { if (out.length === Number(amount)) { process.stdout.write(JSON.stringify(out)); process.exit(0); }
    id = (id + 1) & 0xffff; t = process.hrtime.bigint(); send(id); };
  u.on('message', () => { out.push(Number(process.hrtime.bigint() - t) / 1000); next(); });
  setTimeout(() => { process.stderr.write('stalled'); process.exit(1); }, 60000);
  next();
} else {
  let answered = 0, id = 0; const end = Date.now() + Number(amount) * 1000;
  u.on('message', () => { answered++; if (Date.now() < end) send(id = (id + 1) & 0xffff); });
  for (let i = 0; i < 32; i++) send(id = (id + 1) & 0xffff);
  setTimeout(() => { process.stdout.write(String(answered / Number(amount))); process.exit(0); }, Number(amount) * 1000 + 200);
}
`;

async function run(a: NetNs, args: string[]): Promise<string> {
  const r = await a.exec(NODE, ['-e', CLIENT, '--', ...args]);
  if (r.code !== 0) throw new Error(`client ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function main(): Promise<void> {
  const net = new NetScope();
  const pinDir = `/sys/fs/bpf/hypha/hybench-dns-${process.pid}`;
  const state = mkdtempSync(join(tmpdir(), 'hy-bench-dns-'));
  let dp: Datapath | undefined;
  let fqdn: FqdnManager | undefined;
  try {
    const node = await net.netns({ prefix: 'nd' });
    const podA = await net.netns({ prefix: 'pa' });
    const podB = await net.netns({ prefix: 'pb' });
    await node.sysctl('net.ipv4.ip_forward', 1);
    await node.addAddress('lo', `${PROXY.ip}/32`);
    await node.setUp('lo');
    const ifA = await wirePod(node, podA, { ...A, host: 'hybdA' });
    const ifB = await wirePod(node, podB, { ...B, host: 'hybdB' });
    dp = Datapath.open({ pinDir, dnsProxy: PROXY });
    const datapath = dp;

    const repo = new PolicyRepository();
    const idA = 7101;
    const idB = 7102;
    repo.upsertIdentity(idB, B_LABELS);
    repo.upsertEndpoint({ id: B.id, namespace: 'kube-system', identity: idB, labels: B_LABELS });
    repo.upsertEndpoint({ id: A.id, namespace: 'data-pipeline', identity: idA, labels: A_LABELS });
    repo.upsertPolicy(parsePolicy(parse(POLICY)).policies[0]!);
    datapath.upsertIpcache(`${A.ip}/32`, idA);
    datapath.upsertIpcache(`${B.ip}/32`, idB);
    const eps = [
      { ...A, identity: idA, host: 'hybdA', ifindex: ifA, ns: 'data-pipeline', pod: 'data-exporter' },
      { ...B, identity: idB, host: 'hybdB', ifindex: ifB, ns: 'kube-system', pod: 'coredns' },
    ];
    for (const e of eps) {
      const pol = repo.endpointPolicy(e.id);
      datapath.attachEndpoint({
        id: e.id,
        ip4: e.ip,
        identity: e.identity,
        hostIfname: e.host,
        hostIfindex: e.ifindex,
        netns: node.name!,
        enforceIngress: pol?.ingress.enforced ?? false,
        enforceEgress: pol?.egress.enforced ?? false,
      });
      const entries = pol ? [...pol.egress.entries.values(), ...pol.ingress.entries.values()] : [];
      datapath.applyPolicy(e.id, { added: entries, removed: [] });
    }
    const endpoints = () =>
      eps.map((e) => ({
        id: e.id,
        ip: e.ip,
        identity: e.identity,
        podNamespace: e.ns,
        podName: e.pod,
        labels: e.id === A.id ? A_LABELS : B_LABELS,
        hostIfindex: e.ifindex,
        hostIfname: e.host,
      }));
    const flows = new AgentFlows({
      nodeName: 'bench',
      repo,
      endpoints,
      remote: () => undefined,
      service: () => undefined,
    });
    const apply = (diffs: EndpointDiff[]) => {
      for (const d of diffs) datapath.applyPolicy(d.endpoint, d);
    };
    fqdn = new FqdnManager({
      repo,
      datapath,
      apply,
      endpoints,
      addL7: (e) => flows.addL7(e),
      proxy: PROXY,
      pinDir,
      minTtl: 0,
      stateFile: join(state, 'fqdn.json'),
      log: (l) => console.error(l),
    });
    const manager = fqdn;
    // The proxy child is forked on this thread: in the node's namespace, like the agent's.
    withNetns(node.name!, () => manager.start());
    for (let i = 0; i < 100 && !manager.proxyReady; i++) await new Promise((r) => setTimeout(r, 100));
    if (!manager.proxyReady) throw new Error('the DNS proxy did not start');
    podB.spawn(NODE, ['--input-type=module', '-e', SERVER], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));

    if (!repo.endpointPolicy(A.id)?.egress.enforced)
      throw new Error('the policy does not select the client pod');
    const paths = { direct: '5353', proxy: '53' } as const;
    // Warm-up (and a check that both paths answer).
    for (const port of Object.values(paths)) await run(podA, ['seq', '50', port]);
    const lat: Record<keyof typeof paths, number[]> = { direct: [], proxy: [] };
    const rate: Record<keyof typeof paths, number[]> = { direct: [], proxy: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? (['proxy', 'direct'] as const) : (['direct', 'proxy'] as const);
      for (const p of order) {
        lat[p].push(...(JSON.parse(await run(podA, ['seq', String(QUERIES), paths[p]])) as number[]));
        rate[p].push(Number(await run(podA, ['rate', String(SECONDS), paths[p]])));
      }
    }
    // Every proxied answer went through the agent's side: the name is in the FQDN cache.
    if (!manager.cache().some((r) => r.endpointId === A.id))
      throw new Error('no answer reached the agent side');
    const ms = (us: number) => us / 1000;
    const median = (xs: number[]) => percentile(xs, 50);
    const d50 = ms(percentile(lat.direct, 50));
    const d99 = ms(percentile(lat.direct, 99));
    const p50 = ms(percentile(lat.proxy, 50));
    const p99 = ms(percentile(lat.proxy, 99));
    writeResults('dns', [
      figure('query latency p50 (proxy vs direct)', p50, 'ms', d50),
      figure('query latency p99 (proxy vs direct)', p99, 'ms', d99),
      figure('p99 added by the proxy', p99 - d99, 'ms'),
      figure('queries/s, 32 in flight (proxy vs direct)', median(rate.proxy), 'q/s', median(rate.direct)),
      figure('samples per path', lat.proxy.length, 'queries'),
    ]);
  } finally {
    await fqdn?.close();
    if (dp) dp.destroy();
    else unpin(pinDir); // a failed load may have made the directory
    await net.dispose();
    rmSync(state, { recursive: true, force: true });
  }
}

await main();
