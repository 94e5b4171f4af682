/**
 * The Observer API under stress and bad input, on an agent and through the relay: every
 * RPC with every kind of request; malformed bytes, unknown fields and bad patterns answered
 * with INVALID_ARGUMENT; a peer process killed mid-stream while the relay goes on with the
 * others; a client that stops reading never makes the server queue for it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import {
  type CallOptions,
  type Client,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  makeGenericClientConstructor,
  type requestCallback,
  status,
} from '@grpc/grpc-js';
import {
  type GetFlowsRequestPB,
  type GetFlowsResponsePB,
  type GetNamespacesResponsePB,
  type GetNodesResponsePB,
  type ObserverClient,
  observerClient,
  type ServerStatusResponsePB,
} from '../../src/hubble/grpc/proto.js';
import { type ObserverServer, startObserverServer } from '../../src/hubble/grpc/server.js';
import { type Flow, FlowRing, formatTimestamp } from '../../src/hubble/index.js';
import { startRelay } from '../../src/hubble/relay.js';
import { all, deadline, flowsOf, rejectsWith, unary } from '../helpers/grpc.js';
import { repoRoot } from '../helpers/kernel.js';

const NS = 1_000_000n;
/** Flows from a minute ago on: recent enough for GetNamespaces, old enough to be "before now". */
const T0_MS = Date.now() - 60_000;

function flow(ms: number, node: string, o: Partial<Flow> = {}): Flow {
  return {
    time: formatTimestamp(BigInt(T0_MS + ms) * NS),
    uuid: `${node}-${ms}`,
    verdict: 'FORWARDED',
    IP: { source: '10.0.1.5', destination: '10.0.2.7', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 40000, destination_port: 8080, flags: { SYN: true } } },
    source: { identity: 1234, namespace: 'production', pod_name: 'frontend-abc' },
    destination: { identity: 5678, namespace: 'data-pipeline', pod_name: 'exporter-xyz' },
    Type: 'L3_L4',
    node_name: node,
    event_type: { type: 4 },
    is_reply: false,
    Summary: 'TCP Flags: SYN',
    ...o,
  };
}

const msOf = (r: GetFlowsResponsePB) => {
  const t = r.flow?.time as { seconds?: string; nanos?: number } | undefined;
  return Number(t?.seconds) * 1000 + Math.round((t?.nanos ?? 0) / 1e6) - T0_MS;
};

/** A client sending raw bytes: requests no generated client could encode. */
interface RawClient extends Client {
  GetFlows(req: Buffer): ClientReadableStream<Buffer>;
  ServerStatus(req: Buffer, options: CallOptions, cb: requestCallback<Buffer>): ClientUnaryCall;
}

function rawClient(address: string): RawClient {
  const id = (b: Buffer) => b;
  const Ctor = makeGenericClientConstructor(
    {
      GetFlows: {
        path: '/observer.Observer/GetFlows',
        requestStream: false,
        responseStream: true,
        requestSerialize: id,
        requestDeserialize: id,
        responseSerialize: id,
        responseDeserialize: id,
      },
      ServerStatus: {
        path: '/observer.Observer/ServerStatus',
        requestStream: false,
        responseStream: false,
        requestSerialize: id,
        requestDeserialize: id,
        responseSerialize: id,
        responseDeserialize: id,
      },
    },
    'RawObserver',
  );
  // The methods are added at run time from the definition above.
  return new Ctor(address, credentials.createInsecure()) as unknown as RawClient;
}

/** Reads until `done` holds for what was read. */
function collector(stream: ClientReadableStream<GetFlowsResponsePB>) {
  const read: GetFlowsResponsePB[] = [];
  const waiters: { done: () => boolean; resolve: () => void }[] = [];
  stream.on('data', (r: GetFlowsResponsePB) => {
    read.push(r);
    for (const w of waiters.splice(0))
      if (w.done()) w.resolve();
      else waiters.push(w);
  });
  stream.on('error', () => {}); // cancellations
  return {
    read,
    waitFor: (done: () => boolean, ms = 10_000) =>
      new Promise<void>((resolve, reject) => {
        if (done()) return resolve();
        const t = setTimeout(
          () => reject(new Error(`timed out; read ${JSON.stringify(read.slice(-3))}`)),
          ms,
        );
        waiters.push({
          done,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      }),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'hyhb-grpc-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('every RPC, on an agent and through the relay', () => {
  const ringA = new FlowRing(255);
  const ringB = new FlowRing(255);
  const addrA = `unix://${join(dir, 'a.sock')}`;
  const addrB = `unix://${join(dir, 'b.sock')}`;
  const addrRelay = `unix://${join(dir, 'relay.sock')}`;
  const servers: ObserverServer[] = [];
  const clients: Client[] = [];
  let agent: ObserverClient;
  let relay: ObserverClient;

  before(async () => {
    for (const ms of [100, 300, 500]) ringA.writeFlow(flow(ms, 'node-a'));
    ringA.writeFlow(
      flow(700, 'node-a', { verdict: 'DROPPED', drop_reason_desc: 'POLICY_DENIED', is_reply: undefined }),
    );
    for (const ms of [200, 400])
      ringB.writeFlow(flow(ms, 'node-b', { source: { namespace: 'kube-system', pod_name: 'coredns-1' } }));
    servers.push(await startObserverServer({ ring: ringA, nodeName: 'node-a', listen: [addrA] }));
    servers.push(await startObserverServer({ ring: ringB, nodeName: 'node-b', listen: [addrB] }));
    servers.push(
      await startRelay({
        peers: [
          { name: 'node-a', address: addrA },
          { name: 'node-b', address: addrB },
        ],
        listen: [addrRelay],
        sortWindowMs: 20,
        dialTimeoutMs: 1000,
      }),
    );
    agent = observerClient(addrA);
    relay = observerClient(addrRelay);
    clients.push(agent, relay);
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of servers.reverse()) await s.close();
  });

  const targets = () =>
    [
      ['agent', agent, [100, 300, 500, 700]],
      ['relay', relay, [100, 200, 300, 400, 500, 700]],
    ] as const;
  const get = (c: ObserverClient, req: GetFlowsRequestPB) => all(c.GetFlows(req)).then(flowsOf);

  it('GetFlows: number, first, since/until, whitelist, blacklist', async () => {
    for (const [name, c, times] of targets()) {
      assert.deepEqual((await get(c, {})).map(msOf), times, `${name}: all`);
      assert.deepEqual((await get(c, { number: 2 })).map(msOf), times.slice(-2), `${name}: last 2`);
      assert.deepEqual(
        (await get(c, { number: 2, first: true })).map(msOf),
        times.slice(0, 2),
        `${name}: first 2`,
      );
      const since = {
        seconds: String(Math.floor((T0_MS + 250) / 1000)),
        nanos: ((T0_MS + 250) % 1000) * 1e6,
      };
      const until = {
        seconds: String(Math.floor((T0_MS + 550) / 1000)),
        nanos: ((T0_MS + 550) % 1000) * 1e6,
      };
      assert.deepEqual(
        (await get(c, { since, until })).map(msOf),
        times.filter((t) => t > 250 && t < 550),
        `${name}: since/until`,
      );
      assert.deepEqual((await get(c, { whitelist: [{ verdict: ['DROPPED'] }] })).map(msOf), [700], name);
      assert.deepEqual(
        (await get(c, { blacklist: [{ source_pod: ['production/'] }] })).map(msOf),
        times.filter((t) => t === 200 || t === 400),
        `${name}: blacklist`,
      );
      assert.deepEqual(
        (await get(c, { whitelist: [{ source_pod: ['kube-system/'] }, { verdict: ['DROPPED'] }] })).map(msOf),
        times.filter((t) => t === 200 || t === 400 || t === 700),
        `${name}: whitelist alternatives`,
      );
    }
  });

  it('GetFlows: follow sends what is written after the call, until cancelled', async () => {
    for (const [name, c] of targets()) {
      const stream = c.GetFlows({
        follow: true,
        whitelist: [{ uuid: [`node-a-${name}`, `node-b-${name}`] }],
      });
      const col = collector(stream);
      // Follow starts at "now": wait until the call is reading before writing.
      await new Promise((r) => setTimeout(r, 200));
      ringA.writeFlow(
        flow(0, 'node-a', { uuid: `node-a-${name}`, time: formatTimestamp(BigInt(Date.now()) * NS) }),
      );
      ringB.writeFlow(
        flow(0, 'node-b', { uuid: `node-b-${name}`, time: formatTimestamp(BigInt(Date.now()) * NS) }),
      );
      const want = name === 'agent' ? [`node-a-${name}`] : [`node-a-${name}`, `node-b-${name}`];
      await col.waitFor(() => flowsOf(col.read).length === want.length);
      assert.deepEqual(
        flowsOf(col.read)
          .map((r) => r.flow?.uuid)
          .sort(),
        want,
      );
      stream.cancel();
    }
  });

  it('ServerStatus, GetNodes, GetNamespaces', async () => {
    const a = await unary<ServerStatusResponsePB>((cb) => agent.ServerStatus({}, deadline(), cb));
    assert.equal(a.num_flows, String(ringA.stats.numFlows));
    assert.equal(a.max_flows, '255');
    const r = await unary<ServerStatusResponsePB>((cb) => relay.ServerStatus({}, deadline(), cb));
    assert.equal(r.num_flows, String(ringA.stats.numFlows + ringB.stats.numFlows));
    assert.deepEqual(r.num_connected_nodes, { value: 2 });
    assert.deepEqual(r.num_unavailable_nodes, { value: 0 });
    const an = await unary<GetNodesResponsePB>((cb) => agent.GetNodes({}, deadline(), cb));
    assert.deepEqual(
      an.nodes?.map((n) => [n.name, n.state]),
      [['node-a', 'NODE_CONNECTED']],
    );
    const rn = await unary<GetNodesResponsePB>((cb) => relay.GetNodes({}, deadline(), cb));
    assert.deepEqual(
      rn.nodes?.map((n) => [n.name, n.state]),
      [
        ['node-a', 'NODE_CONNECTED'],
        ['node-b', 'NODE_CONNECTED'],
      ],
    );
    const ans = await unary<GetNamespacesResponsePB>((cb) => agent.GetNamespaces({}, deadline(), cb));
    assert.deepEqual(
      ans.namespaces?.map((n) => n.namespace),
      ['data-pipeline', 'production'],
    );
    const rns = await unary<GetNamespacesResponsePB>((cb) => relay.GetNamespaces({}, deadline(), cb));
    assert.deepEqual(
      rns.namespaces?.map((n) => n.namespace),
      ['data-pipeline', 'kube-system', 'production'],
    );
  });

  it('malformed requests, unknown fields and bad patterns are INVALID_ARGUMENT, and serving goes on', async () => {
    for (const [name, c] of targets()) {
      const address = name === 'agent' ? addrA : addrRelay;
      const raw = rawClient(address);
      clients.push(raw);
      const rawFlows = (bytes: number[]) =>
        new Promise<void>((resolve, reject) => {
          const s = raw.GetFlows(Buffer.from(bytes));
          s.on('data', () => {});
          s.on('error', reject);
          s.on('end', () => resolve());
        });
      await rejectsWith(
        rawFlows([0xff, 0xff, 0xff]),
        status.INVALID_ARGUMENT,
        /GetFlowsRequest: \(message\): not a observer.GetFlowsRequest message/,
      );
      // whitelist[0] (field 6) holding field 77, which FlowFilter does not have.
      await rejectsWith(
        rawFlows([0x32, 0x03, 0xe8, 0x04, 0x01]),
        status.INVALID_ARGUMENT,
        /GetFlowsRequest: whitelist\[0\]: unknown field number 77/,
      );
      // A second blacklist filter with an unknown field inside its event_type filter.
      await rejectsWith(
        rawFlows([0x2a, 0x00, 0x2a, 0x04, 0x32, 0x02, 0x50, 0x01]),
        status.INVALID_ARGUMENT,
        /blacklist\[1\]\.event_type\[0\]: unknown field number 10/,
      );
      // Field 111 of the request itself.
      await rejectsWith(
        rawFlows([0xf8, 0x06, 0x01]),
        status.INVALID_ARGUMENT,
        /GetFlowsRequest: GetFlowsRequest: unknown field number 111/,
      );
      await rejectsWith(
        unary((cb) => raw.ServerStatus(Buffer.from([0x0a, 0x05, 0x01]), deadline(), cb)),
        status.INVALID_ARGUMENT,
        /ServerStatusRequest: \(message\): not a observer.ServerStatusRequest message/,
      );
      await rejectsWith(
        get(c, { whitelist: [{ http_path: ['/api/(v1'] }] }),
        status.INVALID_ARGUMENT,
        /whitelist\[0\]: http_path\[0\]: invalid regular expression "\/api\/\(v1"/,
      );
      await rejectsWith(
        get(c, { blacklist: [{ source_fqdn: ['bad!name'] }] }),
        status.INVALID_ARGUMENT,
        /blacklist\[0\]: source_fqdn\[0\]: "!": invalid character in pattern/,
      );
      await rejectsWith(
        get(c, { whitelist: [{ source_ip: ['10.0.0.300'] }] }),
        status.INVALID_ARGUMENT,
        /whitelist\[0\]: source_ip\[0\]: "10.0.0.300" is not an IP address/,
      );
      await rejectsWith(
        get(c, { whitelist: [{ http_status_code: ['2x'] }] }),
        status.INVALID_ARGUMENT,
        /http_status_code\[0\]: invalid status code prefix "2x"/,
      );
      await rejectsWith(
        get(c, { number: 1, field_mask: { paths: ['l7.http.nope'] } }),
        status.INVALID_ARGUMENT,
        /field_mask.paths\[0\]: "l7.http.nope": flow.HTTP has no field "nope"/,
      );
      assert.ok((await get(c, { number: 1 })).length === 1, `${name} still serves`);
    }
  });
});

/** A peer in a process of its own, so that it can die the way a node does. */
function peerProcess(sock: string, node: string): Promise<{ child: ChildProcess; address: string }> {
  const src = `
    import { FlowRing, formatTimestamp } from ${JSON.stringify(join(repoRoot, 'dist/src/hubble/index.js'))};
    import { startObserverServer } from ${JSON.stringify(join(repoRoot, 'dist/src/hubble/grpc/server.js'))};
    const ring = new FlowRing(1023);
    const s = await startObserverServer({ ring, nodeName: ${JSON.stringify(node)}, listen: [${JSON.stringify(sock)}] });
    let n = 0;
    setInterval(() => ring.writeFlow({ time: formatTimestamp(BigInt(Date.now()) * 1000000n), uuid: ${JSON.stringify(node)} + '-' + n++,
      verdict: 'FORWARDED', node_name: ${JSON.stringify(node)}, event_type: { type: 4 }, Summary: 'x' }), 10);
    process.stdout.write(s.addresses[0] + '\\n');
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', src], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`peer ${node} exited (${code})`)));
    child.stdout?.once('data', (c: Buffer) => resolve({ child, address: c.toString().trim() }));
  });
}

describe('a relay peer that dies mid-stream', () => {
  let peer: ChildProcess | undefined;

  after(() => {
    if (peer?.pid !== undefined && peer.exitCode === null && peer.signalCode === null)
      process.kill(peer.pid, 'SIGKILL');
  });

  it('the stream goes on with the other peers; ServerStatus and GetNodes report the lost node', async () => {
    const ringA = new FlowRing(1023);
    const a = await startObserverServer({
      ring: ringA,
      nodeName: 'node-a',
      listen: [`unix://${join(dir, 'live.sock')}`],
    });
    const p = await peerProcess(`unix://${join(dir, 'doomed.sock')}`, 'node-doomed');
    peer = p.child;
    const relaySock = `unix://${join(dir, 'relay2.sock')}`;
    const relay = await startRelay({
      peers: [
        { name: 'node-a', address: a.addresses[0]! },
        { name: 'node-doomed', address: p.address },
      ],
      listen: [relaySock],
      sortWindowMs: 20,
      dialTimeoutMs: 500,
      retryMs: 200,
    });
    const client = observerClient(relaySock);
    const timer = setInterval(
      () => ringA.writeFlow(flow(0, 'node-a', { time: formatTimestamp(BigInt(Date.now()) * NS) })),
      10,
    );
    try {
      const stream = client.GetFlows({ follow: true });
      const col = collector(stream);
      const from = (node: string) => () => col.read.some((r) => r.flow && r.node_name === node);
      await col.waitFor(from('node-doomed'));
      await col.waitFor(from('node-a'));

      process.kill(p.child.pid!, 'SIGKILL');
      await col.waitFor(() => col.read.some((r) => r.node_status?.state_change === 'NODE_ERROR'));
      const err = col.read.find((r) => r.node_status?.state_change === 'NODE_ERROR')!;
      assert.deepEqual(err.node_status?.node_names, ['node-doomed']);
      assert.ok(err.node_status?.message, 'the error says why');
      const at = col.read.indexOf(err);
      await col.waitFor(
        () => col.read.slice(at).filter((r) => r.flow && r.node_name === 'node-a').length >= 10,
      );

      const s = await unary<ServerStatusResponsePB>((cb) => client.ServerStatus({}, deadline(), cb));
      assert.deepEqual(s.num_connected_nodes, { value: 1 });
      assert.deepEqual(s.num_unavailable_nodes, { value: 1 });
      assert.deepEqual(s.unavailable_nodes, ['node-doomed']);
      const nodes = await unary<GetNodesResponsePB>((cb) => client.GetNodes({}, deadline(), cb));
      assert.deepEqual(
        nodes.nodes?.map((n) => [n.name, n.state]),
        [
          ['node-a', 'NODE_CONNECTED'],
          ['node-doomed', 'NODE_UNAVAILABLE'],
        ],
      );
      // A bounded request now answers from the living node and says which one is missing.
      const once = await all(client.GetFlows({ number: 5 }));
      assert.deepEqual(once[0]?.node_status, { state_change: 'NODE_CONNECTED', node_names: ['node-a'] });
      assert.deepEqual(once[1]?.node_status, {
        state_change: 'NODE_UNAVAILABLE',
        node_names: ['node-doomed'],
      });
      assert.equal(flowsOf(once).length, 5);
      assert.ok(flowsOf(once).every((r) => r.node_name === 'node-a'));
      stream.cancel();
    } finally {
      clearInterval(timer);
      client.close();
      await relay.close();
      await a.close();
    }
  });
});

describe('a client that stops reading', () => {
  /**
   * Pauses a followed stream, writes `n` flows into the ring in bursts smaller than the
   * ring, then reads again: what arrives before the first LostEvent is what was queued for
   * the client along the way. Everything is either delivered or counted lost.
   */
  async function pausedReader(via: 'agent' | 'relay', n: number) {
    const ring = new FlowRing(255);
    const sock = `unix://${join(dir, `slow-${via}.sock`)}`;
    const agentSrv = await startObserverServer({ ring, nodeName: 'node-s', listen: [sock] });
    const relaySock = `unix://${join(dir, `slow-relay-${via}.sock`)}`;
    const relaySrv =
      via === 'relay'
        ? await startRelay({
            peers: [{ name: 'node-s', address: sock }],
            listen: [relaySock],
            sortWindowMs: 5,
          })
        : undefined;
    const c = observerClient(via === 'relay' ? relaySock : sock);
    try {
      ring.writeFlow(flow(0, 'node-s', { time: formatTimestamp(BigInt(Date.now()) * NS) }));
      const stream = c.GetFlows({ number: 1, follow: true });
      const col = collector(stream);
      await col.waitFor(() => flowsOf(col.read).length === 1);
      stream.pause();
      const heapBefore = process.memoryUsage().heapUsed;
      for (let i = 1; i <= n; i++) {
        ring.writeFlow(flow(i, 'node-s', { uuid: `s-${i}`, time: formatTimestamp(BigInt(Date.now()) * NS) }));
        if (i % 50 === 0) await tick();
      }
      const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
      const pausedAt = col.read.length;
      stream.resume();
      await col.waitFor(() => col.read.some((r) => r.flow?.uuid === `s-${n}`), 30_000);
      stream.cancel();
      const after = col.read.slice(pausedAt);
      const firstLost = after.findIndex((r) => r.lost_events);
      const lost = after
        .filter((r) => r.lost_events)
        .reduce((sum, r) => sum + Number(r.lost_events!.num_events_lost), 0);
      const delivered = flowsOf(col.read).length - 1;
      return { queued: firstLost, lost, delivered, heapGrowth, received: col.read.length - pausedAt };
    } finally {
      c.close();
      await relaySrv?.close();
      await agentSrv.close();
    }
  }

  it('an agent lets the ring lap it: the queue for it stays small, however much is written', async (t) => {
    const small = await pausedReader('agent', 5_000);
    const big = await pausedReader('agent', 40_000);
    t.diagnostic(`queued ${small.queued} of 5000, ${big.queued} of 40000`);
    for (const r of [small, big]) {
      assert.ok(r.queued >= 0, 'a LostEvent arrives');
      assert.ok(r.queued < 1500, `queued for the paused client: ${r.queued}`);
      assert.equal(r.delivered + r.lost, r === small ? 5_000 : 40_000, 'every flow is sent or counted lost');
    }
    // Eight times the flows, not eight times the queue.
    assert.ok(big.queued < small.queued * 2 + 200, `queued ${small.queued} then ${big.queued}`);
  });

  it('the relay pauses its peers: the agents drop for it, the relay does not buffer', async (t) => {
    const small = await pausedReader('relay', 5_000);
    const big = await pausedReader('relay', 40_000);
    t.diagnostic(`queued ${small.queued} of 5000, ${big.queued} of 40000; heap +${big.heapGrowth} B`);
    for (const r of [small, big]) {
      assert.ok(r.queued >= 0, 'a LostEvent comes through the relay');
      assert.ok(r.queued < 3000, `queued along agent, relay and client: ${r.queued}`);
    }
    assert.ok(big.queued < small.queued * 2 + 400, `queued ${small.queued} then ${big.queued}`);
    assert.ok(big.heapGrowth < 64 * 1024 * 1024, `heap grew ${big.heapGrowth} bytes`);
  });
});
