/**
 * A whole lab, as `hypha lab up` makes it: three nodes, agents as the cilium DaemonSet,
 * the tutorial's workloads. Pods on every node reach each other; service names resolve to
 * ClusterIPs; the tutorial's default-deny, applied with the real kubectl, stops real
 * traffic across nodes; `down` leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectivityCommands } from '../../src/cli/commands/connectivity.js';
import { observeCommands } from '../../src/cli/commands/observe.js';
import type { KubeClient } from '../../src/k8s/client.js';
import { type Lab, type LabState, labCgroup } from '../../src/lab/lab.js';
import { NetNs } from '../../src/lab/net/index.js';
import { runCommand } from '../helpers/cli.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, type Pod, startLab, TUTORIAL } from '../helpers/lab.js';

const NAME = `hyt${process.pid.toString(36)}`;

describe('hypha lab: three nodes, the tutorial workloads', { skip: skipUnlessPrivileged() }, () => {
  let lab: Lab;
  let state: LabState;
  let client: KubeClient;

  let t: LabFixture;
  const exec = (ns: string, pod: string, command: string[]) =>
    t.exec({ metadata: { name: pod, namespace: ns }, spec: {} }, command);
  const kubectl = (...args: string[]) => t.kubectl(...args);
  const pods = (selector: string) => t.pods(selector);
  const curl = async (from: Pod, ip: string) => ({ stdout: await t.curl(from, `http://${ip}:8080/`) });

  before(async () => {
    t = await startLab({ name: NAME, underlayOctet: 243, manifests: 'tutorial', readyPods: 12 });
    ({ lab, state, client } = t);
  });

  after(async () => {
    await lab?.down(false);
  });

  test('nodes are Ready, an agent pod runs on each, workload pods spread over the workers', async () => {
    const r = await kubectl('get', 'nodes', '--no-headers');
    assert.equal(
      r.out
        .trim()
        .split('\n')
        .filter((l) => / Ready /.test(l)).length,
      3,
      r.out,
    );
    const agents = await pods('k8s-app=cilium');
    assert.deepEqual(new Set(agents.map((p) => p.spec.nodeName)), new Set(state.nodes.map((n) => n.name)));
    const work = (await client.json<{ items: Pod[] }>('GET', '/api/v1/namespaces/production/pods')).items;
    assert.ok(
      work.every((p) => p.spec.nodeName !== `${NAME}-control-plane`),
      'the control plane is tainted',
    );
    assert.equal(new Set(work.map((p) => p.spec.nodeName)).size, 2);
  });

  test('pods reach each other by IP, same node and across nodes', async () => {
    const gw = (await pods('app=api-gateway'))[0]!;
    const targets = [...(await pods('app=frontend')), ...(await pods('app=catalog'))];
    assert.ok(
      targets.some((t) => t.spec.nodeName !== gw.spec.nodeName),
      'some target is on another node',
    );
    for (const t of targets)
      assert.equal((await curl(gw, t.status!.podIP!)).stdout, '200', `to ${t.metadata.name}`);
  });

  test('service names resolve to their ClusterIPs; world names to the world', async () => {
    const gw = (await pods('app=api-gateway'))[0]!;
    const svc = await client.json<{ spec: { clusterIP: string } }>(
      'GET',
      '/api/v1/namespaces/production/services/frontend',
    );
    const r = await exec('production', gw.metadata.name, [
      'getent',
      'hosts',
      'frontend.production.svc.cluster.local',
    ]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.split(/\s+/)[0], svc.spec.clusterIP);
    const short = await exec('production', gw.metadata.name, ['getent', 'hosts', 'catalog']);
    assert.match(short.stdout, /^10\.96\./, 'the search path resolves short names');
    const world = await exec('production', gw.metadata.name, ['getent', 'hosts', 'api.external-partner.com']);
    assert.match(world.stdout, /^203\.0\.113\.10\s/);
  });

  test('services: a ClusterIP by name from pods on every worker, DNS through the kube-dns ClusterIP', async () => {
    const froms = [...(await pods('app=frontend')), ...(await pods('app=api-gateway'))];
    assert.ok(new Set(froms.map((p) => p.spec.nodeName)).size >= 2);
    for (const from of froms) {
      const r = await exec(from.metadata.namespace, from.metadata.name, [
        'curl',
        '-s',
        '-m',
        '3',
        'http://catalog.production.svc.cluster.local:8080/api/v1/products',
      ]);
      assert.equal(r.code, 0, `from ${from.metadata.name}`);
      assert.match(r.stdout, /"pod":"catalog-/);
    }
    const resolv = await exec('production', froms[0]!.metadata.name, ['cat', '/etc/resolv.conf']);
    assert.match(resolv.stdout, /nameserver 10\.96\.0\.10/);
  });

  test('NodePort: the world reaches a service through every node, local backend or not', async () => {
    await client.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'catalog-np', namespace: 'production' },
      spec: {
        type: 'NodePort',
        selector: { app: 'catalog' },
        ports: [{ name: 'http', port: 8080, targetPort: 'http', nodePort: 30090 }],
      },
    });
    for (const n of state.nodes) {
      let body = '';
      for (let i = 0; i < 20 && !body.includes('"pod":"catalog-'); i++) {
        body = await new Promise<string>((resolve) =>
          execFile(
            'nsenter',
            [
              `--net=/var/run/netns/${state.world.netns}`,
              '--',
              'curl',
              '-s',
              '-m',
              '2',
              `http://${n.ip}:30090/`,
            ],
            (_e, out) => resolve(String(out)),
          ),
        );
        if (!body) await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(body, /"pod":"catalog-/, `through ${n.name}`);
    }
    await client.request('DELETE', '/api/v1/namespaces/production/services/catalog-np');
  });

  test('scaling down: once a backend pod is going, no new connection reaches it; scaling up adds one', async () => {
    const gw = (await pods('app=api-gateway'))[0]!;
    const deploy = '/apis/apps/v1/namespaces/production/deployments/catalog';
    const before = new Set((await pods('app=catalog')).map((p) => p.metadata.name));
    await client.json('PATCH', deploy, { spec: { replicas: 1 } }, 'application/merge-patch+json');
    let going: string | undefined;
    for (let i = 0; i < 100 && !going; i++) {
      const now = (
        await client.json<{ items: (Pod & { metadata: { deletionTimestamp?: string } })[] }>(
          'GET',
          '/api/v1/namespaces/production/pods?labelSelector=app%3Dcatalog',
        )
      ).items;
      going = [...before].find(
        (n) => !now.some((p) => p.metadata.name === n && !p.metadata.deletionTimestamp),
      );
      if (!going) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(going, 'a catalog pod is being removed');
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 15; i++) {
      const r = await exec('production', gw.metadata.name, ['curl', '-s', '-m', '3', 'http://catalog:8080/']);
      assert.equal(r.code, 0);
      assert.notEqual(
        (JSON.parse(r.stdout) as { pod: string }).pod,
        going,
        `request ${i} went to the removed pod`,
      );
    }
    await client.json('PATCH', deploy, { spec: { replicas: 2 } }, 'application/merge-patch+json');
    const seen = new Set<string>();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const r = await exec('production', gw.metadata.name, ['curl', '-s', '-m', '3', 'http://catalog:8080/']);
      if (r.code === 0) seen.add((JSON.parse(r.stdout) as { pod: string }).pod);
      else await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(seen.size, 2, 'both backends serve again');
  });

  test("the tutorial's default-deny, applied with kubectl, stops traffic across nodes; deleting it restores it", async () => {
    const gw = (await pods('app=api-gateway'))[0]!;
    const far = (await pods('app=catalog')).find((p) => p.spec.nodeName !== gw.spec.nodeName)!;
    let r = await kubectl('apply', '-f', join(TUTORIAL, '05.1-default-deny.yaml'));
    assert.equal(r.code, 0, r.out);
    let status = '';
    for (let i = 0; i < 20 && status !== '000'; i++) status = (await curl(gw, far.status!.podIP!)).stdout;
    assert.equal(status, '000', 'denied: no HTTP answer');
    // The drop is a flow, as `hubble observe` shows it: on the node that dropped it.
    let seen = '';
    for (const n of state.nodes) {
      const server = `unix://${n.agentSocket}`;
      const args = ['--server', server, '--namespace', 'production', '--verdict', 'DROPPED', '--last', '50'];
      seen += (await runCommand(observeCommands, 'observe', { positionals: args })).out;
    }
    assert.match(
      seen,
      /production\/api-gateway-[a-z0-9-]+:\d+ \(ID:\d+\) <> production\/catalog-[a-z0-9-]+:8080 \(ID:\d+\) Policy denied DROPPED \(TCP Flags: SYN\)/,
    );
    r = await kubectl('delete', '-f', join(TUTORIAL, '05.1-default-deny.yaml'));
    assert.equal(r.code, 0, r.out);
    for (let i = 0; i < 20 && status !== '200'; i++) status = (await curl(gw, far.status!.podIP!)).stdout;
    assert.equal(status, '200');
  });

  test('hypha connectivity test passes, and cleans up its namespace', async () => {
    const { code, out: text } = await runCommand(connectivityCommands, 'connectivity test', {
      values: { kubeconfig: state.kubeconfig },
    });
    assert.equal(code, 0, text);
    assert.match(text, /✅ pod-to-pod \(other node\)/);
    assert.match(text, /✅ allow: client2 still denied/);
    assert.equal((await client.request('GET', '/api/v1/namespaces/cilium-test-1')).status, 404);
  });

  test('down removes every namespace, link, pin and file', async () => {
    await lab.down(false);
    const left = await NetNs.list(`hylab-${NAME}`);
    assert.deepEqual(left, []);
    assert.equal(await NetNs.root.link('hylab243'), undefined);
    for (const n of state.nodes) assert.equal(existsSync(`/sys/fs/bpf/hypha/${n.name}`), false);
    assert.equal(existsSync(state.dataDir), false);
    assert.equal(existsSync(labCgroup(NAME)), false, 'node cgroups removed');
  });
});
