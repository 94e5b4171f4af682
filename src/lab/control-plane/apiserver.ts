/**
 * The lab's API server: the embedded Kubernetes API behind TLS (a certificate from the lab
 * CA) and a bearer token, persisted under the lab's data directory, bootstrapped like a
 * fresh cluster (system namespaces, the `kubernetes` service, Cilium's CRDs), with a
 * kubeconfig for kubectl.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  Api,
  ApiHandler,
  type ApiServerOptions,
  checkAgainstCrd,
  listen,
  Store,
} from '../../apiserver/index.js';
import { ciliumCrds } from '../../apiserver/schema/index.js';
import { ensureCa, ensureServerCert } from '../pki.js';

export interface ControlPlaneOptions {
  dataDir: string;
  cluster: string;
  /** Addresses to listen on: 127.0.0.1 for kubectl, the underlay address for node agents. */
  hosts: string[];
  port?: number;
  serviceCidr?: string;
  podCidrs?: string[];
  podLog?: ApiServerOptions['podLog'];
  podExec?: ApiServerOptions['podExec'];
}

export interface ControlPlane {
  api: Api;
  port: number;
  token: string;
  caPath: string;
  kubeconfigPath: string;
  /** Server URL for each listening host. */
  urls: string[];
  close(): Promise<void>;
}

function token(dir: string): string {
  const path = join(dir, 'token');
  if (!existsSync(path)) writeFileSync(path, randomBytes(24).toString('hex'), { mode: 0o600 });
  return readFileSync(path, 'utf8').trim();
}

export async function startApiServer(o: ControlPlaneOptions): Promise<ControlPlane> {
  const pki = join(o.dataDir, 'pki');
  mkdirSync(pki, { recursive: true, mode: 0o700 });
  const ca = ensureCa(pki, `${o.cluster} lab CA`);
  const cert = ensureServerCert(pki, ca, 'apiserver', [
    'localhost',
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    'kubernetes.default.svc.cluster.local',
    ...o.hosts,
  ]);
  const tok = token(o.dataDir);
  const store = new Store(join(o.dataDir, 'etcd'));
  const api = new Api({
    store,
    ...(o.serviceCidr ? { serviceCidr: o.serviceCidr } : {}),
    ...(o.podCidrs ? { podCidrs: o.podCidrs } : {}),
    schemaCheck: checkAgainstCrd,
  });
  bootstrap(api, ciliumCrds());
  const handler = new ApiHandler({
    api,
    ...(o.podLog ? { podLog: o.podLog } : {}),
    ...(o.podExec ? { podExec: o.podExec } : {}),
  });
  const server = await listen(handler, {
    host: o.hosts,
    port: o.port ?? 0,
    key: cert.key,
    cert: cert.cert,
    token: tok,
  });
  const urls = o.hosts.map((h) => `https://${h}:${server.port}`);
  const kubeconfigPath = join(o.dataDir, 'kubeconfig');
  const context = `hypha-${o.cluster}`;
  writeFileSync(
    kubeconfigPath,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: context,
          cluster: { server: urls[0], 'certificate-authority-data': Buffer.from(ca.cert).toString('base64') },
        },
      ],
      users: [{ name: context, user: { token: tok } }],
      contexts: [{ name: context, context: { cluster: context, user: context } }],
      'current-context': context,
      preferences: {},
    }),
    { mode: 0o600 },
  );
  return {
    api,
    port: server.port,
    token: tok,
    caPath: ca.certPath,
    kubeconfigPath,
    urls,
    close: async () => {
      await server.close();
      store.flush();
    },
  };
}

/** What a fresh cluster has; each object is made only if missing, so a resumed lab keeps its own. */
function bootstrap(api: Api, crds: unknown[]): void {
  const ensure = (
    group: string,
    plural: string,
    namespace: string | undefined,
    body: Record<string, unknown>,
  ) => {
    const r = api.resource(group, plural)!;
    const name = (body.metadata as { name: string }).name;
    if (!api.tryGet(r, namespace, name)) api.create(r, namespace, body);
  };
  for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease'])
    ensure('', 'namespaces', undefined, { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  ensure('', 'services', 'default', {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'kubernetes',
      namespace: 'default',
      labels: { component: 'apiserver', provider: 'kubernetes' },
    },
    spec: {
      clusterIP: '10.96.0.1',
      ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: 6443 }],
    },
  });
  for (const crd of crds) {
    const name = (crd as { metadata: { name: string } }).metadata.name;
    const r = api.resource('apiextensions.k8s.io', 'customresourcedefinitions')!;
    if (!api.tryGet(r, undefined, name)) api.create(r, undefined, crd);
  }
}
