/**
 * `hypha lab ...`: a whole cluster on this machine. `up` starts the lab's process in the
 * background (API server, controllers, kubelets; an agent per node) and brings up the
 * tutorial's cluster and workloads; the other commands talk to it.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { errorMessage, UsageError } from '../../errors.js';
import { KubeClient, KubeError, loadKubeconfig } from '../../k8s/client.js';
import { execInPod } from '../../k8s/exec.js';
import { HYPHA_BIN, Lab, type LabState, labDir, repoRoot } from '../../lab/lab.js';
import { NetNs } from '../../lab/net/index.js';
import { loadValues, reviewValues } from '../../lab/values.js';
import { type Command, formatTable, OUTPUT_OPTION, wantsJson } from '../command.js';

const NAME_OPTION = {
  type: 'string' as const,
  value: 'name',
  description: 'lab cluster name (default cilium-demo, as the tutorial names its kind cluster)',
};
const DEFAULT_NAME = 'cilium-demo';
const TUTORIAL = join(repoRoot, 'examples/tutorial');

function nameOf(values: Record<string, unknown>): string {
  const n = (values.name as string | undefined) ?? DEFAULT_NAME;
  if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(n))
    throw new UsageError(`--name: "${n}" must be lower-case letters, digits and '-'`);
  return n;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The running lab's state, or undefined. */
export function runningLab(name: string): LabState | undefined {
  const path = join(labDir(name), 'lab.json');
  if (!existsSync(path)) return undefined;
  const s = JSON.parse(readFileSync(path, 'utf8')) as LabState;
  return alive(s.pid) ? s : undefined;
}

function requireLab(name: string): LabState {
  const s = runningLab(name);
  if (!s) throw new UsageError(`no lab "${name}" is running (start one with: hypha lab up)`);
  return s;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Reads manifests (files or folders), applies each document, prints kubectl's lines. */
export async function applyFiles(
  client: KubeClient,
  paths: string[],
  out: NodeJS.WritableStream,
): Promise<number> {
  let failed = 0;
  const files = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => /\.(ya?ml|json)$/.test(f))
          .sort()
          .map((f) => join(p, f))
      : [p],
  );
  for (const f of files) {
    for (const [i, doc] of parseAllDocuments(readFileSync(f, 'utf8')).entries()) {
      if (doc.errors.length) {
        out.write(`error: ${f} document ${i}: ${doc.errors[0]!.message}\n`);
        failed++;
        continue;
      }
      const obj = doc.toJS() as Record<string, unknown> | null;
      if (!obj) continue;
      const kind = String(obj.kind ?? '');
      const name = String((obj.metadata as { name?: string } | undefined)?.name ?? '');
      try {
        const action = await client.apply(obj);
        const group = String(obj.apiVersion ?? '').includes('/')
          ? `.${String(obj.apiVersion).split('/')[0]}`
          : '';
        out.write(`${kind.toLowerCase()}${group}/${name} ${action}\n`);
      } catch (err) {
        failed++;
        const causes =
          err instanceof KubeError
            ? ((err.body as { details?: { causes?: { field?: string; message: string }[] } }).details
                ?.causes ?? [])
            : [];
        out.write(`error: ${f}: ${kind} "${name}": ${errorMessage(err)}\n`);
        for (const c of causes) out.write(`  * ${c.field ?? ''}: ${c.message}\n`);
      }
    }
  }
  return failed ? 1 : 0;
}

interface PodLite {
  metadata: { name: string; namespace: string; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

const isReady = (p: PodLite) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

async function waitPodsReady(
  client: KubeClient,
  timeoutMs: number,
  out: NodeJS.WritableStream,
): Promise<PodLite[]> {
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const pods = (await client.json<{ items: PodLite[] }>('GET', '/api/v1/pods')).items;
    const ready = pods.filter(isReady).length;
    const line = `  pods ready: ${ready}/${pods.length}`;
    if (line !== last) out.write(`${line}\n`);
    last = line;
    if (pods.length > 0 && ready === pods.length) return pods;
    if (Date.now() > end) {
      const waiting = pods
        .filter((p) => !isReady(p))
        .map((p) => `${p.metadata.namespace}/${p.metadata.name}`);
      throw new Error(`pods not ready after ${timeoutMs / 1000} s: ${waiting.join(', ')}`);
    }
    await sleep(250);
  }
}

const KINDS: Record<string, [string, string]> = {
  deploy: ['apis/apps/v1', 'deployments'],
  deployment: ['apis/apps/v1', 'deployments'],
  deployments: ['apis/apps/v1', 'deployments'],
  ds: ['apis/apps/v1', 'daemonsets'],
  daemonset: ['apis/apps/v1', 'daemonsets'],
  rs: ['apis/apps/v1', 'replicasets'],
  replicaset: ['apis/apps/v1', 'replicasets'],
  svc: ['api/v1', 'services'],
  service: ['api/v1', 'services'],
};

/**
 * A pod from a target as kubectl takes them: `pod`, `pod/name`, `deploy/name`, `ds/name`
 * (a ready pod of it), each optionally prefixed `ns/`.
 */
export async function resolvePod(
  client: KubeClient,
  target: string,
  ns?: string,
): Promise<{ namespace: string; pod: string }> {
  let parts = target.split('/');
  let namespace = ns ?? 'default';
  if (
    parts.length === 3 ||
    (parts.length === 2 && !KINDS[parts[0]!] && !['pod', 'pods', 'po'].includes(parts[0]!))
  ) {
    namespace = parts[0]!;
    parts = parts.slice(1);
  }
  if (parts.length === 1) return { namespace, pod: parts[0]! };
  const [kind, name] = parts as [string, string];
  if (['pod', 'pods', 'po'].includes(kind)) return { namespace, pod: name };
  const where = KINDS[kind];
  if (!where) throw new UsageError(`${target}: unknown kind "${kind}" (pod, deploy, ds, rs, svc)`);
  const owner = await client.json<{
    spec: { selector: { matchLabels?: Record<string, string> } | Record<string, string> };
  }>('GET', `/${where[0]}/namespaces/${namespace}/${where[1]}/${name}`);
  const sel = 'matchLabels' in owner.spec.selector ? owner.spec.selector.matchLabels : owner.spec.selector;
  const q = Object.entries(sel ?? {})
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(',');
  const pods = (
    await client.json<{ items: PodLite[] }>(
      'GET',
      `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(q)}`,
    )
  ).items;
  const pod = pods.find(isReady) ?? pods[0];
  if (!pod) throw new UsageError(`${target}: no pods`);
  return { namespace, pod: pod.metadata.name };
}

export const labCommands: Command[] = [
  {
    path: ['lab', 'up'],
    summary: 'Start a lab cluster on this machine and deploy the tutorial workloads (root)',
    options: {
      name: NAME_OPTION,
      nodes: {
        type: 'string',
        value: 'n',
        description: 'number of nodes (default 3: a control plane and two workers)',
      },
      values: {
        type: 'string',
        short: 'f',
        multiple: true,
        value: 'file',
        description: 'Helm values file (repeatable)',
      },
      set: { type: 'string', multiple: true, value: 'key=value', description: 'a Helm value (repeatable)' },
      'no-workloads': { type: 'boolean', description: 'only the cluster, without the tutorial workloads' },
      port: {
        type: 'string',
        value: 'port',
        description: 'API server port on 127.0.0.1 (default 6443, else any free one)',
      },
    },
    async run({ values, stdout, stderr }) {
      const name = nameOf(values);
      const nodes = Number((values.nodes as string | undefined) ?? 3);
      if (!Number.isInteger(nodes) || nodes < 1 || nodes > 50)
        throw new UsageError('--nodes: a whole number from 1 to 50');
      const helm = loadValues(
        (values.values as string[] | undefined) ?? [],
        (values.set as string[] | undefined) ?? [],
      );
      const review = reviewValues(helm);
      const t0 = Date.now();
      let state = runningLab(name);
      if (state) {
        stdout.write(`lab ${name} is already up (pid ${state.pid})\n`);
      } else {
        const left = await NetNs.list(`hylab-${name}-`);
        if (left.length)
          stdout.write(
            `Removing what an earlier lab ${name} left behind (it is not running): ${left.join(', ')}\n`,
          );
        const dir = labDir(name);
        mkdirSync(join(dir, 'logs'), { recursive: true, mode: 0o700 });
        const log = openSync(join(dir, 'logs', 'lab.log'), 'a');
        const child = spawn(
          HYPHA_BIN,
          [
            'lab',
            'daemon',
            '--name',
            name,
            '--nodes',
            String(nodes),
            ...(values.port ? ['--port', values.port as string] : []),
          ],
          {
            detached: true,
            stdio: ['ignore', log, log],
            env: { ...process.env, HYPHA_LAB_VALUES: JSON.stringify(helm) },
          },
        );
        closeSync(log);
        child.unref();
        stdout.write(
          `Starting lab ${name}: ${nodes} node(s), API server, controllers, an agent per node...\n`,
        );
        for (;;) {
          state = runningLab(name);
          if (state) break;
          if (child.exitCode !== null || child.signalCode !== null || Date.now() - t0 > 60_000) {
            const tail = readFileSync(join(dir, 'logs', 'lab.log'), 'utf8')
              .split('\n')
              .slice(-15)
              .join('\n');
            stderr.write(`hypha lab up: the lab did not start:\n${tail}\n`);
            return 1;
          }
          await sleep(100);
        }
      }
      for (const r of review) {
        if (r.state !== 'applied')
          stdout.write(
            `  value ${r.key}: ${r.state === 'not-supported' ? 'NOT SUPPORTED' : 'not applicable'}: ${r.note}\n`,
          );
      }
      const client = new KubeClient(loadKubeconfig(state.kubeconfig));
      if (!values['no-workloads']) {
        stdout.write('Deploying the tutorial workloads (examples/tutorial/00-workloads.yaml)...\n');
        if (await applyFiles(client, [join(TUTORIAL, '00-workloads.yaml')], stdout)) return 1;
      }
      const pods = await waitPodsReady(client, 120_000, stdout);
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      stdout.write(
        [
          '',
          `Lab ${name} is up in ${secs} s: ${state.nodes.length} nodes, ${pods.length} pods ready.`,
          ...(state.ui
            ? ['url' in state.ui ? `Hubble UI: ${state.ui.url}` : `Hubble UI not started: ${state.ui.error}`]
            : []),
          ...(state.metricsTargets ? [`Hubble metrics: Prometheus targets in ${state.metricsTargets}`] : []),
          '',
          'Try next:',
          `  export KUBECONFIG=${state.kubeconfig}`,
          '  kubectl get nodes -o wide',
          '  kubectl get pods -A -o wide',
          `  kubectl apply -f ${join(TUTORIAL, '05.1-default-deny.yaml')}`,
          `  kubectl apply -f ${join(TUTORIAL, '05.2-frontend-ingress.yaml')}`,
          '  hypha lab exec production/deploy/api-gateway -- curl -s http://frontend.production.svc.cluster.local:8080/',
          '  hypha observe --namespace production --verdict DROPPED      # hubble observe, against every node',
          `  kubectl apply -f ${join(TUTORIAL, '05.3-l7-http-policy.yaml')}`,
          '  kubectl exec -n production deploy/frontend -- curl -s -X POST http://catalog:8080/api/v1/products',
          `  kubectl apply -f ${join(TUTORIAL, '05.4-fqdn-egress.yaml')}`,
          '  kubectl exec -n data-pipeline deploy/data-exporter -- curl -s https://api.external-partner.com/',
          '  hypha hubble status                                          # the relay on 127.0.0.1:4245',
          '  hypha lab down',
          '',
        ].join('\n'),
      );
      return 0;
    },
  },
  {
    path: ['lab', 'daemon'],
    summary: "The lab's own process (started by lab up)",
    options: {
      name: NAME_OPTION,
      nodes: { type: 'string', value: 'n', description: 'number of nodes' },
      port: { type: 'string', value: 'port', description: 'API server port' },
    },
    async run({ values, stdout, signal }) {
      const name = nameOf(values);
      const log = (line: string) => stdout.write(`${new Date().toISOString()} ${line}\n`);
      const lab = new Lab(
        {
          name,
          nodes: Number(values.nodes ?? 3),
          dataDir: labDir(name),
          values: JSON.parse(process.env.HYPHA_LAB_VALUES ?? '{}') as Record<string, unknown>,
          ...(values.port ? { port: Number(values.port) } : {}),
        },
        log,
      );
      try {
        const state = await lab.up();
        log(`lab ${name} up: API server ${state.server}, kubeconfig ${state.kubeconfig}`);
      } catch (err) {
        log(`lab ${name} failed to start: ${errorMessage(err)}`);
        await lab.down(true).catch(() => {});
        return 1;
      }
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
      const flag = join(labDir(name), 'keep');
      const keep = existsSync(flag);
      rmSync(flag, { force: true });
      log(`lab ${name} going down${keep ? ' (keeping its data)' : ''}`);
      await lab.down(keep);
      log(`lab ${name} down`);
      return 0;
    },
  },
  {
    path: ['lab', 'down'],
    summary: 'Stop a lab and remove every namespace, link, process, pin and file it made',
    options: {
      name: NAME_OPTION,
      keep: {
        type: 'boolean',
        description: "keep the API server's data, so the next lab up resumes the cluster",
      },
    },
    async run({ values, stdout }) {
      const name = nameOf(values);
      const s = runningLab(name);
      if (!s) {
        // Nothing running: remove what a lab that died left behind, if anything.
        const left = await NetNs.list(`hylab-${name}-`);
        if (left.length === 0 && !existsSync(join(labDir(name), 'lab.json'))) {
          stdout.write(`no lab "${name}" is running\n`);
          return 0;
        }
        const nodes = left.filter((n) => !n.endsWith('-ul') && !n.endsWith('-world')).length || 1;
        stdout.write(
          `lab ${name} is not running; removing what it left: ${left.join(', ') || 'its state'}\n`,
        );
        await new Lab({ name, nodes, dataDir: labDir(name), values: {} }, (l) => stdout.write(`${l}\n`)).down(
          Boolean(values.keep),
        );
        return 0;
      }
      const flag = join(labDir(name), 'keep');
      if (values.keep) closeSync(openSync(flag, 'w'));
      else rmSync(flag, { force: true });
      process.kill(s.pid, 'SIGTERM');
      for (let i = 0; i < 600 && alive(s.pid); i++) await sleep(100);
      if (alive(s.pid)) {
        stdout.write(`lab ${name} did not stop within 60 s (pid ${s.pid})\n`);
        return 1;
      }
      stdout.write(`lab ${name} is down${values.keep ? ` (data kept in ${labDir(name)})` : ''}\n`);
      return 0;
    },
  },
  {
    path: ['lab', 'status'],
    summary: "A lab's nodes, agents and pods",
    options: { name: NAME_OPTION, output: OUTPUT_OPTION },
    async run({ values, stdout }) {
      const s = requireLab(nameOf(values));
      const client = new KubeClient(loadKubeconfig(s.kubeconfig));
      const nodes = (
        await client.json<{
          items: {
            metadata: { name: string };
            status?: { conditions?: { type: string; status: string }[] };
          }[];
        }>('GET', '/api/v1/nodes')
      ).items;
      const pods = (await client.json<{ items: PodLite[] }>('GET', '/api/v1/pods')).items;
      if (wantsJson(values)) {
        stdout.write(`${JSON.stringify({ ...s, nodesReady: nodes.length, pods: pods.length }, null, 2)}\n`);
        return 0;
      }
      stdout.write(`Lab ${s.name} (pid ${s.pid}), API server ${s.server}\nkubeconfig: ${s.kubeconfig}\n`);
      if (s.metricsTargets) stdout.write(`Hubble metrics (Prometheus file_sd): ${s.metricsTargets}\n`);
      stdout.write('\n');
      const rows = s.nodes.map((n) => {
        const obj = nodes.find((x) => x.metadata.name === n.name);
        const ready =
          obj?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
        const count = pods.filter((p) => p.spec.nodeName === n.name).length;
        return [
          n.name,
          n.role,
          ready ? 'Ready' : 'NotReady',
          n.ip,
          n.podCidr,
          String(count),
          existsSync(n.agentSocket) ? 'running' : 'down',
        ];
      });
      stdout.write(formatTable(['NODE', 'ROLE', 'STATUS', 'INTERNAL-IP', 'POD-CIDR', 'PODS', 'AGENT'], rows));
      return rows.every((r) => r[2] === 'Ready') ? 0 : 1;
    },
  },
  {
    path: ['lab', 'kubeconfig'],
    summary: "Print the path of a lab's kubeconfig (export KUBECONFIG=$(hypha lab kubeconfig))",
    options: { name: NAME_OPTION },
    run({ values, stdout }) {
      stdout.write(`${requireLab(nameOf(values)).kubeconfig}\n`);
      return 0;
    },
  },
  {
    path: ['lab', 'exec'],
    summary: 'Run a command in a pod, like kubectl exec (target: [ns/]pod, [ns/]deploy/name, ds/name)',
    args: '<target> -- <command> [args...]',
    options: {
      name: NAME_OPTION,
      namespace: { type: 'string', short: 'n', value: 'ns', description: 'namespace (default: default)' },
      container: { type: 'string', short: 'c', value: 'name', description: 'container (default: the first)' },
      stdin: { type: 'boolean', short: 'i', description: 'pass stdin to the command' },
    },
    async run({ values, positionals, stdout, stderr }) {
      const [target, ...command] = positionals;
      if (!target || command.length === 0)
        throw new UsageError('usage: hypha lab exec <target> -- <command> [args...]');
      const s = requireLab(nameOf(values));
      const kt = loadKubeconfig(s.kubeconfig);
      const { namespace, pod } = await resolvePod(
        new KubeClient(kt),
        target,
        values.namespace as string | undefined,
      );
      return execInPod(kt, {
        namespace,
        pod,
        command,
        stdout,
        stderr,
        ...(values.container ? { container: values.container as string } : {}),
        ...(values.stdin ? { stdin: process.stdin } : {}),
      });
    },
  },
  {
    path: ['lab', 'logs'],
    summary: "A pod's container log, like kubectl logs (target as for lab exec)",
    args: '<target>',
    options: {
      name: NAME_OPTION,
      namespace: { type: 'string', short: 'n', value: 'ns', description: 'namespace (default: default)' },
      container: { type: 'string', short: 'c', value: 'name', description: 'container (default: the first)' },
    },
    async run({ values, positionals, stdout }) {
      const target = positionals[0];
      if (!target) throw new UsageError('usage: hypha lab logs <target>');
      const s = requireLab(nameOf(values));
      const client = new KubeClient(loadKubeconfig(s.kubeconfig));
      const { namespace, pod } = await resolvePod(client, target, values.namespace as string | undefined);
      const q = values.container ? `?container=${encodeURIComponent(values.container as string)}` : '';
      const r = await client.request('GET', `/api/v1/namespaces/${namespace}/pods/${pod}/log${q}`);
      if (r.status >= 400) throw new KubeError(r.status, r.body);
      stdout.write(String(r.body));
      return 0;
    },
  },
  {
    path: ['apply'],
    summary: 'Apply manifests to the lab (or any cluster) with server-side apply, like kubectl apply -f',
    options: {
      filename: {
        type: 'string',
        short: 'f',
        multiple: true,
        value: 'path',
        description: 'file or folder (repeatable)',
      },
      kubeconfig: {
        type: 'string',
        value: 'file',
        description: "kubeconfig (default: the running lab's, else KUBECONFIG)",
      },
      name: NAME_OPTION,
    },
    async run({ values, stdout }) {
      const files = (values.filename as string[] | undefined) ?? [];
      if (files.length === 0) throw new UsageError('-f: at least one file or folder');
      for (const f of files) if (!existsSync(f)) throw new UsageError(`-f ${f}: no such file or folder`);
      const kc =
        (values.kubeconfig as string | undefined) ??
        runningLab(nameOf(values))?.kubeconfig ??
        process.env.KUBECONFIG;
      if (!kc) throw new UsageError('no running lab and no --kubeconfig or KUBECONFIG');
      return applyFiles(new KubeClient(loadKubeconfig(kc)), files, stdout);
    },
  },
];
