/**
 * Hubble's speed in Hypha.
 *
 * (1) Flows per second the agent's pipeline makes on one core, with zero loss: datapath
 * ring records of realistic shape (new connections as policy-verdict+trace records, replies,
 * established traffic, policy drops, DNS and ICMP, captured packets of real sizes) for a
 * node with 64 local pods and 256 remote ones under the tutorial's policies, through what
 * the agent runs for every batch: decodeEvents, then AgentFlows.add (FlowBuilder with
 * enrichment, the flow ring, and with the tutorial's Hubble metrics). The baseline, measured
 * in the same run, is decoding alone. Rates are per CPU-second of this process (all its
 * threads), so other load on the machine does not count. Loss is events in minus flows out.
 * The L7 proxies' events (HTTP request and response per exchange) go through AgentFlows.addL7
 * the same way, with the L3/L4 rate (tutorial metrics) as their baseline.
 *
 * (2) The delay from a packet to its line in `hypha observe --follow`: a lab (2 nodes, the
 * tutorial workloads); a sender in the api-gateway pod sends UDP datagrams to a catalog pod,
 * one new source port each (a new connection, so a flow), noting when each leaves; the real
 * CLI follows the node's agent (`-o json`) and the bench notes when each flow's line
 * arrives. Then again for packets the tutorial's default-deny drops. p50 and p99 of each.
 *
 * HYPHA_BENCH_RECORDS (default 200000) and HYPHA_BENCH_PACKETS (default 300) size the runs;
 * HYPHA_BENCH_SKIP_DELAY=1 runs only (1).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { parse } from 'yaml';
import { AgentFlows, type FlowSources } from '../src/agent/flows.js';
import { RecordBatch } from '../src/bpf/index.js';
import {
  CtState,
  DIR_EGRESS,
  DIR_INGRESS,
  EVENT_F_TRACE,
  EventType,
  EventVerdict,
} from '../src/datapath/constants.js';
import { decodeEvents } from '../src/datapath/index.js';
import { EVENT_CAPTURE_LEN, eventHdr } from '../src/datapath/layout.js';
import { HubbleMetrics, type L7Event, parseMetricsConfig } from '../src/hubble/index.js';
import { endpointLabels } from '../src/identity/index.js';
import { PolicyRepository, parsePolicy } from '../src/policy/index.js';
import { type Figure, figure, percentile, repoRoot, writeResults } from './report.js';

const RECORDS = Number(process.env.HYPHA_BENCH_RECORDS ?? 200_000);
const PACKETS = Number(process.env.HYPHA_BENCH_PACKETS ?? 300);
const TUTORIAL = join(repoRoot, 'examples/tutorial');
const TUTORIAL_METRICS = ['dns', 'drop', 'tcp', 'flow', 'port-distribution', 'icmp', 'http'];

// ---------------------------------------------------------------- (1) the pipeline

const APPS = ['frontend', 'catalog', 'api-gateway', 'orders', 'payments', 'search', 'cart', 'users'];

/** A local endpoint as the agent hands them to the flow pipeline. */
type LocalEp = ReturnType<FlowSources['endpoints']>[number];

function cluster(): { sources: FlowSources; local: LocalEp[]; remote: string[]; cookies: number[] } {
  const repo = new PolicyRepository();
  const identityOf = new Map<string, number>();
  const labelsFor = (app: string) =>
    endpointLabels({
      namespace: 'production',
      podLabels: { app, 'pod-template-hash': '7d9f8b6c5d' },
      namespaceLabels: { 'kubernetes.io/metadata.name': 'production' },
    });
  const idFor = (app: string) => {
    let id = identityOf.get(app);
    if (id === undefined) {
      id = 256 + identityOf.size;
      identityOf.set(app, id);
      repo.upsertIdentity(id, labelsFor(app));
    }
    return id;
  };
  const local: LocalEp[] = Array.from({ length: 64 }, (_, i) => {
    const app = APPS[i % APPS.length]!;
    return {
      id: i + 1,
      ip: `10.244.1.${i + 10}`,
      identity: idFor(app),
      podNamespace: 'production',
      podName: `${app}-7d9f8b6c5d-${String(i).padStart(5, 'x')}`,
      labels: labelsFor(app),
      hostIfindex: 100 + i,
      hostIfname: `lxc${i}`,
    };
  });
  const remote = Array.from({ length: 256 }, (_, i) => `10.244.2.${i}`);
  const remoteInfo = new Map(
    remote.map((ip, i) => {
      const app = APPS[i % APPS.length]!;
      return [ip, { identity: idFor(app), namespace: 'production', podName: `${app}-5b8d7c9f4-r${i}` }];
    }),
  );
  for (const e of local)
    repo.upsertEndpoint({ id: e.id, namespace: e.podNamespace, identity: e.identity, labels: e.labels });
  for (const f of ['05.1-default-deny.yaml', '05.2-frontend-ingress.yaml'])
    for (const p of parsePolicy(parse(readFileSync(join(TUTORIAL, f), 'utf8'))).policies)
      repo.upsertPolicy(p);
  const cookies = [
    ...new Set(
      local.flatMap((e) => {
        const pol = repo.endpointPolicy(e.id);
        return pol
          ? [...pol.ingress.entries.values(), ...pol.egress.entries.values()].map((x) => x.cookie)
          : [];
      }),
    ),
  ].filter((c) => c !== 0);
  const sources: FlowSources = {
    nodeName: 'kind-worker',
    repo,
    endpoints: () => local,
    remote: (ip) => remoteInfo.get(ip),
    service: (ip, port) =>
      ip === '10.96.0.10' && port === 53 ? { name: 'kube-dns', namespace: 'kube-system' } : undefined,
  };
  return { sources, local, remote, cookies };
}

/** An Ethernet/IPv4 frame as the datapath captures it (first 128 bytes at most). */
function frame(
  src: string,
  dst: string,
  proto: 'tcp' | 'udp' | 'icmp',
  sport: number,
  dport: number,
  flags: number,
  payload: number,
) {
  const l4 = proto === 'tcp' ? 40 : 8; // TCP with options, as a SYN carries them
  const total = 20 + l4 + payload;
  const b = new Uint8Array(14 + total);
  const d = new DataView(b.buffer);
  b.set([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x0a, 0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01], 0);
  d.setUint16(12, 0x0800);
  b[14] = 0x45;
  d.setUint16(16, total);
  b[22] = 64;
  b[23] = proto === 'tcp' ? 6 : proto === 'udp' ? 17 : 1;
  b.set(src.split('.').map(Number), 26);
  b.set(dst.split('.').map(Number), 30);
  if (proto === 'icmp') {
    b[34] = 8;
  } else {
    d.setUint16(34, sport);
    d.setUint16(36, dport);
    if (proto === 'tcp') {
      b[34 + 12] = 0xa0;
      b[34 + 13] = flags;
    } else d.setUint16(38, 8 + payload);
  }
  return b;
}

/** Ring records as the shim's drain lays them out: an 8-byte header, the record, padding to 8. */
function records(n: number, c: ReturnType<typeof cluster>, rnd: () => number): RecordBatch[] {
  const batches: RecordBatch[] = [];
  const PER_BATCH = 2048;
  let ts = 1_000_000_000n;
  for (let done = 0; done < n; ) {
    const count = Math.min(PER_BATCH, n - done);
    const buf = new Uint8Array(count * (8 + eventHdr.size + EVENT_CAPTURE_LEN + 8));
    const d = new DataView(buf.buffer);
    let off = 0;
    for (let i = 0; i < count; i++) {
      const ep = c.local[Math.floor(rnd() * c.local.length)]!;
      const peer = c.remote[Math.floor(rnd() * c.remote.length)]!;
      const sport = 32768 + Math.floor(rnd() * 28000);
      const r = rnd();
      let hdr: Record<string, number | bigint>;
      let pkt: Uint8Array;
      ts += 7919n;
      const base = { ts_ns: ts, source: ep.id, ifindex: ep.hostIfindex, proxy_port: 0 };
      if (r < 0.45) {
        // A new connection: its policy verdict and its trace in one record.
        const egress = rnd() < 0.5;
        pkt = egress
          ? frame(ep.ip, peer, 'tcp', sport, 8080, 0x02, 0)
          : frame(peer, ep.ip, 'tcp', sport, 8080, 0x02, 0);
        hdr = {
          ...base,
          type: EventType.PolicyVerdict,
          subtype: egress ? 5 : 0,
          src_identity: egress ? ep.identity : 257,
          dst_identity: egress ? 257 : ep.identity,
          cookie: c.cookies[Math.floor(rnd() * c.cookies.length)] ?? 0,
          verdict: EventVerdict.Forwarded,
          direction: egress ? DIR_EGRESS : DIR_INGRESS,
          ct_state: CtState.New,
          flags: EVENT_F_TRACE,
        };
      } else if (r < 0.65) {
        pkt = frame(peer, ep.ip, 'tcp', 8080, sport, 0x12, 0);
        hdr = {
          ...base,
          type: EventType.Trace,
          subtype: 5,
          src_identity: 257,
          dst_identity: ep.identity,
          cookie: 0,
          verdict: 1,
          direction: DIR_INGRESS,
          ct_state: CtState.Reply,
          flags: 0,
        };
      } else if (r < 0.82) {
        pkt = frame(ep.ip, peer, 'tcp', sport, 8080, 0x18, 512);
        hdr = {
          ...base,
          type: EventType.Trace,
          subtype: 5,
          src_identity: ep.identity,
          dst_identity: 257,
          cookie: 0,
          verdict: 1,
          direction: DIR_EGRESS,
          ct_state: CtState.Established,
          flags: 0,
        };
      } else if (r < 0.92) {
        pkt = frame(peer, ep.ip, 'tcp', sport, 9090, 0x02, 0);
        hdr = {
          ...base,
          type: EventType.Drop,
          subtype: 133,
          src_identity: 258,
          dst_identity: ep.identity,
          cookie: 0,
          verdict: EventVerdict.Dropped,
          direction: DIR_INGRESS,
          ct_state: CtState.New,
          flags: 0,
        };
      } else if (r < 0.97) {
        pkt = frame(ep.ip, '10.96.0.10', 'udp', sport, 53, 0, 40);
        hdr = {
          ...base,
          type: EventType.PolicyVerdict,
          subtype: 5,
          src_identity: ep.identity,
          dst_identity: 259,
          cookie: c.cookies[0] ?? 0,
          verdict: 1,
          direction: DIR_EGRESS,
          ct_state: CtState.New,
          flags: EVENT_F_TRACE,
        };
      } else {
        pkt = frame(ep.ip, '203.0.113.10', 'icmp', 0, 0, 0, 56);
        hdr = {
          ...base,
          type: EventType.Trace,
          subtype: 5,
          src_identity: ep.identity,
          dst_identity: 2,
          cookie: 0,
          verdict: 1,
          direction: DIR_EGRESS,
          ct_state: CtState.New,
          flags: 0,
        };
      }
      const cap = Math.min(pkt.length, EVENT_CAPTURE_LEN);
      const len = eventHdr.size + cap;
      d.setUint32(off, len, true);
      eventHdr.encode({ ...hdr, orig_len: pkt.length, cap_len: cap } as never, d, off + 8);
      buf.set(pkt.subarray(0, cap), off + 8 + eventHdr.size);
      off += 8 + ((len + 7) & ~7);
    }
    batches.push(new RecordBatch(buf, off));
    done += count;
  }
  return batches;
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function pipeline(): Figure[] {
  const c = cluster();
  const batches = records(RECORDS, c, seeded(42));
  const decodeOnly = () => {
    let n = 0;
    for (const b of batches) n += decodeEvents(b).length;
    return n;
  };
  const run = (withMetrics: boolean) => {
    const flows = new AgentFlows(c.sources);
    if (withMetrics) flows.metrics = new HubbleMetrics(parseMetricsConfig(TUTORIAL_METRICS));
    let events = 0;
    for (const b of batches) {
      const evs = decodeEvents(b);
      events += evs.length;
      for (const ev of evs) flows.add(ev);
    }
    return { events, flows: flows.ring.stats.seenFlows, errors: flows.errors };
  };
  // Warm up: compiled code and the enrichment indexes, as in a running agent.
  decodeOnly();
  run(true);
  // CPU time of this process (all its threads, the garbage collector's included): what one
  // core spends, whatever else the machine runs meanwhile.
  const time = <T>(fn: () => T): [T, number] => {
    const c0 = process.cpuUsage();
    const r = fn();
    const c = process.cpuUsage(c0);
    return [r, (c.user + c.system) / 1e6];
  };
  const best = <T>(fn: () => T): [T, number] => {
    let out = time(fn);
    for (let i = 0; i < 4; i++) {
      const next = time(fn);
      if (next[1] < out[1]) out = next;
    }
    return out;
  };
  // L7: the proxies' events (a request and its response per exchange) through addL7, with
  // the tutorial's metrics; the L3/L4 path above is the baseline.
  const l7Events = l7Exchanges(c, 20_000);
  const runL7 = () => {
    const flows = new AgentFlows(c.sources);
    flows.metrics = new HubbleMetrics(parseMetricsConfig(TUTORIAL_METRICS));
    for (const e of l7Events) flows.addL7(e);
    return { flows: flows.ring.stats.seenFlows, errors: flows.l7Errors };
  };
  runL7();
  const [events, decodeS] = best(decodeOnly);
  const [plain, plainS] = best(() => run(false));
  const [metered, meteredS] = best(() => run(true));
  const [l7, l7S] = best(runL7);
  const decodeRate = events / decodeS;
  return [
    figure(
      'pipeline: flows per CPU-second (decode, build, ring)',
      plain.flows / plainS,
      'flows/s',
      decodeRate,
    ),
    figure(
      'pipeline: flows per CPU-second, tutorial metrics',
      metered.flows / meteredS,
      'flows/s',
      decodeRate,
    ),
    figure('pipeline: CPU per flow, tutorial metrics', (meteredS / metered.flows) * 1e6, 'µs'),
    figure(
      'pipeline: events lost (in - out)',
      metered.events - metered.flows + plain.events - plain.flows,
      'events',
    ),
    figure('pipeline: records that failed to build', metered.errors + plain.errors, 'records'),
    figure('pipeline: events per run', events, 'events'),
    figure(
      'L7: flows per CPU-second from proxy events (addL7, tutorial metrics), vs L3/L4',
      l7.flows / l7S,
      'flows/s',
      metered.flows / meteredS,
    ),
    figure('L7: CPU per flow, tutorial metrics', (l7S / l7.flows) * 1e6, 'µs'),
    figure('L7: events refused or lost', l7Events.length - l7.flows + l7.errors, 'events'),
  ];
}

/** HTTP exchanges as the L7 proxy reports them: GETs from remote pods to local ones. */
function l7Exchanges(c: ReturnType<typeof cluster>, n: number): L7Event[] {
  const out: L7Event[] = [];
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const server = c.local[i % c.local.length]!;
    const ip = c.remote[i % c.remote.length]!;
    const client = { ip, port: 40000 + (i % 20000), identity: c.sources.remote(ip)!.identity };
    const dst = { ip: server.ip, port: 8080, identity: server.identity };
    const http = {
      method: 'GET',
      url: `http://${server.podName.split('-')[0]}:8080/api/v1/products`,
      protocol: 'HTTP/1.1',
      headers: [
        { key: 'host', value: 'catalog:8080' },
        { key: 'user-agent', value: 'curl/7.88.1' },
      ],
    };
    const base = {
      time: now + i,
      kind: 'http' as const,
      verdict: 'FORWARDED' as const,
      trafficDirection: 'INGRESS' as const,
      endpointId: server.id,
      policy: { kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'catalog-l7-policy' },
    };
    out.push(
      { ...base, type: 'request', source: client, destination: dst, http: { ...http, code: 0 } },
      {
        ...base,
        type: 'response',
        source: dst,
        destination: client,
        latencyNs: 250_000,
        http: { ...http, code: 200 },
      },
    );
  }
  return out;
}

// ---------------------------------------------------------------- (2) packet to observe output

interface Pod {
  metadata: { name: string; namespace: string };
  spec: { nodeName?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

async function delay(): Promise<Figure[]> {
  const { Lab } = await import('../src/lab/lab.js');
  const { applyFiles } = await import('../src/cli/commands/lab.js');
  const { KubeClient, loadKubeconfig } = await import('../src/k8s/client.js');
  const { execInPod } = await import('../src/k8s/exec.js');
  const work = mkdtempSync(join(tmpdir(), 'hyhb-bench-'));
  const lab = new Lab(
    {
      name: 'hyhbbench',
      nodes: 2,
      dataDir: join(work, 'lab'),
      values: {},
      port: 0,
      relayPort: 0,
      underlayOctet: 232,
    },
    () => {},
  );
  let observe: ChildProcess | undefined;
  try {
    const state = await lab.up();
    const kt = loadKubeconfig(state.kubeconfig);
    const client = new KubeClient(kt);
    const quiet = new PassThrough().resume();
    await applyFiles(client, [join(TUTORIAL, '00-workloads.yaml')], quiet);
    let pods: Pod[] = [];
    for (const end = Date.now() + 90_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      pods = (await client.json<{ items: Pod[] }>('GET', '/api/v1/namespaces/production/pods')).items;
      if (
        pods.length >= 3 &&
        pods.every((p) => p.status?.conditions?.some((x) => x.type === 'Ready' && x.status === 'True'))
      )
        break;
    }
    const gw = pods.find((p) => p.metadata.name.startsWith('api-gateway-'))!;
    const catalog = pods.find(
      (p) => p.metadata.name.startsWith('catalog-') && p.spec.nodeName === gw.spec.nodeName,
    )!;
    const node = state.nodes.find((n) => n.name === gw.spec.nodeName)!;

    // The follower: the real CLI, on the agent of the sender's node.
    const arrivals = new Map<number, number>();
    observe = spawn(
      join(repoRoot, 'bin/hypha'),
      [
        'observe',
        '--follow',
        '-o',
        'json',
        '--server',
        `unix://${node.agentSocket}`,
        '--protocol',
        'udp',
        '--to-port',
        '7777',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let buf = '';
    observe.stdout?.on('data', (chunk: Buffer) => {
      const now = performance.timeOrigin + performance.now();
      buf += chunk.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const port = (JSON.parse(line) as { flow?: { l4?: { UDP?: { source_port?: number } } } }).flow?.l4
          ?.UDP?.source_port;
        if (port !== undefined && !arrivals.has(port)) arrivals.set(port, now);
      }
    });
    await new Promise((r) => setTimeout(r, 1000));

    // The sender: a datagram from a new source port every 20 ms, with its send time.
    const sender = join(work, 'sender.mjs');
    writeFileSync(
      sender,
      `import dgram from 'node:dgram';
       const [dst, first, n] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
       for (let i = 0; i < n; i++) {
         const s = dgram.createSocket('udp4');
         await new Promise((r) => s.bind(first + i, r));
         const t = performance.timeOrigin + performance.now();
         // 32 bytes of payload: the datapath captures L4 headers of frames from 64 bytes on.
         await new Promise((r) => s.send('x'.repeat(32), 7777, dst, r));
         process.stdout.write((first + i) + ' ' + t + '\\n');
         s.close();
         await new Promise((r) => setTimeout(r, 20));
       }`,
    );
    const send = async (first: number) => {
      const out = new PassThrough();
      let text = '';
      out.on('data', (c: Buffer) => {
        text += c.toString();
      });
      await execInPod(kt, {
        namespace: 'production',
        pod: gw.metadata.name,
        command: [process.execPath, sender, catalog.status!.podIP!, String(first), String(PACKETS)],
        stdout: out,
        stderr: out,
      });
      await new Promise((r) => setTimeout(r, 1500));
      const delays: number[] = [];
      let missing = 0;
      for (const line of text.trim().split('\n')) {
        const [port, sent] = line.split(' ').map(Number) as [number, number];
        const got = arrivals.get(port);
        if (got === undefined) missing++;
        else delays.push(got - sent);
      }
      return { delays, missing };
    };
    const fwd = await send(20000);
    await applyFiles(client, [join(TUTORIAL, '05.1-default-deny.yaml')], quiet);
    await new Promise((r) => setTimeout(r, 1000));
    const drop = await send(30000);
    return [
      figure('observe --follow delay, forwarded: p50', percentile(fwd.delays, 50), 'ms'),
      figure('observe --follow delay, forwarded: p99', percentile(fwd.delays, 99), 'ms'),
      figure('observe --follow delay, forwarded: packets without a line', fwd.missing, 'packets'),
      figure('observe --follow delay, dropped: p50', percentile(drop.delays, 50), 'ms'),
      figure('observe --follow delay, dropped: p99', percentile(drop.delays, 99), 'ms'),
      figure('observe --follow delay, dropped: packets without a line', drop.missing, 'packets'),
    ];
  } finally {
    if (observe?.pid !== undefined && observe.exitCode === null) process.kill(observe.pid, 'SIGTERM');
    await lab.down(false);
    rmSync(work, { recursive: true, force: true });
  }
}

const figures = pipeline();
if (process.env.HYPHA_BENCH_SKIP_DELAY !== '1') figures.push(...(await delay()));
writeResults('hubble', figures);
