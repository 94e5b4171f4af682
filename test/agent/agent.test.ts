/**
 * The agent and the CNI plugin together, as a kubelet would drive them: an agent process
 * in a node namespace, hypha-cni ADD/CHECK/DEL for two pods, policy from the manifests
 * directory enforced on real traffic, a SIGKILL and a restart in the middle.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { handle } from '../../src/agent/api.js';
import { parseResponse } from '../../src/agent/client.js';
import { HostScopeIpam } from '../../src/agent/ipam.js';
import { unpin } from '../../src/bpf/index.js';
import { type NetNs, NetScope } from '../../src/lab/net/index.js';
import { startAgentProcess } from '../helpers/agent.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';

const HYPHA = join(repoRoot, 'bin/hypha');
const CNI = join(repoRoot, 'bin/hypha-cni');
const NODE_BIN = join(repoRoot, 'node_modules/.bin/node');

describe('host-scope IPAM', () => {
  test('allocates, persists, reuses per owner, releases, and says when it is exhausted', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hy-ipam-'));
    try {
      const file = join(dir, 'ipam.json');
      const a = new HostScopeIpam('10.9.0.0/29', file);
      assert.equal(a.gateway, '10.9.0.1');
      assert.equal(a.capacity, 5);
      assert.equal(a.allocate('c1/eth0'), '10.9.0.2');
      assert.equal(a.allocate('c2/eth0'), '10.9.0.3');
      assert.equal(a.allocate('c1/eth0'), '10.9.0.2', 'same owner, same address');
      const b = new HostScopeIpam('10.9.0.0/29', file);
      assert.equal(b.allocate('c3/eth0'), '10.9.0.4', 'a restart never hands out an address twice');
      b.allocate('c4/eth0');
      b.allocate('c5/eth0');
      assert.throws(() => b.allocate('c6/eth0'), /exhausted/);
      assert.deepEqual(b.release('c2/eth0'), ['10.9.0.3']);
      assert.equal(b.allocate('c6/eth0'), '10.9.0.3');
      assert.throws(() => new HostScopeIpam('10.9.0.0/31', file), /leaves no room/);
      assert.throws(() => new HostScopeIpam('10.9.0.300/24', file), /not a CIDR/);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test('the API client reads Content-Length and chunked responses, and refuses garbage', () => {
    const cl = parseResponse(Buffer.from('HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n{"ip":"x"}extra'));
    assert.deepEqual(cl, { status: 201, body: '{"ip":"x"' });
    const ch = parseResponse(
      Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'),
    );
    assert.deepEqual(ch, { status: 200, body: '{"a":1}' });
    assert.throws(() => parseResponse(Buffer.from('HTTP/1.1 200 OK\r\n')), /incomplete/);
    assert.throws(() => parseResponse(Buffer.from('SMTP ready\r\n\r\n')), /bad status line/);
  });

  test('the API validates requests at the edge', () => {
    const fake = {} as Parameters<typeof handle>[0];
    assert.deepEqual(handle(fake, 'PUT', '/v1/endpoints/abc', { ifname: 'eth0' }).status, 400);
    assert.match(JSON.stringify(handle(fake, 'PUT', '/v1/endpoints/abc', { ifname: 'eth0' }).body), /netns/);
    assert.equal(handle(fake, 'GET', '/v2/nothing', undefined).status, 404);
    assert.equal(handle(fake, 'GET', '/v1/healthz', undefined).status, 200);
  });
});

describe('agent and CNI plugin on a node', { skip: skipUnlessPrivileged() }, () => {
  const net = new NetScope();
  const work = mkdtempSync(join(tmpdir(), 'hy-agent-'));
  const manifests = join(work, 'manifests');
  const socket = join(work, 'run', 'agent.sock');
  const state = join(work, 'state');
  let node: NetNs;
  let pods: Record<string, NetNs> = {};
  const ips: Record<string, string> = {};
  let agent: ChildProcess | undefined;
  let pinDir = '';

  const startAgent = async () => {
    agent = await startAgentProcess({
      netns: node.name!,
      podCidr: '10.246.0.0/24',
      stateDir: state,
      socket,
      pinDir,
      manifests,
    });
  };
  const cni = (
    command: string,
    pod: string,
    netns = `/var/run/netns/${pods[pod]?.name}`,
    prevResult?: unknown,
  ) =>
    node.exec(CNI, [], {
      input: JSON.stringify({
        cniVersion: '1.0.0',
        name: 'hypha',
        type: 'hypha-cni',
        agentSocket: socket,
        ...(prevResult ? { prevResult } : {}),
      }),
      env: {
        ...process.env,
        CNI_COMMAND: command,
        CNI_CONTAINERID: `ctr-${pod}`,
        CNI_NETNS: netns,
        CNI_IFNAME: 'eth0',
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=${pod}`,
        CNI_PATH: '/opt/cni/bin',
      },
    });
  const ping = (from: string, to: string) => pods[from]!.exec('ping', ['-c', '1', '-W', '1', ips[to]!]);
  const tcp = (from: string, to: string) =>
    pods[from]!.exec('timeout', [
      '2',
      'bash',
      '-c',
      `exec 3<>/dev/tcp/${ips[to]}/8080 && echo hello >&3 && head -c 5 <&3`,
    ]);

  before(async () => {
    node = await net.netns({ prefix: 'an' });
    pinDir = `/sys/fs/bpf/hypha/${node.name}`;
    await node.sysctl('net.ipv4.ip_forward', 1);
    pods = { web: await net.netns({ prefix: 'aw' }), client: await net.netns({ prefix: 'ac' }) };
    writeFileSync(join(work, 'ns.yaml'), '');
    rmSync(manifests, { recursive: true, force: true });
    (await import('node:fs')).mkdirSync(manifests, { recursive: true });
    writeFileSync(
      join(manifests, 'pods.yaml'),
      `apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: prod, labels: {app: client}}
spec: {containers: [{name: c, image: x}]}
`,
    );
    await startAgent();
  });
  after(async () => {
    agent?.kill('SIGKILL');
    for (const p of Object.keys(pods)) await cni('DEL', p).catch(() => {});
    await net.dispose();
    unpin(pinDir);
    rmSync(work, { recursive: true, force: true });
  });

  test('CNI ADD wires two pods that reach each other; CHECK agrees', async () => {
    for (const p of ['web', 'client']) {
      const r = await cni('ADD', p);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const result = JSON.parse(r.stdout) as {
        ips: { address: string }[];
        interfaces: { name: string; sandbox?: string }[];
      };
      ips[p] = result.ips[0]!.address.split('/')[0]!;
      assert.match(ips[p]!, /^10\.246\.0\./);
      assert.ok(result.interfaces.some((i) => i.name === 'eth0' && i.sandbox));
      assert.equal((await cni('CHECK', p)).code, 0);
      // As a runtime runs a conflist: CHECK gets the ADD's result as prevResult.
      assert.equal((await cni('CHECK', p, undefined, result)).code, 0);
      const wrong = await cni('CHECK', p, undefined, { ...result, ips: [{ address: '10.9.9.9/32' }] });
      assert.equal(wrong.code, 1);
      assert.equal(JSON.parse(wrong.stdout).code, 100);
    }
    pods.web!.spawn(
      NODE_BIN,
      ['-e', "require('net').createServer(s=>{s.on('error',()=>{});s.pipe(s)}).listen(8080)"],
      { stdio: 'ignore' },
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await ping('client', 'web')).code, 0);
    assert.equal((await tcp('client', 'web')).stdout, 'hello');
  });

  test('endpoint list and status report both pods with their identities', async () => {
    const r = await node.exec(HYPHA, ['endpoint', 'list', '--socket', socket, '-o', 'json']);
    const eps = JSON.parse(r.stdout) as { podName: string; identity: number; state: string }[];
    assert.deepEqual(eps.map((e) => e.podName).sort(), ['client', 'web']);
    assert.ok(eps.every((e) => e.identity >= 256 && e.state === 'ready'));
    const s = await node.exec(HYPHA, ['status', '--socket', socket]);
    assert.equal(s.code, 0, s.stdout + s.stderr);
    assert.match(s.stdout, /Endpoints:\s+2\/2 ready/);
  });

  test('a policy written to the manifests directory is enforced on live traffic', async () => {
    writeFileSync(
      join(manifests, 'policy.yaml'),
      `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`,
    );
    await new Promise((r) => setTimeout(r, 800));
    assert.equal((await tcp('client', 'web')).stdout, 'hello', 'TCP 8080 from client is allowed');
    assert.notEqual((await ping('client', 'web')).code, 0, 'ICMP is now denied');
  });

  test('identity list, policy get, live policy trace and monitor show what the agent does', async () => {
    const ids = JSON.parse(
      (await node.exec(HYPHA, ['identity', 'list', '--socket', socket, '-o', 'json'])).stdout,
    ) as { id: number; labels: Record<string, string> }[];
    assert.ok(ids.some((i) => i.labels.app === 'web' && i.id >= 256));
    const pol = JSON.parse((await node.exec(HYPHA, ['policy', 'get', '--socket', socket])).stdout) as {
      origin: { name: string };
    }[];
    assert.deepEqual(
      pol.map((p) => p.origin.name),
      ['web-ingress'],
    );
    const t = await node.exec(HYPHA, [
      'policy',
      'trace',
      '--socket',
      socket,
      '--src-endpoint',
      'ctr-client',
      '--dst-endpoint',
      'ctr-web',
      '--dport',
      '8',
      '--protocol',
      'icmp',
    ]);
    assert.equal(t.code, 1);
    assert.match(
      t.stdout,
      /default deny: CiliumNetworkPolicy prod\/web-ingress select prod\/web for ingress/,
    );
    const mon = spawn(
      'nsenter',
      [`--net=/var/run/netns/${node.name}`, '--', HYPHA, 'monitor', '--socket', socket, '--type', 'drop'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    mon.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // Ping until the monitor (a fresh process, connecting to the agent) has shown the drop.
    const drop = /xx drop \(POLICY_DENIED\)/;
    for (let i = 0; i < 20 && !drop.test(out); i++) {
      await ping('client', 'web');
      await new Promise((r) => setTimeout(r, 200));
    }
    mon.kill('SIGTERM');
    assert.match(
      out,
      /xx drop \(POLICY_DENIED\) to endpoint \d+, ifindex \d+, identity \d+->\d+: 10\.246\.0\.\d+ -> 10\.246\.0\.\d+ icmp type 8/,
    );
  });

  test('SIGKILL of the agent loses nothing: enforcement goes on, and a restart adopts the endpoints', async () => {
    agent!.kill('SIGKILL');
    await new Promise((r) => agent!.once('exit', r));
    assert.equal((await tcp('client', 'web')).stdout, 'hello', 'the datapath runs without the agent');
    assert.notEqual((await ping('client', 'web')).code, 0, 'and keeps denying');
    await startAgent();
    const r = await node.exec(HYPHA, ['endpoint', 'list', '--socket', socket, '-o', 'json']);
    assert.equal((JSON.parse(r.stdout) as unknown[]).length, 2);
    assert.equal((await tcp('client', 'web')).stdout, 'hello');
    assert.notEqual((await ping('client', 'web')).code, 0);
  });

  test('DEL releases everything, twice is fine, and unknown containers succeed', async () => {
    for (const p of ['web', 'client']) {
      assert.equal((await cni('DEL', p)).code, 0);
      assert.equal((await cni('DEL', p)).code, 0);
    }
    assert.equal((await cni('DEL', 'never-added')).code, 0);
    const r = await node.exec(HYPHA, ['endpoint', 'list', '--socket', socket, '-o', 'json']);
    assert.deepEqual(JSON.parse(r.stdout), []);
    const links = await node.exec('ip', ['-o', 'link']);
    assert.doesNotMatch(links.stdout, /hy[0-9a-f]{11}/, 'no host-side veth left');
  });

  test('bad CNI input gets CNI error JSON with the right codes', async () => {
    const bad = await node.exec(CNI, [], { input: '{not json', env: { ...process.env, CNI_COMMAND: 'ADD' } });
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.stdout).code, 6);
    const version = await node.exec(CNI, [], {
      input: JSON.stringify({ cniVersion: '9.9.9', name: 'x', type: 'hypha-cni' }),
      env: { ...process.env, CNI_COMMAND: 'ADD' },
    });
    assert.equal(JSON.parse(version.stdout).code, 1);
    const noEnv = await node.exec(CNI, [], {
      input: JSON.stringify({ cniVersion: '1.0.0', name: 'x', type: 'hypha-cni', agentSocket: socket }),
      env: { ...process.env, CNI_COMMAND: 'ADD' },
    });
    assert.equal(JSON.parse(noEnv.stdout).code, 4);
    const v = await node.exec(CNI, [], { env: { ...process.env, CNI_COMMAND: 'VERSION' } });
    assert.deepEqual(JSON.parse(v.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  });
});
