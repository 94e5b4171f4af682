/**
 * A lab for a test file: brought up once (with the tutorial's workloads when asked, and
 * waited for until their pods are Ready), with the helpers every lab test uses to act as
 * a user would: run a command in a pod, call kubectl, list pods, curl.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { applyFiles } from '../../src/cli/commands/lab.js';
import { KubeClient, loadKubeconfig } from '../../src/k8s/client.js';
import { execInPod } from '../../src/k8s/exec.js';
import { Lab, type LabConfig, type LabState } from '../../src/lab/lab.js';
import { repoRoot } from './kernel.js';

export const TUTORIAL = join(repoRoot, 'examples/tutorial');

export interface Pod {
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: { nodeName?: string; hostNetwork?: boolean };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

export const isReady = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

export interface LabOptions {
  name: string;
  /** The underlay's third octet: unique per test file, so labs never share addresses. */
  underlayOctet: number;
  nodes?: number;
  values?: LabConfig['values'];
  /** Manifests applied once the lab is up (default: none); `tutorial` is 00-workloads.yaml. */
  manifests?: 'tutorial' | string[];
  /** Wait until this many pods are Ready (in `readyNamespace`, else in every namespace). */
  readyPods?: number;
  readyNamespace?: string;
}

export interface LabFixture {
  lab: Lab;
  state: LabState;
  client: KubeClient;
  /** Runs a command in a pod's first container, as kubectl exec does. */
  exec(pod: Pod, command: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** The real kubectl against the lab. */
  kubectl(...args: string[]): Promise<{ code: number; out: string }>;
  /** Pods by label selector, in one namespace or all. */
  pods(selector: string, namespace?: string): Promise<Pod[]>;
  /** The HTTP status curl got from a pod ('000': no answer within `timeoutS`). */
  curl(from: Pod, url: string, extra?: string[], timeoutS?: number): Promise<string>;
  down(): Promise<void>;
}

export async function startLab(o: LabOptions): Promise<LabFixture> {
  const lab = new Lab(
    {
      name: o.name,
      nodes: o.nodes ?? 3,
      dataDir: mkdtempSync(join(tmpdir(), 'hy-lab-')),
      values: o.values ?? {},
      port: 0,
      relayPort: 0,
      uiPort: 0,
      underlayOctet: o.underlayOctet,
    },
    () => {},
  );
  const state = await lab.up();
  const client = new KubeClient(loadKubeconfig(state.kubeconfig));
  const kubeconfig = loadKubeconfig(state.kubeconfig);

  const exec: LabFixture['exec'] = async (pod, command) => {
    const out = new PassThrough();
    const err = new PassThrough();
    const chunks: Buffer[] = [];
    const errs: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    err.on('data', (c: Buffer) => errs.push(c));
    const code = await execInPod(kubeconfig, {
      namespace: pod.metadata.namespace,
      pod: pod.metadata.name,
      command,
      stdout: out,
      stderr: err,
    });
    return { code, stdout: Buffer.concat(chunks).toString(), stderr: Buffer.concat(errs).toString() };
  };
  const pods: LabFixture['pods'] = async (selector, namespace) =>
    (
      await client.json<{ items: Pod[] }>(
        'GET',
        `/api/v1/${namespace ? `namespaces/${namespace}/` : ''}pods?labelSelector=${encodeURIComponent(selector)}`,
      )
    ).items;
  const fixture: LabFixture = {
    lab,
    state,
    client,
    exec,
    pods,
    kubectl: (...args) =>
      new Promise((resolve) =>
        execFile('kubectl', args, { env: { ...process.env, KUBECONFIG: state.kubeconfig } }, (e, so, se) =>
          resolve({ code: e ? 1 : 0, out: so + se }),
        ),
      ),
    curl: async (from, url, extra = [], timeoutS = 2) =>
      (
        await exec(from, [
          'curl',
          '-s',
          '-m',
          String(timeoutS),
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          ...extra,
          url,
        ])
      ).stdout,
    down: () => lab.down(false),
  };
  try {
    if (o.manifests) {
      const sink = new PassThrough();
      sink.resume();
      const files = o.manifests === 'tutorial' ? [join(TUTORIAL, '00-workloads.yaml')] : o.manifests;
      if ((await applyFiles(client, files, sink)) !== 0)
        throw new Error(`applying ${files.join(', ')} failed`);
    }
    if (o.readyPods) {
      const end = Date.now() + 90_000;
      for (;;) {
        const all = await pods('', o.readyNamespace);
        if (all.length >= o.readyPods && all.every(isReady)) break;
        if (Date.now() > end)
          throw new Error(
            `pods not ready: ${all
              .filter((p) => !isReady(p))
              .map((p) => p.metadata.name)
              .join(', ')}`,
          );
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } catch (err) {
    await lab.down(false);
    throw err;
  }
  return fixture;
}
