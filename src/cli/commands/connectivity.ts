/**
 * `hypha connectivity test`: a suite like `cilium connectivity test`, in its own
 * namespace, cleaned up afterwards. Client and echo pods on chosen nodes, then scenarios
 * with real traffic: pod to pod on the same node and across nodes, DNS, pod to the world,
 * and policy (default deny, then an allow that admits only the client). Each scenario
 * passes or fails on what the packets did.
 */
import { execFile } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { errorMessage, UsageError } from '../../errors.js';
import { KubeClient, KubeError, type KubeTarget, loadKubeconfig } from '../../k8s/client.js';
import { execInPod } from '../../k8s/exec.js';
import type { Command } from '../command.js';
import { runningLab } from './lab.js';

const NS = 'cilium-test-1';

interface Pod {
  metadata: { name: string; labels?: Record<string, string> };
  spec: { nodeName?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}
interface Node {
  metadata: { name: string };
  spec?: { taints?: { effect: string }[]; unschedulable?: boolean };
  status?: { conditions?: { type: string; status: string }[] };
}

const isReady = (o: { status?: { conditions?: { type: string; status: string }[] } }) =>
  o.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

function deployment(name: string, node: string, labels: Record<string, string>, command?: string[]) {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: NS, labels: { 'app.kubernetes.io/part-of': 'hypha-connectivity' } },
    spec: {
      replicas: 1,
      selector: { matchLabels: { name } },
      template: {
        metadata: { labels: { name, ...labels } },
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': node },
          containers: [
            command
              ? { name, image: 'hypha/toolbox', command }
              : { name, image: 'hypha/http-echo', ports: [{ name: 'http', containerPort: 8080 }] },
          ],
        },
      },
    },
  };
}

function service(name: string) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: NS },
    spec: { selector: { name }, ports: [{ name: 'http', port: 8080, targetPort: 'http' }] },
  };
}

const denyAll = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: 'all-ingress-deny', namespace: NS },
  spec: { podSelector: { matchLabels: { kind: 'echo' } }, policyTypes: ['Ingress'] },
};

const allowClient = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: 'client-ingress-allow', namespace: NS },
  spec: {
    podSelector: { matchLabels: { kind: 'echo' } },
    ingress: [
      {
        from: [{ podSelector: { matchLabels: { name: 'client' } } }],
        ports: [{ port: 8080, protocol: 'TCP' }],
      },
    ],
  },
};

type Outcome = { ok: true; detail: string } | { ok: false; detail: string } | { skip: string };

class Suite {
  readonly #client: KubeClient;
  readonly #target: KubeTarget;

  constructor(target: KubeTarget) {
    this.#target = target;
    this.#client = new KubeClient(target);
  }

  get client(): KubeClient {
    return this.#client;
  }

  async exec(pod: string, command: string[]): Promise<{ code: number; out: string }> {
    const out = new PassThrough();
    const err = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    err.on('data', (c: Buffer) => chunks.push(c));
    const code = await execInPod(this.#target, { namespace: NS, pod, command, stdout: out, stderr: err });
    return { code, out: Buffer.concat(chunks).toString().trim() };
  }

  /** An HTTP status from `pod` to `url` ('000' when nothing answered). */
  async http(pod: string, url: string, timeout = 3): Promise<string> {
    const r = await this.exec(pod, [
      'curl',
      '-s',
      '-m',
      String(timeout),
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      url,
    ]);
    return r.out.slice(-3) || '000';
  }

  async pods(): Promise<Pod[]> {
    return (await this.#client.json<{ items: Pod[] }>('GET', `/api/v1/namespaces/${NS}/pods`)).items;
  }

  async waitReady(names: string[], timeoutMs: number): Promise<Map<string, Pod>> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const pods = await this.pods();
      const byName = new Map<string, Pod>();
      for (const n of names) {
        const p = pods.find((x) => x.metadata.labels?.name === n && isReady(x));
        if (p) byName.set(n, p);
      }
      if (byName.size === names.length) return byName;
      if (Date.now() > end)
        throw new Error(`test pods not ready: ${names.filter((n) => !byName.has(n)).join(', ')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async deleteNamespace(): Promise<void> {
    const r = await this.#client.request('DELETE', `/api/v1/namespaces/${NS}`);
    if (r.status === 404) return;
    for (let i = 0; i < 300; i++) {
      if ((await this.#client.request('GET', `/api/v1/namespaces/${NS}`)).status === 404) return;
      await new Promise((res) => setTimeout(res, 100));
    }
  }
}

export const connectivityCommands: Command[] = [
  {
    path: ['connectivity', 'test'],
    summary:
      'Check pod-to-pod, DNS, world and policy connectivity with real traffic (like cilium connectivity test)',
    options: {
      kubeconfig: {
        type: 'string',
        value: 'file',
        description: "cluster (default: the running lab's, else KUBECONFIG)",
      },
      'world-url': {
        type: 'string',
        value: 'url',
        description:
          'an outside URL pods should reach (default https://api.external-partner.com/ in the lab)',
      },
      'keep-namespace': { type: 'boolean', description: `leave ${NS} in place for a look` },
    },
    async run({ values, stdout }) {
      const kc =
        (values.kubeconfig as string | undefined) ??
        runningLab('cilium-demo')?.kubeconfig ??
        process.env.KUBECONFIG;
      if (!kc) throw new UsageError('no running lab and no --kubeconfig or KUBECONFIG');
      const suite = new Suite(loadKubeconfig(kc));
      const c = suite.client;
      const nodes = (await c.json<{ items: Node[] }>('GET', '/api/v1/nodes')).items.filter(
        (n) =>
          isReady(n) &&
          !n.spec?.unschedulable &&
          !(n.spec?.taints ?? []).some((t) => t.effect === 'NoSchedule'),
      );
      if (nodes.length === 0) throw new Error('no Ready, schedulable node');
      const [a, b] = [nodes[0]!.metadata.name, (nodes[1] ?? nodes[0]!).metadata.name];
      stdout.write(
        `ℹ️  Test namespace ${NS}; client on ${a}${nodes.length > 1 ? `, other node ${b}` : ' (one schedulable node: other-node tests skipped)'}\n`,
      );
      await suite.deleteNamespace();
      const results: [string, Outcome][] = [];
      try {
        await c.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
        for (const obj of [
          deployment('client', a, { kind: 'client' }, ['sleep', 'infinity']),
          deployment('client2', a, { kind: 'client' }, ['sleep', 'infinity']),
          deployment('echo-same-node', a, { kind: 'echo' }),
          deployment('echo-other-node', b, { kind: 'echo' }),
          service('echo-same-node'),
          service('echo-other-node'),
        ])
          await c.apply(obj);
        const p = await suite.waitReady(['client', 'client2', 'echo-same-node', 'echo-other-node'], 90_000);
        const client = p.get('client')!.metadata.name;
        const client2 = p.get('client2')!.metadata.name;
        const same = p.get('echo-same-node')!.status!.podIP!;
        const other = p.get('echo-other-node')!.status!.podIP!;
        const check = async (name: string, fn: () => Promise<Outcome>) => {
          let o: Outcome;
          try {
            o = await fn();
          } catch (err) {
            o = { ok: false, detail: errorMessage(err) };
          }
          results.push([name, o]);
          const mark = 'skip' in o ? '⏭️ ' : o.ok ? '✅' : '❌';
          stdout.write(`${mark} ${name}: ${'skip' in o ? o.skip : o.detail}\n`);
        };
        // After a policy change the agents need a moment to realize it: an expectation
        // gets a few seconds to come true, and fails only if it never does.
        const expect = async (from: string, url: string, want: string) => {
          const end = Date.now() + 10_000;
          let got = '';
          for (;;) {
            got = await suite.http(from, url, want === '000' ? 1 : 3);
            if (got === want || Date.now() > end) break;
            await new Promise((r) => setTimeout(r, 200));
          }
          return got === want
            ? { ok: true as const, detail: `${url} → ${got}` }
            : { ok: false as const, detail: `${url}: expected ${want}, got ${got}` };
        };
        await check('pod-to-pod (same node)', () => expect(client, `http://${same}:8080/`, '200'));
        await check('pod-to-pod (other node)', async () =>
          nodes.length > 1
            ? expect(client, `http://${other}:8080/`, '200')
            : { skip: 'one schedulable node' },
        );
        await check('dns (service name to ClusterIP)', async () => {
          const svc = await c.json<{ spec: { clusterIP: string } }>(
            'GET',
            `/api/v1/namespaces/${NS}/services/echo-other-node`,
          );
          const r = await suite.exec(client, ['getent', 'hosts', `echo-other-node.${NS}.svc.cluster.local`]);
          const ip = r.out.split(/\s+/)[0];
          return ip === svc.spec.clusterIP
            ? { ok: true, detail: `echo-other-node → ${ip}` }
            : { ok: false, detail: `resolved "${r.out}", want ${svc.spec.clusterIP}` };
        });
        await check('pod-to-world', () =>
          expect(
            client,
            (values['world-url'] as string | undefined) ?? 'https://api.external-partner.com/',
            '200',
          ),
        );
        await check('pod-to-service (ClusterIP, other node)', () =>
          expect(client, `http://echo-other-node.${NS}.svc.cluster.local:8080/`, '200'),
        );
        await check('pod-to-service (ClusterIP, same node)', () =>
          expect(client, 'http://echo-same-node:8080/', '200'),
        );
        await check('NodePort from the world (every node)', async () => {
          const lab = runningLab('cilium-demo');
          if (!lab || lab.kubeconfig !== kc)
            return { skip: 'needs the lab: its world namespace stands for outside' };
          await c.apply({
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'echo-nodeport', namespace: NS },
            spec: {
              type: 'NodePort',
              selector: { name: 'echo-other-node' },
              ports: [{ name: 'http', port: 8080, targetPort: 'http' }],
            },
          });
          const got = await c.json<{ spec: { ports: { nodePort: number }[] } }>(
            'GET',
            `/api/v1/namespaces/${NS}/services/echo-nodeport`,
          );
          const port = got.spec.ports[0]!.nodePort;
          await new Promise((r) => setTimeout(r, 500));
          const codes: string[] = [];
          for (const n of lab.nodes) {
            const r = await new Promise<string>((resolve) =>
              execFile(
                'nsenter',
                [
                  `--net=/var/run/netns/${lab.world.netns}`,
                  '--',
                  'curl',
                  '-s',
                  '-m',
                  '3',
                  '-o',
                  '/dev/null',
                  '-w',
                  '%{http_code}',
                  `http://${n.ip}:${port}/`,
                ],
                (_e, out) => resolve(String(out).slice(-3) || '000'),
              ),
            );
            codes.push(`${n.ip}:${port} → ${r}`);
          }
          return codes.every((x) => x.endsWith('200'))
            ? { ok: true, detail: codes.join(', ') }
            : { ok: false, detail: codes.join(', ') };
        });
        await check('service with no backend: refused at once', async () => {
          await c.apply({
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'no-backend', namespace: NS },
            spec: { selector: { name: 'nothing-matches' }, ports: [{ name: 'http', port: 8080 }] },
          });
          await new Promise((r) => setTimeout(r, 500));
          const t = performance.now();
          const r = await suite.exec(client, [
            'curl',
            '-s',
            '-m',
            '5',
            '-o',
            '/dev/null',
            `http://no-backend.${NS}.svc.cluster.local:8080/`,
          ]);
          const ms = performance.now() - t;
          return r.code !== 0 && ms < 2000
            ? { ok: true, detail: `curl failed with exit ${r.code} after ${ms.toFixed(0)} ms` }
            : { ok: false, detail: `curl exit ${r.code} after ${ms.toFixed(0)} ms (wanted a quick refusal)` };
        });
        await check('session affinity (ClientIP): one client, one backend', async () => {
          await c.apply(deployment('echo-pair', a, { kind: 'echo' }));
          await c.json(
            'PATCH',
            `/apis/apps/v1/namespaces/${NS}/deployments/echo-pair`,
            { spec: { replicas: 2 } },
            'application/merge-patch+json',
          );
          await c.apply({
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'echo-sticky', namespace: NS },
            spec: {
              selector: { name: 'echo-pair' },
              sessionAffinity: 'ClientIP',
              ports: [{ name: 'http', port: 8080, targetPort: 'http' }],
            },
          });
          const end = Date.now() + 60_000;
          while (
            (await suite.pods()).filter((x) => x.metadata.labels?.name === 'echo-pair' && isReady(x)).length <
              2 &&
            Date.now() < end
          )
            await new Promise((r) => setTimeout(r, 200));
          await new Promise((r) => setTimeout(r, 500));
          const seen = new Set<string>();
          for (let i = 0; i < 8; i++) {
            const r = await suite.exec(client, ['curl', '-s', '-m', '3', `http://echo-sticky:8080/`]);
            seen.add((JSON.parse(r.out || '{}') as { pod?: string }).pod ?? '?');
          }
          return seen.size === 1 && !seen.has('?')
            ? { ok: true, detail: `8 requests, all to ${[...seen][0]}` }
            : { ok: false, detail: `8 requests went to ${[...seen].join(', ')}` };
        });
        await c.apply(denyAll);
        await check('default-deny: ingress to echo denied (same node)', () =>
          expect(client, `http://${same}:8080/`, '000'),
        );
        await check('default-deny: ingress to echo denied (other node)', async () =>
          nodes.length > 1
            ? expect(client, `http://${other}:8080/`, '000')
            : { skip: 'one schedulable node' },
        );
        await c.apply(allowClient);
        await check('allow: client to echo on 8080 (other node)', () =>
          expect(client, `http://${other}:8080/`, '200'),
        );
        await check('allow: client2 still denied', () => expect(client2, `http://${other}:8080/`, '000'));
      } catch (err) {
        results.push([
          'setup',
          {
            ok: false,
            detail: err instanceof KubeError ? `${err.status}: ${err.message}` : errorMessage(err),
          },
        ]);
        stdout.write(`❌ setup: ${errorMessage(err)}\n`);
      } finally {
        if (!values['keep-namespace']) await suite.deleteNamespace();
      }
      const run = results.filter(([, o]) => !('skip' in o));
      const failed = run.filter(([, o]) => 'ok' in o && !o.ok);
      const skipped = results.length - run.length;
      stdout.write(
        `\n${failed.length ? '❌' : '✅'} ${run.length - failed.length}/${run.length} tests successful${skipped ? ` (${skipped} skipped)` : ''}\n`,
      );
      return failed.length ? 1 : 0;
    },
  },
];
