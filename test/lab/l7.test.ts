/**
 * The tutorial's section 5.3 in a lab: the L7 HTTP policy (unchanged YAML, applied with
 * kubectl) lets frontend GET /api/v1/products.* on catalog and answers everything else
 * 403 "Access denied", over keep-alive connections, on every catalog pod (same node and
 * across nodes); other pods are dropped at L3/L4. The proxy's requests and responses are
 * L7 flows; killing the proxy drops what needs it (never passes it) until the agent has
 * restarted it; deleting the policy sends traffic directly again.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import type { AgentStatus } from '../../src/agent/agent.js';
import { callAgent } from '../../src/agent/client.js';
import { agentCommands } from '../../src/cli/commands/agent.js';
import { observeCommands } from '../../src/cli/commands/observe.js';
import type { KubeClient } from '../../src/k8s/client.js';
import type { Lab, LabState } from '../../src/lab/lab.js';
import { runCommand } from '../helpers/cli.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, type Pod, startLab, TUTORIAL } from '../helpers/lab.js';

const POLICY = join(TUTORIAL, '05.3-l7-http-policy.yaml');
const NAME = 'hyl7lab';

interface JsonFlow {
  flow?: {
    verdict?: string;
    drop_reason_desc?: string;
    Type?: string;
    source?: { pod_name?: string };
    destination?: { pod_name?: string };
    l7?: { type?: string; http?: { code?: number; method?: string; url?: string; protocol?: string } };
    ingress_denied_by?: { name?: string }[];
  };
}

describe('L7 HTTP policy in the lab (tutorial 5.3)', { skip: skipUnlessPrivileged() }, () => {
  let lab: Lab;
  let state: LabState;
  let client: KubeClient;

  let t: LabFixture;
  const kubectl = (...args: string[]) => t.kubectl(...args);
  const exec = (pod: Pod, command: string[]) => t.exec(pod, command);
  /** `curl` from a pod: the body, then the status code on the last line. */
  const curl = async (from: Pod, url: string, ...opts: string[]) => {
    const r = await exec(from, [
      'curl',
      '-s',
      '--connect-timeout',
      '1',
      '-m',
      '3',
      '-w',
      '\n%{http_code}',
      ...opts,
      url,
    ]);
    const lines = r.stdout.split('\n');
    return { code: lines.at(-1) ?? '', body: lines.slice(0, -1).join('\n') };
  };
  const pods = (selector: string) => t.pods(selector);
  const nodeOf = (pod: Pod) => state.nodes.find((n) => n.name === pod.spec.nodeName)!;
  const agentStatus = (pod: Pod) => callAgent<AgentStatus>(nodeOf(pod).agentSocket, 'GET', '/v1/status');
  /** `hubble observe` against one node's agent, JSON lines. */
  const observe = async (socket: string, ...args: string[]) => {
    const { out } = await runCommand(observeCommands, 'observe', {
      positionals: ['--server', `unix://${socket}`, '--last', '2000', '-o', 'json', ...args],
    });
    return out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as JsonFlow);
  };

  before(async () => {
    t = await startLab({
      name: NAME,
      underlayOctet: 237,
      // Two proxy workers per node whatever the CPU count, so the test can kill one.
      values: { httpProxy: { workers: 2 } },
      manifests: 'tutorial',
      readyPods: 7,
      readyNamespace: 'production',
    });
    ({ lab, state, client } = t);
    const r = await kubectl('apply', '-f', POLICY);
    assert.equal(r.code, 0, r.out);
    // In force once a POST from frontend is refused by the proxy.
    const fe = (await pods('app=frontend'))[0]!;
    for (let i = 0; i < 50; i++) {
      if ((await curl(fe, 'http://catalog:8080/api/v1/products', '-X', 'POST')).code === '403') return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error('the L7 policy never took effect');
  });

  after(async () => {
    await lab?.down(false);
  });

  test('kubectl exec deploy/frontend: GET /api/v1/products 200, POST 403 Access denied, GET /admin 403', async () => {
    // The tutorial's command: kubectl exec -n production deploy/frontend -- curl -s ...
    const fromFrontend = (...curl: string[]) =>
      kubectl('exec', '-n', 'production', 'deploy/frontend', '--', 'curl', '-s', ...curl);
    const get = await fromFrontend('http://catalog:8080/api/v1/products');
    assert.equal(get.code, 0, get.out);
    assert.match(get.out, /"pod":"catalog-/);
    assert.match(get.out, /"method":"GET","path":"\/api\/v1\/products"/);
    const post = await fromFrontend('-i', '-X', 'POST', 'http://catalog:8080/api/v1/products');
    assert.match(post.out, /^HTTP\/1\.1 403 Forbidden/);
    assert.match(post.out, /\r\n\r\nAccess denied\r\n$/);
    const admin = await fromFrontend('-o', '/dev/null', '-w', '%{http_code}', 'http://catalog:8080/admin');
    assert.equal(admin.out, '403');
  });

  test("every frontend reaches every catalog pod (same node and across nodes) through its node's proxy", async () => {
    const fronts = await pods('app=frontend');
    const catalogs = await pods('app=catalog');
    assert.ok(
      fronts.some((f) => catalogs.some((c) => c.spec.nodeName === f.spec.nodeName)) &&
        fronts.some((f) => catalogs.some((c) => c.spec.nodeName !== f.spec.nodeName)),
      'pairs on one node and across nodes',
    );
    for (const f of fronts)
      for (const c of catalogs) {
        const base = `http://${c.status!.podIP}:8080`;
        const ok = await curl(f, `${base}/api/v1/products/42?x=1`);
        assert.equal(ok.code, '200', `${f.metadata.name} -> ${c.metadata.name}`);
        assert.match(ok.body, new RegExp(`"pod":"${c.metadata.name}"`));
        const put = await curl(f, `${base}/api/v1/products`, '-X', 'PUT', '-d', 'x');
        assert.equal(put.code, '403', `${f.metadata.name} -> ${c.metadata.name} PUT`);
        assert.equal(put.body, 'Access denied\r\n');
      }
    // The proxy counts: each catalog node's agent reports its proxy up with catalog's rules,
    // and `hypha status` says so as `cilium status` does its Proxy Status.
    for (const c of catalogs) {
      const st = (await agentStatus(c)).httpProxy;
      assert.equal(st?.ready, true);
      assert.equal(st?.routing.ok, true);
      assert.ok((st?.endpoints ?? 0) >= 1);
      const text = (await runCommand(agentCommands, 'status', { values: { socket: nodeOf(c).agentSocket } }))
        .out;
      assert.match(
        text,
        /^HTTP proxy: +Ok +2\/2 workers \(native\) on :10080 \(egress\), :10081 \(ingress\), HTTP\/2 worker Ok, [1-9]\d* endpoint\(s\) with L7 rules/m,
      );
      assert.match(text, /^DNS proxy: +Ok +\d+\.\d+\.\d+\.\d+/m);
    }
  });

  test('the connection stays usable after a 403 (keep-alive)', async () => {
    const f = (await pods('app=frontend'))[0]!;
    // One curl, three requests: curl reuses its connection and reports new connects per request.
    const r = await exec(f, [
      'curl',
      '-s',
      '-m',
      '5',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{num_connects}\n',
      'http://catalog:8080/api/v1/products',
      'http://catalog:8080/admin',
      'http://catalog:8080/api/v1/products/7',
    ]);
    assert.equal(r.code, 0);
    // The bodies are printed too (-o names the first URL's file only); the -w lines follow each.
    assert.deepEqual(
      r.stdout.split('\n').filter((l) => /^\d{3} \d+$/.test(l)),
      ['200 1', '403 0', '200 0'],
    );
  });

  test('other pods are dropped at L3/L4: no connection, a policy-denied drop', async () => {
    const payments = (await pods('app=payments'))[0]!;
    const catalogs = await pods('app=catalog');
    for (const c of catalogs) {
      const r = await curl(payments, `http://${c.status!.podIP}:8080/api/v1/products`);
      assert.equal(r.code, '000', `payments -> ${c.metadata.name}`);
    }
    let found = false;
    for (const c of catalogs) {
      const flows = await observe(
        nodeOf(c).agentSocket,
        '--verdict',
        'DROPPED',
        '--from-pod',
        'production/payments',
      );
      found ||= flows.some(
        (f) =>
          f.flow?.drop_reason_desc === 'POLICY_DENIED' && f.flow.destination?.pod_name === c.metadata.name,
      );
    }
    assert.ok(found, 'a POLICY_DENIED drop from payments to catalog');
  });

  test('requests and responses are L7 flows (hubble observe --type l7 -o json)', async () => {
    const f = (await pods('app=frontend'))[0]!;
    assert.equal((await curl(f, 'http://catalog:8080/api/v1/products')).code, '200');
    assert.equal((await curl(f, 'http://catalog:8080/api/v1/products', '-X', 'DELETE')).code, '403');
    // The proxy sends its records in batches: look until the last one is in.
    let flows: JsonFlow[] = [];
    for (let i = 0; i < 20; i++) {
      flows = [];
      for (const n of state.nodes) flows.push(...(await observe(n.agentSocket, '--type', 'l7')));
      if (flows.some((x) => x.flow?.l7?.http?.method === 'DELETE')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const http = flows.map((x) => x.flow?.l7).filter((l) => l?.http);
    assert.ok(
      http.some(
        (l) =>
          l?.type === 'REQUEST' && l.http?.method === 'GET' && /\/api\/v1\/products$/.test(l.http.url ?? ''),
      ),
      'a GET request',
    );
    assert.ok(
      http.some((l) => l?.type === 'RESPONSE' && l.http?.code === 200 && l.http.method === 'GET'),
      'its 200 response',
    );
    const denied = flows.find((x) => x.flow?.l7?.http?.method === 'DELETE');
    assert.equal(denied?.flow?.verdict, 'DROPPED', 'the DELETE is a dropped request');
    assert.equal(denied?.flow?.l7?.type, 'REQUEST');
    assert.equal(denied?.flow?.ingress_denied_by?.[0]?.name, 'catalog-l7-policy');
  });

  test('HTTP/2 (h2c, prior knowledge): the same rules per request, L7 flows say HTTP/2', async () => {
    const f = (await pods('app=frontend'))[0]!;
    const h2 = (...args: string[]) =>
      curl(f, 'http://catalog:8080/api/v1/products', '--http2-prior-knowledge', ...args);
    const ok = await h2();
    assert.equal(ok.code, '200');
    assert.match(ok.body, /"protocol":"HTTP\/2.0"/, 'HTTP/2 all the way to the pod');
    const post = await h2('-X', 'POST', '-d', '{}');
    assert.equal(post.code, '403');
    assert.equal(post.body, 'Access denied\r\n');
    let flows: JsonFlow[] = [];
    for (let i = 0; i < 20; i++) {
      flows = [];
      for (const n of state.nodes) flows.push(...(await observe(n.agentSocket, '--type', 'l7')));
      if (flows.some((x) => x.flow?.l7?.http?.protocol === 'HTTP/2' && x.flow.l7.http.method === 'POST'))
        break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const denied = flows.find(
      (x) => x.flow?.l7?.http?.protocol === 'HTTP/2' && x.flow.l7.http.method === 'POST',
    );
    assert.equal(denied?.flow?.verdict, 'DROPPED');
    assert.ok(
      flows.some((x) => x.flow?.l7?.http?.protocol === 'HTTP/2' && x.flow.l7.http.code === 200),
      'the allowed GET and its 200',
    );
  });

  test('an upgrade (WebSocket-style) through the policy: an allowed path becomes a tunnel, a denied one gets 403', async () => {
    const f = (await pods('app=frontend'))[0]!;
    /** Asks for an upgrade on `path`, then sends bytes that would be a denied request if parsed. */
    const upgrade = async (path: string) => {
      const script = [
        "const s = require('net').connect(8080, 'catalog'); let b = ''; let sent = false;",
        `s.on('connect', () => s.write('GET ${path} HTTP/1.1\\r\\nHost: catalog\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n'));`,
        "s.on('data', (d) => { b += d; const h = b.indexOf('\\r\\n\\r\\n');",
        "  if (h >= 0 && b.startsWith('HTTP/1.1 101') && !sent) { sent = true; s.write('POST /admin ping'); }",
        "  if (b.endsWith('POST /admin ping') || (h >= 0 && !b.startsWith('HTTP/1.1 101'))) { console.log(JSON.stringify(b)); process.exit(0); } });",
        "s.on('close', () => { console.log(JSON.stringify(b)); process.exit(0); });",
        "s.on('error', (e) => { console.log(JSON.stringify('error ' + e.message)); process.exit(0); });",
        "setTimeout(() => { console.log(JSON.stringify('timeout ' + b)); process.exit(0); }, 3000);",
      ].join('\n');
      const r = await exec(f, [process.execPath, '-e', script]);
      return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '""') as string;
    };
    const ok = await upgrade('/api/v1/products/ws');
    assert.match(ok, /^HTTP\/1\.1 101 Switching Protocols\r\n/, ok);
    assert.ok(ok.endsWith('\r\n\r\nPOST /admin ping'), `the tunnel echoes, unjudged: ${JSON.stringify(ok)}`);
    const denied = await upgrade('/admin');
    assert.match(denied, /^HTTP\/1\.1 403 Forbidden\r\n/, denied);
  });

  test("egress rules too: the client node's proxy, then the server node's (both policies hold)", async () => {
    const egress = {
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumNetworkPolicy',
      metadata: { name: 'frontend-egress-l7', namespace: 'production' },
      spec: {
        endpointSelector: { matchLabels: { app: 'frontend' } },
        egress: [
          {
            toEndpoints: [{ matchLabels: { app: 'catalog' } }],
            toPorts: [
              {
                ports: [{ port: '8080', protocol: 'TCP' }],
                // Narrower than catalog's ingress rule on products, wider on /admin.
                rules: {
                  http: [
                    { method: 'GET', path: '/api/v1/products/[0-9]+' },
                    { method: 'GET', path: '/admin' },
                  ],
                },
              },
            ],
          },
        ],
      },
    };
    await client.apply(egress);
    try {
      const fronts = await pods('app=frontend');
      const catalogs = await pods('app=catalog');
      const f = fronts[0]!;
      const base = (c: Pod) => `http://${c.status!.podIP}:8080`;
      // In force once the egress rule refuses what the ingress rule lets through.
      let code = '';
      for (let i = 0; i < 50 && code !== '403'; i++) {
        code = (await curl(f, `${base(catalogs[0]!)}/api/v1/products`)).code;
        if (code !== '403') await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(code, '403', 'GET /api/v1/products refused by the egress rule');
      for (const c of catalogs) {
        const ok = await curl(f, `${base(c)}/api/v1/products/42`);
        assert.equal(ok.code, '200', `GET to ${c.metadata.name}, through both proxies`);
        assert.match(ok.body, new RegExp(`"pod":"${c.metadata.name}"`));
        // Allowed by the egress rule, refused by the ingress rule (catalog-l7-policy).
        assert.equal((await curl(f, `${base(c)}/admin`)).code, '403');
        assert.equal((await curl(f, `${base(c)}/api/v1/products/42`, '-X', 'POST')).code, '403');
      }
      let egressFlows: JsonFlow[] = [];
      for (let i = 0; i < 20 && egressFlows.length === 0; i++) {
        const flows = await observe(nodeOf(f).agentSocket, '--type', 'l7', '--traffic-direction', 'egress');
        egressFlows = flows.filter((x) => /\/api\/v1\/products$/.test(x.flow?.l7?.http?.url ?? ''));
        if (egressFlows.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(
        egressFlows[0]?.flow?.verdict,
        'DROPPED',
        "GET /api/v1/products, dropped at the frontend's egress",
      );
    } finally {
      await client.request(
        'DELETE',
        '/apis/cilium.io/v2/namespaces/production/ciliumnetworkpolicies/frontend-egress-l7',
      );
    }
  });

  test('killing one proxy worker: the other serves; killing both: dropped (never passed) until restarted', async () => {
    const catalog = (await pods('app=catalog'))[0]!;
    const front = (await pods('app=frontend'))[0]!;
    const base = `http://${catalog.status!.podIP}:8080/api/v1/products`;
    const before = (await agentStatus(catalog)).httpProxy!;
    const pids = before.workers.map((w) => w.pid);
    assert.equal(pids.length, 2);
    assert.ok(
      pids.every((p) => p !== undefined) && before.workers.every((w) => w.ready),
      'both workers serve',
    );
    /** From the frontend, POSTs (which the rule refuses) and GETs, new connections, every 30 ms. */
    const requests = (n: number) =>
      exec(front, [
        'sh',
        '-c',
        `for i in $(seq 1 ${n}); do curl -s -o /dev/null --connect-timeout 0.4 -m 1 -w "POST %{http_code}\\n" -X POST ${base}; curl -s -o /dev/null --connect-timeout 0.4 -m 1 -w "GET %{http_code}\\n" ${base}; sleep 0.03; done`,
      ]).then((r) => r.stdout.trim().split('\n'));
    const leaked = (lines: string[]) =>
      lines.filter((l) => l.startsWith('POST ') && l !== 'POST 403' && l !== 'POST 000');

    // One worker stopped (SIGTERM: it closes and exits): the kernel's SO_REUSEPORT group has
    // only the other; new connections go there.
    process.kill(pids[0]!, 'SIGTERM');
    for (let i = 0; i < 50 && existsSync(`/proc/${pids[0]}`); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(existsSync(`/proc/${pids[0]}`), false, 'the stopped worker exited');
    const one = await requests(10);
    assert.deepEqual(leaked(one), [], 'no POST got through');
    assert.deepEqual(
      one.filter((l) => l !== 'POST 403' && l !== 'GET 200'),
      [],
      `the other worker answered every request: ${one.join(', ')}`,
    );

    // Both gone (the first may be back already: kill whatever runs now).
    const loop = requests(40);
    await new Promise((r) => setTimeout(r, 400));
    const mid = (await agentStatus(catalog)).httpProxy!;
    for (const w of mid.workers) if (w.pid) process.kill(w.pid, 'SIGKILL');
    const lines = await loop;
    assert.deepEqual(leaked(lines), [], 'no POST got through');
    assert.ok(
      lines.some((l) => l.endsWith(' 000')),
      `some requests failed while both were down: ${lines.join(', ')}`,
    );
    assert.equal(lines.at(-1), 'GET 200', 'served again once restarted');
    const now = (await agentStatus(catalog)).httpProxy!;
    assert.equal(now.ready, true);
    for (const w of now.workers) assert.ok(w.pid && !pids.includes(w.pid), 'every worker was restarted');
    assert.ok(now.restarts >= before.restarts + 2);
    const drops = await observe(
      nodeOf(catalog).agentSocket,
      '--verdict',
      'DROPPED',
      '--to-pod',
      `production/${catalog.metadata.name}`,
    );
    assert.ok(
      drops.some((d) => d.flow?.drop_reason_desc === 'SOCKET_LOOKUP_FAILED'),
      'dropped with SOCKET_LOOKUP_FAILED',
    );
  });

  test('deleting the policy: traffic goes directly again', async () => {
    const r = await kubectl('delete', '-f', POLICY);
    assert.equal(r.code, 0, r.out);
    const f = (await pods('app=frontend'))[0]!;
    let post = { code: '', body: '' };
    for (let i = 0; i < 50 && post.code !== '200'; i++) {
      post = await curl(f, 'http://catalog:8080/admin', '-X', 'POST');
      if (post.code !== '200') await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(post.code, '200');
    assert.match(post.body, /"method":"POST","path":"\/admin"/);
    for (const c of await pods('app=catalog')) assert.equal((await agentStatus(c)).httpProxy?.endpoints, 0);
  });

  test('a new connection on the tuple of an old one is judged by the policy of now (no policy, L7, L4)', async () => {
    // One source port for every connection; each ends with a reset (no TIME_WAIT on the
    // client, so the port is free again at once, while the datapath keeps the old entry).
    const f = (await pods('app=frontend'))[0]!;
    const c = (await pods('app=catalog')).find((p) => p.spec.nodeName === f.spec.nodeName)!;
    const client = `const net = require('node:net');
      const [host, port, localPort] = process.argv.slice(1);
      const s = net.connect({ host, port: +port, localPort: +localPort });
      s.on('connect', () => s.write('POST /api/v1/products HTTP/1.1\\r\\nHost: catalog\\r\\nContent-Length: 0\\r\\n\\r\\n'));
      let b = '';
      s.on('data', (d) => { b += d; if (b.includes('\\r\\n\\r\\n')) { console.log(b.split(' ')[1]); s.resetAndDestroy(); } });
      s.on('error', (e) => console.log(e.code));
      setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000).unref();`;
    const post = async (localPort: number) =>
      (
        await exec(f, [process.execPath, '-e', client, c.status!.podIP!, '8080', String(localPort)])
      ).stdout.trim();
    // Above the ephemeral range (32768-60999): no earlier connection of the pod holds it.
    const port = 61000 + (process.pid % 3000);
    /** Waits until a connection from other ports (`from` on) gets `code`: the policy is in force. */
    const inForce = async (code: string, from: number) => {
      for (let i = 0; i < 50; i++) {
        if ((await post(from + i)) === code) return;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.fail(`the policy never answered ${code}`);
    };
    const dir = mkdtempSync(join(tmpdir(), 'hy-l7-tuple-'));
    try {
      // No policy (as the test before left it, or when this one runs alone).
      assert.equal((await kubectl('delete', '-f', POLICY, '--ignore-not-found')).code, 0);
      await inForce('200', port + 200);
      assert.equal(await post(port), '200', 'no policy');
      assert.equal((await kubectl('apply', '-f', POLICY)).code, 0);
      await inForce('403', port + 1);
      assert.equal(
        await post(port),
        '403',
        'the L7 rule applies to the reused tuple (it is not let through)',
      );
      const l4 = parseYaml(readFileSync(POLICY, 'utf8')) as {
        spec: { ingress: { toPorts: { rules?: unknown }[] }[] };
      };
      for (const r of l4.spec.ingress) for (const tp of r.toPorts) delete tp.rules;
      writeFileSync(join(dir, 'l4.yaml'), JSON.stringify(l4));
      assert.equal((await kubectl('apply', '-f', join(dir, 'l4.yaml'))).code, 0);
      await inForce('200', port + 100);
      assert.equal(await post(port), '200', 'the L4 allow applies to it (it does not go to the proxy)');
    } finally {
      await kubectl('delete', '-f', POLICY, '--ignore-not-found');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
