/**
 * A small Kubernetes client for Hypha's own commands (`hypha apply`, `hypha lab up`):
 * kubeconfig (token or client certificate, CA), discovery, and server-side apply. The
 * agent's watchers use @kubernetes/client-node; this keeps the CLI's start-up light.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';

export interface KubeTarget {
  server: string;
  ca?: Buffer;
  token?: string;
  cert?: Buffer;
  key?: Buffer;
  insecure?: boolean;
}

type Named<T> = { name: string } & T;

/** The current context's server and credentials. */
export function loadKubeconfig(path: string): KubeTarget {
  const cfg = parse(readFileSync(path, 'utf8')) as {
    'current-context'?: string;
    contexts?: Named<{ context: { cluster: string; user: string } }>[];
    clusters?: Named<{ cluster: Record<string, string | boolean> }>[];
    users?: Named<{ user: Record<string, string> }>[];
  };
  const ctx = cfg.contexts?.find((c) => c.name === cfg['current-context']) ?? cfg.contexts?.[0];
  const cluster = cfg.clusters?.find((c) => c.name === ctx?.context.cluster)?.cluster;
  const user = cfg.users?.find((u) => u.name === ctx?.context.user)?.user ?? {};
  if (!cluster || typeof cluster.server !== 'string')
    throw new Error(`${path}: no cluster for the current context`);
  const file = (p: unknown) => (typeof p === 'string' ? readFileSync(resolve(dirname(path), p)) : undefined);
  const data = (d: unknown) => (typeof d === 'string' ? Buffer.from(d, 'base64') : undefined);
  const t: KubeTarget = { server: cluster.server };
  const ca = data(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']);
  if (ca) t.ca = ca;
  if (cluster['insecure-skip-tls-verify'] === true) t.insecure = true;
  if (user.token) t.token = user.token;
  const cert = data(user['client-certificate-data']) ?? file(user['client-certificate']);
  const key = data(user['client-key-data']) ?? file(user['client-key']);
  if (cert) t.cert = cert;
  if (key) t.key = key;
  return t;
}

export interface KubeResponse {
  status: number;
  body: unknown;
}

export class KubeClient {
  readonly #t: KubeTarget;
  readonly #discovery = new Map<string, { name: string; kind: string; namespaced: boolean }[]>();

  constructor(t: KubeTarget) {
    this.#t = t;
  }

  request(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<KubeResponse> {
    const url = new URL(path, this.#t.server);
    const payload =
      body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    return new Promise((resolvePromise, reject) => {
      const req = request(
        url,
        {
          method,
          headers: {
            accept: 'application/json',
            ...(payload ? { 'content-type': contentType, 'content-length': payload.length } : {}),
            ...(this.#t.token ? { authorization: `Bearer ${this.#t.token}` } : {}),
          },
          ...(this.#t.ca ? { ca: this.#t.ca } : {}),
          ...(this.#t.cert ? { cert: this.#t.cert } : {}),
          ...(this.#t.key ? { key: this.#t.key } : {}),
          rejectUnauthorized: !this.#t.insecure,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // not JSON: keep the text
            }
            resolvePromise({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  async json<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const r = await this.request(method, path, body, contentType);
    if (r.status >= 400) throw new KubeError(r.status, r.body);
    return r.body as T;
  }

  /** The REST path of a kind's collection, from discovery. */
  async resourcePath(
    apiVersion: string,
    kind: string,
    namespace: string | undefined,
  ): Promise<{ path: string; namespaced: boolean }> {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    let rs = this.#discovery.get(base);
    if (!rs) {
      const list = await this.json<{ resources: { name: string; kind: string; namespaced: boolean }[] }>(
        'GET',
        base,
      ).catch((err: unknown) => {
        if (err instanceof KubeError && err.status === 404) return { resources: [] };
        throw err;
      });
      rs = list.resources.filter((r) => !r.name.includes('/'));
      this.#discovery.set(base, rs);
    }
    const r = rs.find((x) => x.kind === kind);
    if (!r)
      throw new Error(`the server has no resource for ${kind} in ${apiVersion} (is its CRD installed?)`);
    const ns = r.namespaced ? `/namespaces/${encodeURIComponent(namespace ?? 'default')}` : '';
    return { path: `${base}${ns}/${r.name}`, namespaced: r.namespaced };
  }

  /** Server-side apply of one object: created, configured or unchanged. */
  async apply(
    obj: Record<string, unknown>,
    fieldManager = 'hypha',
  ): Promise<'created' | 'configured' | 'unchanged'> {
    const meta = (obj.metadata ?? {}) as { name?: string; namespace?: string };
    if (typeof obj.apiVersion !== 'string' || typeof obj.kind !== 'string' || !meta.name)
      throw new Error('an object needs apiVersion, kind and metadata.name');
    const { path } = await this.resourcePath(obj.apiVersion, obj.kind, meta.namespace);
    const url = `${path}/${encodeURIComponent(meta.name)}`;
    const before = await this.request('GET', url);
    const r = await this.request(
      'PATCH',
      `${url}?fieldManager=${fieldManager}&force=true&fieldValidation=Strict`,
      obj,
      'application/apply-patch+yaml',
    );
    if (r.status >= 400) throw new KubeError(r.status, r.body);
    if (before.status === 404) return 'created';
    const rv = (b: unknown) => (b as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
    return rv(before.body) === rv(r.body) ? 'unchanged' : 'configured';
  }
}

export class KubeError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    const b = body as { message?: string; details?: { causes?: { field?: string; message: string }[] } };
    super(typeof b?.message === 'string' ? b.message : `HTTP ${status}`);
  }
}
