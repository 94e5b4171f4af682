/**
 * The lab's pod runtime on a node with a real agent: pods get their network from hypha-cni,
 * run the built-in server or a command, become Ready, talk to each other, crash and back
 * off, and leave nothing behind when removed.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unpin } from '../../src/bpf/index.js';
import { ValidationError } from '../../src/errors.js';
import { expand } from '../../src/lab/kubelet/container.js';
import { CniError, type Pod, PodRuntime, type PodStatus, parsePod } from '../../src/lab/kubelet/index.js';
import { NetNs, NetScope } from '../../src/lab/net/index.js';
import { startAgentProcess } from '../helpers/agent.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';

const HYPHA = join(repoRoot, 'bin/hypha');

function pod(name: string, containers: Pod['spec']['containers'], extra: Partial<Pod['spec']> = {}): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'prod', uid: `uid-${name}-${process.pid}`, labels: { app: name } },
    spec: { containers, ...extra },
  };
}

async function until<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const ready = (s: PodStatus) => s.conditions.find((c) => c.type === 'Ready')?.status === 'True';

/** Processes whose network namespace is the one with inode `ino`. */
function processesIn(ino: number): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/net`) === `net:[${ino}]`) pids.push(Number(pid));
    } catch {
      // Gone meanwhile, or a kernel thread.
    }
  }
  return pids;
}

describe('pod specs', () => {
  test('a bad pod is a ValidationError naming the field; a container may have neither ports nor command', () => {
    const bad = pod('web', [{ name: 'c', image: 'x', ports: [{ containerPort: 70000 }] }]);
    assert.throws(
      () => parsePod(bad),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.object === 'Pod prod/web' &&
        e.field === 'spec.containers[0].ports[0].containerPort',
    );
    assert.throws(
      () => parsePod({ ...bad, spec: { containers: [] } }),
      /spec.containers: must name at least one/,
    );
    assert.throws(
      () =>
        parsePod(pod('web', [{ name: 'c', image: 'x', readinessProbe: { tcpSocket: { port: 'http' } } }])),
      /readinessProbe.tcpSocket.port: no containerPort is named "http"/,
    );
    const ok = parsePod(pod('idle', [{ name: 'c', image: 'x' }]));
    assert.equal(ok.containers[0]?.argv, undefined);
    assert.deepEqual(ok.containers[0]?.readiness, { kind: 'running' });
    const web = parsePod(pod('web', [{ name: 'c', image: 'x', ports: [{ containerPort: 8080 }] }]));
    assert.deepEqual(web.containers[0]?.readiness, { kind: 'ports', ports: [8080] });
  });

  test('$(VAR) references expand as in Kubernetes', () => {
    const env = { A: 'x', B: 'y' };
    assert.equal(expand('$(A)-$(B)-$(C)', env), 'x-y-$(C)');
    assert.equal(expand('$$(A) costs $$5', env), '$(A) costs $5');
  });
});

describe('pod runtime on a node with an agent', { skip: skipUnlessPrivileged() }, () => {
  const net = new NetScope();
  const work = mkdtempSync(join(tmpdir(), 'hy-kubelet-'));
  const socket = join(work, 'run', 'agent.sock');
  const logDir = join(work, 'logs');
  let node: NetNs;
  let pinDir = '';
  let agent: ChildProcess | undefined;
  let runtime: PodRuntime;
  const seen: { key: string; status: PodStatus }[] = [];
  /** Network namespace inodes of every pod made, to check that no process is left in them. */
  const made = new Map<string, number>();

  const endpoints = async () => {
    const r = await node.exec(HYPHA, ['endpoint', 'list', '--socket', socket, '-o', 'json']);
    return (JSON.parse(r.stdout) as { podName: string }[]).map((e) => e.podName).sort();
  };
  const remember = (key: string) => {
    const ns = runtime.netns(key) ?? assert.fail(`${key} has no namespace`);
    assert.match(ns, /^hy/);
    made.set(ns, statSync(`/var/run/netns/${ns}`).ino);
    return ns;
  };

  before(async () => {
    node = await net.netns({ prefix: 'kn' });
    pinDir = `/sys/fs/bpf/hypha/${node.name}`;
    await node.sysctl('net.ipv4.ip_forward', 1);
    const manifests = join(work, 'manifests');
    mkdirSync(manifests, { recursive: true });
    agent = await startAgentProcess({
      netns: node.name!,
      podCidr: '10.247.0.0/24',
      stateDir: join(work, 'state'),
      socket,
      pinDir,
      manifests,
    });
    runtime = new PodRuntime({
      nodeName: node.name!,
      nodeNetns: node.name!,
      hostIp: '192.168.50.2',
      cniConf: { cniVersion: '1.0.0', name: 'hypha', type: 'hypha-cni', agentSocket: socket },
      logDir,
      clusterDns: { nameserver: '10.96.0.10', domain: 'cluster.local' },
      backoff: { baseMs: 100, maxMs: 400 },
      gracePeriodMs: 2000,
    });
    runtime.onChange((key, status) => seen.push({ key, status }));
  });
  after(async () => {
    await runtime?.close().catch(() => {});
    agent?.kill('SIGKILL');
    await net.dispose();
    unpin(pinDir);
    rmSync(work, { recursive: true, force: true });
  });

  test('two pods get addresses, become Ready and talk; exec sees the pod’s DNS and hostname', async () => {
    const [web, client] = await Promise.all([
      runtime.sync(pod('web', [{ name: 'server', image: 'nginx', ports: [{ containerPort: 8080 }] }])),
      runtime.sync(pod('client', [{ name: 'shell', image: 'busybox', command: ['sleep', 'infinity'] }])),
    ]);
    for (const s of [web, client]) assert.match(s.podIP ?? '', /^10\.247\.0\.\d+$/);
    remember('prod/web');
    remember('prod/client');
    const webReady = await until('web Ready', () => {
      const s = runtime.status('prod/web');
      return ready(s) ? s : undefined;
    });
    await until('client Ready', () => ready(runtime.status('prod/client')));
    assert.equal(webReady.phase, 'Running');
    assert.equal(webReady.hostIP, '192.168.50.2');
    const cs = webReady.containerStatuses[0];
    assert.ok(cs?.ready && cs.started && cs.state.running !== undefined);
    assert.match(cs.containerID ?? '', /^hypha:\/\/[0-9a-f]{64}$/);
    assert.ok(
      seen.some((e) => e.key === 'prod/web' && !ready(e.status)) &&
        seen.some((e) => e.key === 'prod/web' && ready(e.status)),
      'listeners saw web go from not ready to ready',
    );
    assert.deepEqual(await endpoints(), ['client', 'web']);

    const r = await runtime.exec('prod/client', [
      'curl',
      '-s',
      '--max-time',
      '3',
      `http://${webReady.podIP}:8080/hello?x=1`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      pod: 'web',
      namespace: 'prod',
      container: 'server',
      method: 'GET',
      path: '/hello?x=1',
      host: `${webReady.podIP}:8080`,
      protocol: 'HTTP/1.1',
    });
    const inside = await runtime.exec('prod/client', [
      'sh',
      '-c',
      'hostname; cat /etc/resolv.conf; echo $HOSTNAME',
    ]);
    assert.equal(
      inside.stdout,
      'client\nsearch prod.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\nclient\n',
    );
    assert.match(await runtime.logs('prod/web', 'server'), /GET \/hello\?x=1/);
  });

  test('a crashing container is restarted with back-off and shows CrashLoopBackOff', async () => {
    await runtime.sync(
      pod('crash', [
        { name: 'boom', image: 'busybox', command: ['sh', '-c', 'sleep 1000 & echo boom; exit 3'] },
      ]),
    );
    const crashIno = made.get(remember('prod/crash'))!;
    const s = await until('restarts', () => {
      const st = runtime.status('prod/crash');
      const c = st.containerStatuses[0];
      return c !== undefined && c.restartCount >= 3 && c.state.waiting !== undefined ? st : undefined;
    });
    const c = s.containerStatuses[0]!;
    assert.equal(c.state.waiting?.reason, 'CrashLoopBackOff');
    assert.match(
      c.state.waiting?.message ?? '',
      /^back-off \d+ms restarting failed container=boom pod=crash_prod/,
    );
    assert.equal(c.lastState.terminated?.exitCode, 3);
    assert.equal(c.lastState.terminated?.reason, 'Error');
    assert.equal(c.ready, false);
    assert.equal(s.phase, 'Running');
    const boomed = (await runtime.logs('prod/crash', 'boom')).match(/boom/g)?.length ?? 0;
    assert.ok(boomed >= 3, `every run logged, saw ${boomed}`);
    await until('only the pause process between runs: what a run leaves behind goes with it', () =>
      runtime.status('prod/crash').containerStatuses[0]?.state.waiting !== undefined
        ? processesIn(crashIno).length === 1
        : undefined,
    );

    await runtime.sync(
      pod('once', [{ name: 'c', image: 'busybox', command: ['sh', '-c', 'exit 3'] }], {
        restartPolicy: 'Never',
      }),
    );
    remember('prod/once');
    const once = await until('Failed', () => {
      const st = runtime.status('prod/once');
      return st.phase === 'Failed' ? st : undefined;
    });
    assert.deepEqual(
      { ...once.containerStatuses[0]?.state.terminated, startedAt: '', finishedAt: '', containerID: '' },
      { exitCode: 3, reason: 'Error', startedAt: '', finishedAt: '', containerID: '' },
    );
    assert.equal(once.containerStatuses[0]?.restartCount, 0);
  });

  test('readiness probes gate Ready; containers share localhost; env resolves fieldRefs and $(VAR)', async () => {
    const flag = join(work, 'gate-open');
    const s = await runtime.sync(
      pod('probed', [
        {
          name: 'web',
          image: 'nginx',
          ports: [{ containerPort: 8081, name: 'http' }],
          readinessProbe: { httpGet: { port: 'http', path: '/healthz' }, periodSeconds: 1 },
        },
        {
          name: 'gate',
          image: 'busybox',
          command: ['sh', '-c', `echo "$(MY_IP) $(NAME)" '$$(NAME)'; exec sleep infinity`],
          env: [
            { name: 'MY_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
            { name: 'NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
          ],
          readinessProbe: { exec: { command: ['cat', flag] }, periodSeconds: 1 },
        },
      ]),
    );
    remember('prod/probed');
    await until('web ready', () => runtime.status('prod/probed').containerStatuses[0]?.ready);
    const waiting = runtime.status('prod/probed');
    assert.equal(waiting.containerStatuses[1]?.ready, false);
    const cond = waiting.conditions.find((c) => c.type === 'Ready');
    assert.equal(cond?.status, 'False');
    assert.equal(cond?.message, 'containers with unready status: [gate]');
    const local = await runtime.exec('prod/probed', ['curl', '-s', 'http://localhost:8081/x'], {
      container: 'gate',
    });
    assert.equal(JSON.parse(local.stdout).container, 'web');
    assert.equal(
      await runtime.logs('prod/probed', 'gate'),
      `${s.podIP} probed $(NAME)\n`,
      'fieldRefs and $(VAR) references resolved',
    );
    const env = await runtime.exec('prod/probed', ['sh', '-c', 'echo $MY_IP'], { container: 'gate' });
    assert.equal(env.stdout, `${s.podIP}\n`, 'exec gets the container’s environment');
    await runtime.exec('prod/probed', ['touch', flag]);
    await until('pod Ready', () => ready(runtime.status('prod/probed')));
  });

  test('a hostNetwork pod runs in the node namespace, without CNI, and removing it keeps the node', async () => {
    const s = await runtime.sync(
      pod('hostnet', [{ name: 'c', image: 'busybox', command: ['sleep', 'infinity'] }], {
        hostNetwork: true,
      }),
    );
    assert.equal(s.podIP, '192.168.50.2', 'the host’s address');
    assert.equal(runtime.netns('prod/hostnet'), node.name);
    assert.ok(!(await endpoints()).includes('hostnet'), 'no endpoint: CNI was not called');
    const r = await runtime.exec('prod/hostnet', ['sh', '-c', 'hostname; ip -o link show type veth']);
    const veths = (await node.links()).filter((l) => l.kind === 'veth').map((l) => `${l.name}@`);
    assert.ok(veths.length >= 2);
    const [hostname, ...links] = r.stdout.trim().split('\n');
    assert.equal(hostname, node.name, 'the node’s name');
    assert.deepEqual(
      links.map((l) => l.split(': ')[1]?.replace(/@.*/, '@')),
      veths,
      'the node’s links: the host sides of the other pods’ veths',
    );
    await runtime.remove('prod/hostnet');
    assert.ok(await NetNs.exists(node.name!));
  });

  test('remove stops the pod, calls CNI DEL and deletes its namespace; twice is fine', async () => {
    const ns = runtime.netns('prod/web')!;
    const ino = made.get(ns)!;
    assert.ok(processesIn(ino).length > 0, 'the server runs in the pod namespace');
    await runtime.remove('prod/web');
    assert.equal(await NetNs.exists(ns), false);
    assert.deepEqual(processesIn(ino), []);
    assert.ok(!(await endpoints()).includes('web'), 'the agent forgot the endpoint: DEL was called');
    assert.throws(() => runtime.status('prod/web'), /no pod prod\/web/);
    await runtime.remove('prod/web');
  });

  test('a pod that ignores SIGTERM is killed, its whole process group, after its grace period', async () => {
    await runtime.sync(
      pod(
        'stubborn',
        [
          {
            name: 'c',
            image: 'busybox',
            command: ['sh', '-c', 'trap "" TERM; echo trapped; while :; do sleep 0.1; done'],
          },
        ],
        {
          terminationGracePeriodSeconds: 1,
        },
      ),
    );
    const ino = made.get(remember('prod/stubborn'))!;
    await until('the trap is set', async () =>
      (await runtime.logs('prod/stubborn', 'c')).includes('trapped'),
    );
    const t0 = Date.now();
    await runtime.remove('prod/stubborn');
    const took = Date.now() - t0;
    assert.ok(took >= 900, `SIGTERM alone did not stop it (${took} ms)`);
    assert.deepEqual(processesIn(ino), [], 'the shell and its sleep are gone');
  });

  test('a CNI failure is a CniError; the pod stays Pending, undone, and the next sync tries again', async () => {
    const broken = new PodRuntime({
      nodeName: node.name!,
      nodeNetns: node.name!,
      cniConf: {
        cniVersion: '1.0.0',
        name: 'hypha',
        type: 'hypha-cni',
        agentSocket: join(work, 'nothing.sock'),
      },
      logDir,
    });
    try {
      const p = pod('nocni', [{ name: 'c', image: 'busybox' }]);
      for (let attempt = 0; attempt < 2; attempt++) {
        await assert.rejects(
          broken.sync(p),
          (e: unknown) => e instanceof CniError && e.code === 11 && e.command === 'ADD',
        );
        const s = broken.status('prod/nocni');
        assert.equal(s.phase, 'Pending');
        assert.match(s.message ?? '', /IP allocation failed/);
        assert.equal(s.containerStatuses[0]?.state.waiting?.reason, 'ContainerCreating');
        assert.equal(broken.netns('prod/nocni'), undefined);
        assert.deepEqual(
          (await NetNs.list()).filter((n) => n.endsWith('-prod-nocni')),
          [],
          'the namespace of the failed attempt is gone',
        );
      }
    } finally {
      await broken.close();
    }
  });

  test('close leaves no namespaces, veths or processes', async () => {
    await runtime.close();
    for (const [ns, ino] of made) {
      assert.equal(await NetNs.exists(ns), false, `${ns} deleted`);
      assert.deepEqual(processesIn(ino), [], `no process left in ${ns}`);
    }
    assert.deepEqual(
      (await node.links()).filter((l) => l.kind === 'veth').map((l) => l.name),
      [],
      'no host-side veth left on the node',
    );
    assert.deepEqual(await endpoints(), []);
  });
});
