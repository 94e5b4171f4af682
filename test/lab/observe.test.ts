/**
 * Section 6 of the tutorial, command for command, against a lab's relay over gRPC:
 * `hubble status`, `hubble observe --namespace production --follow`, `--verdict DROPPED
 * --follow`, `--pod`, and `--output json | head -5` in a shell pipe. The commands run as
 * the user runs them: the `hypha` binary, in a child process.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HYPHA_BIN } from '../../src/lab/lab.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';
import { type LabFixture, type Pod, startLab, TUTORIAL } from '../helpers/lab.js';

describe("hypha lab: the tutorial's hubble commands through the relay", {
  skip: skipUnlessPrivileged(),
}, () => {
  let t: LabFixture;
  let relay: string;

  const hypha = (...args: string[]) =>
    new Promise<{ code: number; out: string; err: string }>((resolve) =>
      execFile(HYPHA_BIN, args, { timeout: 30_000 }, (e, out, err) =>
        resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
      ),
    );
  /** Runs a --follow command until `done` holds for what it printed, then interrupts it as Ctrl-C does. */
  const follow = (args: string[], done: (out: string) => boolean, poke: () => Promise<unknown>) =>
    new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(HYPHA_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      let finished = false;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${args.join(' ')}: nothing matching within 20 s; got:\n${out}\n${err}`));
      }, 20_000);
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (!finished && done(out)) {
          finished = true;
          child.kill('SIGINT');
        }
      });
      child.stderr.on('data', (c: Buffer) => {
        err += c.toString();
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        finished = true;
        resolve({ code, out });
      });
      // Traffic while it follows: the flows must arrive live, not from the past.
      const loop = async () => {
        await new Promise((r) => setTimeout(r, 500));
        while (!finished) {
          await poke();
          await new Promise((r) => setTimeout(r, 300));
        }
      };
      void loop();
    });
  const curl = (from: Pod, to: Pod) => t.curl(from, `http://${to.status!.podIP!}:8080/`, [], 1);

  before(async () => {
    t = await startLab({
      name: 'hyobslab',
      underlayOctet: 213,
      manifests: 'tutorial',
      readyPods: 7,
      readyNamespace: 'production',
    });
    assert.ok(t.state.relay, 'the lab runs a relay');
    relay = t.state.relay;
  });

  after(async () => {
    await t?.down();
  });

  test('hubble status: the relay is healthy and every node connected', async () => {
    const r = await hypha('hubble', 'status', '--server', relay);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^Healthcheck \\(via ${relay.replace(/\./g, '\\.')}\\): Ok$`, 'm'));
    assert.match(r.out, /^Current\/Max Flows: [\d,]+\/[\d,]+/m);
    assert.match(r.out, /^Connected Nodes: 3\/3$/m);
    const nodes = await hypha('hubble', 'list', 'nodes', '--server', relay);
    assert.equal(nodes.code, 0, nodes.err);
    assert.equal(nodes.out.split('\n').filter((l) => / Connected /.test(l)).length, 3, nodes.out);
  });

  test('observe --namespace production --follow shows live flows of the namespace', async () => {
    const [fe] = await t.pods('app=frontend');
    const [cat] = await t.pods('app=catalog');
    const r = await follow(
      ['observe', '--server', relay, '--namespace', 'production', '--follow'],
      (out) => /production\/frontend-\S+ \(ID:\d+\) -> production\/catalog-\S+:8080 .*FORWARDED/.test(out),
      () => curl(fe!, cat!),
    );
    assert.equal(r.code, 0, 'ends cleanly on Ctrl-C');
    for (const line of r.out.trim().split('\n'))
      assert.match(line, /production\//, `a flow outside the namespace: ${line}`);
  });

  test('after the default-deny: --verdict DROPPED --follow, --pod, and --output json | head -5', async () => {
    const r0 = await hypha(
      'apply',
      '-f',
      join(TUTORIAL, '05.1-default-deny.yaml'),
      '--kubeconfig',
      t.state.kubeconfig,
    );
    assert.equal(r0.code, 0, r0.out + r0.err);
    const [gw] = await t.pods('app=api-gateway');
    const [cat] = await t.pods('app=catalog');
    const dropped = await follow(
      ['observe', '--server', relay, '--namespace', 'production', '--verdict', 'DROPPED', '--follow'],
      (out) => /production\/api-gateway-\S+ .*production\/catalog-\S+:8080 .*Policy denied DROPPED/.test(out),
      () => curl(gw!, cat!),
    );
    for (const line of dropped.out.trim().split('\n')) assert.match(line, /DROPPED|DENIED/, line);

    const pod = await hypha(
      'observe',
      '--server',
      relay,
      '--namespace',
      'production',
      '--pod',
      gw!.metadata.name,
      '--last',
      '20',
    );
    assert.equal(pod.code, 0, pod.err);
    const lines = pod.out.trim().split('\n');
    assert.ok(lines.length > 0 && lines[0] !== '', 'flows of the pod');
    for (const line of lines) assert.ok(line.includes(gw!.metadata.name), `not the pod's flow: ${line}`);

    // The tutorial's pipe: the CLI must stop quietly when head closes the pipe.
    const piped = await new Promise<{ code: number; out: string; err: string }>((resolve) =>
      execFile(
        'sh',
        ['-c', `"${HYPHA_BIN}" observe --server ${relay} --namespace production --output json | head -5`],
        (e, out, err) => resolve({ code: e ? 1 : 0, out, err }),
      ),
    );
    assert.equal(piped.code, 0, piped.err);
    assert.equal(piped.err, '', 'no error when head closes the pipe');
    const json = piped.out.trim().split('\n');
    assert.equal(json.length, 5);
    for (const l of json) {
      const o = JSON.parse(l) as { flow: { source?: { namespace?: string }; verdict: string; time: string } };
      assert.ok(o.flow.time && o.flow.verdict, l);
    }
    const drops = await hypha(
      'observe',
      '--server',
      relay,
      '--verdict',
      'DROPPED',
      '--output',
      'json',
      '--last',
      '5',
    );
    const drop = JSON.parse(drops.out.trim().split('\n').at(-1)!) as {
      flow: { drop_reason_desc: string; source: { namespace: string }; destination: { namespace: string } };
    };
    assert.equal(drop.flow.drop_reason_desc, 'POLICY_DENIED');
    assert.equal(drop.flow.source.namespace, 'production');
  });

  test('after the default-deny: a node reaches its own pods (allow-localhost), another node does not; flows say host and remote-node', async () => {
    const [cat] = await t.pods('app=catalog');
    const own = t.state.nodes.find((n) => n.name === cat!.spec.nodeName)!;
    const other = t.state.nodes.find((n) => n.name !== cat!.spec.nodeName)!;
    const url = `http://${cat!.status!.podIP}:8080/`;
    const fromNode = (netns: string) =>
      new Promise<string>((resolve) =>
        execFile(
          'ip',
          ['netns', 'exec', netns, 'curl', '-s', '-o', '/dev/null', '-m', '2', '-w', '%{http_code}', url],
          (_e, out) => resolve(out.trim()),
        ),
      );
    assert.equal(await fromNode(own.netns), '200', "the pod's own node (kubelet probes, as in Cilium)");
    assert.equal(await fromNode(other.netns), '000', 'another node is not allowed by the default-deny');
    const r = await hypha(
      'observe',
      '--server',
      relay,
      '--to-pod',
      `production/${cat!.metadata.name}`,
      '--last',
      '200',
      '-o',
      'json',
    );
    type F = {
      flow: { IP?: { source: string }; source?: { identity?: number; labels?: string[] }; verdict: string };
    };
    const flows = r.out
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as F);
    const from = (ip: string) => flows.filter((f) => f.flow.IP?.source === ip);
    assert.ok(
      from(own.ip).some(
        (f) =>
          f.flow.source?.identity === 1 &&
          f.flow.source.labels?.includes('reserved:host') &&
          f.flow.verdict === 'FORWARDED',
      ),
      `a forwarded flow from ${own.ip} as host: ${JSON.stringify(from(own.ip).slice(0, 2))}`,
    );
    assert.ok(
      from(other.ip).some(
        (f) =>
          f.flow.source?.identity === 6 &&
          f.flow.source.labels?.includes('reserved:remote-node') &&
          f.flow.verdict === 'DROPPED',
      ),
      `a dropped flow from ${other.ip} as remote-node: ${JSON.stringify(from(other.ip).slice(0, 2))}`,
    );
  });
});
