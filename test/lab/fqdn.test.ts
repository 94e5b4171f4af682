/**
 * Tutorial 5.4 in a lab: the data-exporter may reach api.external-partner.com (a world
 * host) by name and nothing else in the world. Its DNS goes through the agent's DNS proxy,
 * which teaches the policy the partner's IP; other world hosts stay dropped by IP and by
 * name; a narrower dns rule REFUSES other names; the learned IP expires with its TTL (the
 * lab passes dnsProxy.minTtl to the agents as --tofqdns-min-ttl) but not while a
 * connection to it is open; with the proxy child killed, DNS is dropped until the agent
 * restarts it.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FqdnCacheEntry } from '../../src/agent/fqdn.js';
import { fqdnCommands } from '../../src/cli/commands/fqdn.js';
import { observeCommands } from '../../src/cli/commands/observe.js';
import type { KubeClient } from '../../src/k8s/client.js';
import type { Lab, LabState } from '../../src/lab/lab.js';
import { runCommand } from '../helpers/cli.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, type Pod, startLab, TUTORIAL } from '../helpers/lab.js';

const NODE = join(repoRoot, 'node_modules/.bin/node');
const NAME = 'hyfqlab';
const PARTNER = { name: 'api.external-partner.com', ip: '203.0.113.10' };
const OTHER = { name: 'other-partner.example', ip: '203.0.113.20' };
/** Above the lab zone's TTL (30 s), so the fqdn cache shows that the minimum applied. */
const MIN_TTL = 35;

/**
 * DNS queries from a pod, to the cluster DNS: `node -e QUERIES -- name count intervalMs`
 * sends `count` queries for `name` from one socket and prints, per query, the rcode or
 * null when no answer came within 1.5 s.
 */
const QUERIES = `
const [, name, count, interval] = process.argv;
const { decodeMessage, encodeMessage, query } = require(${JSON.stringify(join(repoRoot, 'dist/src/dns/message.js'))});
const u = require('dgram').createSocket('udp4');
const out = new Array(Number(count)).fill(null);
u.on('message', (m) => { const r = decodeMessage(m); out[r.id - 1] = r.rcode; });
let i = 0;
const next = () => {
  if (i < Number(count)) { i++; u.send(encodeMessage(query(i, name, 1)), 53, '10.96.0.10'); setTimeout(next, Number(interval)); }
  else setTimeout(() => { process.stdout.write(JSON.stringify(out)); process.exit(0); }, 1500);
};
next();
`;

/** Holds a TCP connection to ip:port for `seconds`, then closes it (prints "open" once connected). */
const HOLD = `
const [, ip, port, seconds] = process.argv;
const s = require('net').connect(Number(port), ip, () => process.stdout.write('open'));
s.on('error', () => process.exit(1));
setTimeout(() => { s.end(); setTimeout(() => process.exit(0), 200); }, Number(seconds) * 1000);
`;

describe('tutorial 5.4: egress by DNS name', { skip: skipUnlessPrivileged() }, () => {
  let lab: Lab;
  let state: LabState;
  let client: KubeClient;
  let exporter: Pod;
  let exporterSocket: string;
  let exporterNode: string;

  let t: LabFixture;
  const exec = (pod: Pod, command: string[]) => t.exec(pod, command);
  const kubectl = (...args: string[]) => t.kubectl(...args);
  /** HTTPS status code ('000': no answer) from a pod; `ip` pins the name to an address without DNS. */
  const https = async (from: Pod, host: string, ip?: string) =>
    (
      await exec(from, [
        'curl',
        '-s',
        '-m',
        '3',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        ...(ip ? ['--resolve', `${host}:443:${ip}`] : []),
        `https://${host}/`,
      ])
    ).stdout;
  const queries = async (from: Pod, name: string, count = 1, intervalMs = 0) =>
    JSON.parse(
      (await exec(from, [NODE, '-e', QUERIES, '--', name, String(count), String(intervalMs)])).stdout,
    ) as (number | null)[];
  const cache = async (): Promise<FqdnCacheEntry[]> => {
    const r = await runCommand(fqdnCommands, 'fqdn cache list', {
      values: { socket: exporterSocket, output: 'json' },
    });
    assert.equal(r.code, 0);
    return JSON.parse(r.out) as FqdnCacheEntry[];
  };
  const cacheTable = async () =>
    (await runCommand(fqdnCommands, 'fqdn cache list', { values: { socket: exporterSocket } })).out;
  const observe = (...args: string[]) => observeAt(exporterSocket, ...args);
  const observeAt = async (socket: string, ...args: string[]) =>
    (await runCommand(observeCommands, 'observe', { positionals: ['--server', `unix://${socket}`, ...args] }))
      .out;
  /** The data-exporter's recent DNS flows, for failure messages. */
  const dnsFlows = () => observe('--namespace', 'data-pipeline', '--protocol', 'dns', '--last', '40');
  /** The DNS proxy child of the data-exporter's node agent, found by its command line. */
  const proxyPid = (): number | undefined => {
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      let cmd: string[];
      try {
        cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      } catch {
        continue;
      }
      const i = cmd.indexOf('proxy');
      if (i >= 0 && cmd[i + 1] === 'dns' && cmd.includes(`/sys/fs/bpf/hypha/${exporterNode}`))
        return Number(d);
    }
    return undefined;
  };
  const until = async (what: string, ok: () => Promise<boolean>, ms: number) => {
    const end = Date.now() + ms;
    while (!(await ok())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  before(async () => {
    t = await startLab({
      name: NAME,
      nodes: 2,
      underlayOctet: 227,
      values: { dnsProxy: { minTtl: MIN_TTL }, hubble: { metrics: { enabled: ['dns'] } } },
      manifests: 'tutorial',
      // production's 7, the data-exporter, coredns and an agent per node.
      readyPods: 11,
    });
    ({ lab, state, client } = t);
    exporter = (
      await client.json<{ items: Pod[] }>(
        'GET',
        '/api/v1/namespaces/data-pipeline/pods?labelSelector=app%3Ddata-exporter',
      )
    ).items[0]!;
    exporterNode = exporter.spec.nodeName!;
    exporterSocket = state.nodes.find((n) => n.name === exporterNode)!.agentSocket;
  });

  after(async () => {
    await lab?.down(false);
  });

  test('without a policy, the data-exporter reaches both world hosts', async () => {
    assert.equal(await https(exporter, PARTNER.name), '200');
    assert.equal(await https(exporter, OTHER.name), '200');
  });

  test("with 5.4 applied (kubectl, the tutorial's file), only the partner passes, by name", async () => {
    const r = await kubectl('apply', '-f', join(TUTORIAL, '05.4-fqdn-egress.yaml'));
    assert.equal(r.code, 0, r.out);
    // In force once the other host is dropped; the partner's IP is unknown until looked up.
    await until('the policy', async () => (await https(exporter, OTHER.name, OTHER.ip)) === '000', 30_000);
    assert.equal(await https(exporter, PARTNER.name, PARTNER.ip), '000', 'by IP, before any DNS answer');
    const byName = await https(exporter, PARTNER.name);
    assert.equal(
      byName,
      '200',
      `by name; DNS as the proxy saw it:\n${byName === '200' ? '' : await dnsFlows()}`,
    );
    assert.equal(await https(exporter, PARTNER.name, PARTNER.ip), '200', 'by IP, once DNS taught it');
  });

  test('another world host is dropped, by IP and by another name (which resolves: dns allows "*")', async () => {
    assert.equal(await https(exporter, OTHER.name, OTHER.ip), '000');
    const resolved = await exec(exporter, ['getent', 'ahostsv4', OTHER.name]);
    if (!resolved.stdout.includes(OTHER.ip))
      assert.fail(`${OTHER.name} did not resolve:\n${await dnsFlows()}`);
    assert.equal(await https(exporter, OTHER.name), '000');
    const drops = await observe('--verdict', 'DROPPED', '--to-ip', OTHER.ip, '--last', '20');
    assert.match(drops, /Policy denied DROPPED/);
  });

  test('hypha fqdn cache list shows the learned IP, with the minimum TTL applied', async () => {
    const rows = (await cache()).filter((r) => r.name === PARTNER.name);
    assert.ok(rows.length > 0, JSON.stringify(await cache()));
    assert.ok(rows.every((r) => r.ips.includes(PARTNER.ip) && r.ttl === MIN_TTL));
    const table = await cacheTable();
    assert.match(table, /^Endpoint\s+Source\s+FQDN\s+TTL\s+ExpirationTime\s+IPs$/m);
    assert.match(
      table,
      new RegExp(
        `lookup\\s+${PARTNER.name.replaceAll('.', '\\.')}\\.\\s+${MIN_TTL}\\s+\\S+Z\\s+${PARTNER.ip.replaceAll('.', '\\.')}`,
      ),
    );
  });

  test('DNS flows: queries and answers from the proxy, with the rcode', async () => {
    const flows = await observe('--namespace', 'data-pipeline', '--protocol', 'dns', '--last', '200');
    assert.match(
      flows,
      new RegExp(`dns-request proxy FORWARDED \\(DNS Query ${PARTNER.name.replaceAll('.', '\\.')}\\. A\\)`),
    );
    assert.match(
      flows,
      new RegExp(
        `dns-response proxy FORWARDED \\(DNS Answer "${PARTNER.ip.replaceAll('.', '\\.')}" TTL: \\d+ \\(Proxy ${PARTNER.name.replaceAll('.', '\\.')}\\. A\\)\\)`,
      ),
    );
    assert.match(flows, /RCode: Non-Existent Domain/, 'search-domain lookups answered NXDOMAIN');
    // hubble.metrics.enabled: [dns], on the node's :9965.
    const nodeIp = state.nodes.find((n) => n.name === exporterNode)!.ip;
    const metrics = await (await fetch(`http://${nodeIp}:9965/metrics`)).text();
    assert.match(metrics, /^hubble_dns_queries_total\{[^}]*qtypes="A"[^}]*\} [1-9]/m);
    assert.match(metrics, /^hubble_dns_responses_total\{[^}]*rcode="No Error"[^}]*\} [1-9]/m);
  });

  test('a narrower dns rule: other names are REFUSED (and recorded as such)', async () => {
    const gw = (
      await client.json<{ items: Pod[] }>(
        'GET',
        '/api/v1/namespaces/production/pods?labelSelector=app%3Dapi-gateway',
      )
    ).items[0]!;
    const file = join(state.dataDir, 'narrow-dns.yaml');
    writeFileSync(
      file,
      `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: gateway-dns-partner-only
  namespace: production
spec:
  endpointSelector:
    matchLabels:
      app: api-gateway
  egress:
    - toEndpoints:
        - matchLabels:
            io.kubernetes.pod.namespace: kube-system
            k8s-app: kube-dns
      toPorts:
        - ports:
            - port: "53"
              protocol: UDP
          rules:
            dns:
              - matchName: ${PARTNER.name}
`,
    );
    assert.equal((await kubectl('apply', '-f', file)).code, 0);
    try {
      await until('the narrow rule', async () => (await queries(gw, OTHER.name))[0] === 5, 30_000);
      assert.deepEqual(await queries(gw, PARTNER.name), [0]);
      const gwSocket = state.nodes.find((n) => n.name === gw.spec.nodeName)!.agentSocket;
      await new Promise((r) => setTimeout(r, 200)); // the proxy sends its records in batches
      const flows = await observeAt(
        gwSocket,
        '--namespace',
        'production',
        '--protocol',
        'dns',
        '--last',
        '100',
      );
      assert.match(
        flows,
        new RegExp(`dns-request proxy DROPPED \\(DNS Query ${OTHER.name.replaceAll('.', '\\.')}\\. A\\)`),
      );
      assert.match(flows, /dns-response proxy FORWARDED \(DNS Answer RCode: Query Refused/);
    } finally {
      await kubectl('delete', '-f', file);
    }
  });

  test('the learned IP outlives its TTL while a connection uses it, and no longer passes once it closes', async () => {
    // A fresh lookup: the IP now expires MIN_TTL seconds from here.
    assert.deepEqual(await queries(exporter, PARTNER.name), [0]);
    const learnedAt = Date.now();
    const holding = exec(exporter, [NODE, '-e', HOLD, '--', PARTNER.ip, '443', String(MIN_TTL + 6)]);
    await new Promise((r) => setTimeout(r, MIN_TTL * 1000 + 2000 - (Date.now() - learnedAt)));
    const kept = (await cache()).filter((r) => r.ips.includes(PARTNER.ip));
    assert.ok(kept.length > 0 && kept.every((r) => r.inUse), JSON.stringify(kept));
    assert.equal(
      await https(exporter, PARTNER.name, PARTNER.ip),
      '200',
      'still allowed: a connection holds it',
    );
    assert.equal((await holding).stdout, 'open');
    await until(
      'the IP to expire',
      async () => !(await cache()).some((r) => r.ips.includes(PARTNER.ip)),
      10_000,
    );
    assert.equal(await https(exporter, PARTNER.name, PARTNER.ip), '000', 'expired: dropped');
    assert.equal(await https(exporter, PARTNER.name), '200', 'a new lookup allows it again');
  });

  test('with the DNS proxy killed, DNS is dropped (never bypassed) until the agent restarts it', async () => {
    const pid = proxyPid();
    assert.ok(pid, 'the DNS proxy child runs');
    // Queries every 50 ms from one socket while the proxy dies and comes back.
    const running = queries(exporter, PARTNER.name, 60, 50);
    await new Promise((r) => setTimeout(r, 800));
    process.kill(pid, 'SIGKILL');
    const answers = await running;
    const lost = answers.filter((a) => a === null).length;
    assert.ok(lost > 0, `some queries went unanswered while the proxy was down: ${JSON.stringify(answers)}`);
    assert.ok(
      answers.slice(0, 5).every((a) => a === 0),
      'answered before',
    );
    assert.ok(
      answers.slice(-5).every((a) => a === 0),
      'answered again after the restart',
    );
    const restarted = proxyPid();
    assert.ok(restarted && restarted !== pid);
    const drops = await observe('--namespace', 'data-pipeline', '--verdict', 'DROPPED', '--last', '200');
    assert.match(drops, /SOCKET_LOOKUP_FAILED|Socket lookup failed/i);
  });
});
