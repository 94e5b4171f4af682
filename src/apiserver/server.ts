/**
 * The Kubernetes REST API over HTTP(S): discovery, the resource verbs, watches as
 * chunked JSON event streams, Tables for `kubectl get`, and Status errors. The handler
 * works on a plain request and a response sink, so tests drive it in-process and
 * `listen` puts it behind TLS and a bearer token.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { parse as parseYaml } from 'yaml';
import type { Api, PatchType, WatchEvent, WriteOptions } from './api.js';
import { type ExecRequest, type ExecTarget, execRequest, serveExec } from './exec.js';
import { ApiError, errors, isObject, type JsonObject, type KObject } from './object.js';
import { apiVersionOf, type ResourceType } from './resources.js';

export const SERVER_VERSION = { major: '1', minor: '32', gitVersion: 'v1.32.0-hypha' };
const MAX_BODY = 3 * 1024 * 1024;
const BOOKMARK_INTERVAL_MS = 30_000;

export interface ApiRequest {
  method: string;
  /** Path and query, e.g. `/api/v1/namespaces/default/pods?watch=1`. */
  url: string;
  headers: Record<string, string | undefined>;
  body?: Buffer;
}

export interface ResponseSink {
  head(status: number, headers: Record<string, string>): void;
  write(chunk: string): void;
  end(chunk?: string): void;
  /** Called when the client goes away (ends watches). */
  onClose(fn: () => void): void;
}

export interface ApiServerOptions {
  api: Api;
  /** What runs a command in a pod's container for `kubectl exec` (the lab's kubelet). */
  podExec?: (r: ExecRequest) => Promise<ExecTarget>;
  /** Serves a pod's container log for `kubectl logs` (the lab's kubelet). */
  podLog?: (namespace: string, pod: string, container: string | undefined) => Promise<string>;
}

interface Target {
  r: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
}

const json = (sink: ResponseSink, status: number, body: unknown, warnings: string[] = []) => {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (warnings.length) headers.warning = warnings.map((w) => `299 - ${JSON.stringify(w)}`).join(', ');
  sink.head(status, headers);
  sink.end(JSON.stringify(body));
};

export class ApiHandler {
  readonly #api: Api;
  readonly #podLog: ApiServerOptions['podLog'];
  readonly #podExec: ApiServerOptions['podExec'];

  constructor(o: ApiServerOptions) {
    this.#api = o.api;
    this.#podLog = o.podLog;
    this.#podExec = o.podExec;
  }

  /** A WebSocket upgrade: `kubectl exec` on a pod. Anything else is refused. */
  upgrade(req: IncomingMessage, socket: Duplex): void {
    const url = new URL(req.url ?? '/', 'https://apiserver');
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(url.pathname);
    if (!m || !this.#podExec) {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n\r\nonly pods/exec upgrades\n');
      return;
    }
    const [ns, pod] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
    const podExec = this.#podExec;
    serveExec(req, socket, execRequest(ns, pod, url.searchParams), async (r) => {
      this.#api.get(this.#api.resource('', 'pods')!, ns, pod);
      return podExec(r);
    });
  }

  async handle(req: ApiRequest, sink: ResponseSink): Promise<void> {
    try {
      await this.#route(req, sink);
    } catch (err) {
      const e =
        err instanceof ApiError
          ? err
          : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error).message}`);
      if (!(err instanceof ApiError)) console.error('apiserver:', err);
      json(sink, e.code, e.toStatus());
    }
  }

  async #route(req: ApiRequest, sink: ResponseSink): Promise<void> {
    const url = new URL(req.url, 'https://apiserver');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const q = url.searchParams;
    if (req.method === 'GET') {
      switch (path) {
        case '/healthz':
        case '/livez':
        case '/readyz':
          sink.head(200, { 'content-type': 'text/plain' });
          return sink.end('ok');
        case '/version':
          return json(sink, 200, {
            ...SERVER_VERSION,
            gitCommit: '',
            gitTreeState: 'clean',
            buildDate: '',
            goVersion: '',
            compiler: 'hypha',
            platform: 'linux/amd64',
          });
        case '/api':
          return json(sink, 200, {
            kind: 'APIVersions',
            versions: ['v1'],
            serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: req.headers.host ?? '' }],
          });
        case '/apis':
          return json(sink, 200, this.#groups());
      }
      if (path === '/openapi/v3') return json(sink, 200, this.#openapiRoot());
      const doc = /^\/openapi\/v3\/(api\/v1|apis\/[^/]+\/[^/]+)$/.exec(path);
      if (doc) return json(sink, 200, this.#openapiGroupVersion(doc[1]!));
      const gv = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))$/.exec(path);
      if (gv) return json(sink, 200, this.#resourceList(gv[2] ?? '', gv[1] ?? gv[3]!));
    }
    const t = this.#target(path);
    if (!t) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const accept = req.headers.accept ?? '';
    const table = /as=Table/.test(accept) ? (q.get('includeObject') ?? 'Metadata') : undefined;
    const write: WriteOptions = {
      dryRun: q.getAll('dryRun').includes('All'),
      ...(q.get('fieldValidation')
        ? { fieldValidation: q.get('fieldValidation') as WriteOptions['fieldValidation'] }
        : {}),
      ...(q.get('fieldManager') ? { fieldManager: q.get('fieldManager')! } : {}),
    };
    const { r, namespace, name, subresource } = t;
    if (
      subresource &&
      subresource !== 'status' &&
      !(r.kind === 'Pod' && ['log', 'binding'].includes(subresource))
    )
      throw new ApiError(
        404,
        'NotFound',
        `the server could not find the requested resource (${subresource})`,
      );
    if (subresource === 'status' && !r.statusSubresource)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const sub = subresource === 'status' ? ({ subresource: 'status' } as const) : {};

    switch (req.method) {
      case 'GET': {
        if (subresource === 'log') {
          if (!this.#podLog) throw new ApiError(404, 'NotFound', 'pod logs are not available');
          this.#api.get(r, namespace, name!);
          const text = await this.#podLog(namespace!, name!, q.get('container') ?? undefined);
          sink.head(200, { 'content-type': 'text/plain' });
          return sink.end(text);
        }
        if (q.get('watch') === 'true' || q.get('watch') === '1') return this.#watch(t, q, sink, table);
        if (name) {
          const o = this.#api.get(r, namespace, name);
          return json(sink, 200, table ? this.#table(r, [o], String(o.metadata.resourceVersion), table) : o);
        }
        const { items, resourceVersion } = this.#api.list(r, namespace, selectors(q));
        if (table) return json(sink, 200, this.#table(r, items, resourceVersion, table));
        return json(sink, 200, {
          kind: r.listKind,
          apiVersion: apiVersionOf(r),
          metadata: { resourceVersion },
          items,
        });
      }
      case 'POST': {
        const body = this.#body(req);
        if (subresource === 'binding') {
          if (!isObject(body) || !isObject(body.target) || typeof body.target.name !== 'string')
            throw errors.badRequest('a Binding needs target.name');
          this.#api.patch(r, namespace, name!, 'merge', { spec: { nodeName: body.target.name } });
          return json(sink, 201, {
            kind: 'Status',
            apiVersion: 'v1',
            metadata: {},
            status: 'Success',
            code: 201,
          });
        }
        if (name) throw errors.methodNotAllowed(`POST is not supported on a named ${r.kind}`);
        const { object, warnings } = this.#api.create(r, namespace, body, write);
        return json(sink, 201, object, warnings);
      }
      case 'PUT': {
        if (!name) throw errors.methodNotAllowed(`PUT needs the name of a ${r.kind}`);
        const { object, warnings } = this.#api.update(r, namespace, name, this.#body(req), {
          ...write,
          ...sub,
        });
        return json(sink, 200, object, warnings);
      }
      case 'PATCH': {
        if (!name) throw errors.methodNotAllowed(`PATCH needs the name of a ${r.kind}`);
        const type = patchType(req.headers['content-type']);
        if (type === 'apply' && !write.fieldManager)
          throw errors.badRequest(
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
          );
        const { object, warnings } = this.#api.patch(r, namespace, name, type, this.#body(req), {
          ...write,
          ...sub,
        });
        return json(sink, 200, object, warnings);
      }
      case 'DELETE': {
        const body = req.body?.length ? this.#body(req) : {};
        const opts = isObject(body) ? body : {};
        const del = {
          dryRun: write.dryRun || (Array.isArray(opts.dryRun) && opts.dryRun.includes('All')),
          ...(typeof opts.propagationPolicy === 'string' || q.get('propagationPolicy')
            ? { propagationPolicy: (opts.propagationPolicy ?? q.get('propagationPolicy')) as 'Orphan' }
            : {}),
          ...(opts.gracePeriodSeconds !== undefined || q.get('gracePeriodSeconds')
            ? { gracePeriodSeconds: Number(opts.gracePeriodSeconds ?? q.get('gracePeriodSeconds')) }
            : {}),
          ...(isObject(opts.preconditions) ? { preconditions: opts.preconditions as { uid?: string } } : {}),
        };
        if (!name) {
          const gone = this.#api.deleteCollection(r, namespace, selectors(q), del);
          return json(sink, 200, {
            kind: r.listKind,
            apiVersion: apiVersionOf(r),
            metadata: {},
            items: gone,
          });
        }
        return json(sink, 200, this.#api.delete(r, namespace, name, del));
      }
      default:
        throw errors.methodNotAllowed(`${req.method} is not supported`);
    }
  }

  #target(path: string): Target | undefined {
    const m = /^\/(?:api\/v1|apis\/([^/]+)\/([^/]+))\/(.+)$/.exec(path);
    if (!m) return undefined;
    const group = m[1] ?? '';
    const version = m[2] ?? 'v1';
    const parts = m[3]!.split('/').map(decodeURIComponent);
    const find = (plural: string | undefined) => {
      const r = plural ? this.#api.resource(group, plural) : undefined;
      return r && r.version === version ? r : undefined;
    };
    if (parts[0] === 'namespaces' && parts.length >= 3) {
      const r = find(parts[2]);
      if (r?.namespaced) return { r, namespace: parts[1]!, name: parts[3], subresource: parts[4] };
    }
    const r = find(parts[0]);
    if (!r || parts.length > 3) return undefined;
    return { r, name: parts[1], subresource: parts[2] };
  }

  #body(req: ApiRequest): unknown {
    const raw = req.body ?? Buffer.alloc(0);
    if (raw.length > MAX_BODY)
      throw new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728');
    const type = (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim();
    const text = raw.toString('utf8');
    try {
      if (type.endsWith('yaml')) return parseYaml(text);
      if (type.endsWith('json')) return JSON.parse(text);
    } catch (err) {
      throw errors.badRequest(`the body of the request could not be decoded: ${(err as Error).message}`);
    }
    throw errors.unsupportedMediaType(type);
  }

  #watch(t: Target, q: URLSearchParams, sink: ResponseSink, table: string | undefined): void {
    const { r, namespace, name } = t;
    const s = selectors(q);
    if (name) s.fieldSelector = [s.fieldSelector, `metadata.name=${name}`].filter(Boolean).join(',');
    const encode = (ev: WatchEvent) =>
      `${JSON.stringify(
        table && ev.type !== 'BOOKMARK' && ev.type !== 'ERROR'
          ? {
              type: ev.type,
              object: this.#table(
                r,
                [ev.object as KObject],
                String((ev.object as KObject).metadata.resourceVersion),
                table,
              ),
            }
          : ev,
      )}\n`;
    const pending: string[] = [];
    let started = false;
    const send = (ev: WatchEvent) => {
      if (started) sink.write(encode(ev));
      else pending.push(encode(ev));
    };
    const stop = this.#api.watch(
      r,
      namespace,
      {
        ...s,
        ...(q.get('resourceVersion') !== null ? { resourceVersion: q.get('resourceVersion')! } : {}),
        sendInitialEvents: q.get('sendInitialEvents') === 'true',
      },
      send,
    );
    sink.head(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    started = true;
    for (const p of pending) sink.write(p);
    const bookmarks =
      q.get('allowWatchBookmarks') === 'true'
        ? setInterval(
            () =>
              sink.write(
                encode({
                  type: 'BOOKMARK',
                  object: {
                    kind: r.kind,
                    apiVersion: apiVersionOf(r),
                    metadata: { resourceVersion: String(this.#api.store.resourceVersion) },
                  },
                }),
              ),
            BOOKMARK_INTERVAL_MS,
          )
        : undefined;
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      stop();
      if (bookmarks) clearInterval(bookmarks);
      clearTimeout(timer);
      sink.end();
    };
    const timer = setTimeout(finish, (timeout > 0 ? timeout : 1800) * 1000);
    timer.unref();
    bookmarks?.unref();
    sink.onClose(finish);
  }

  #table(r: ResourceType, items: KObject[], resourceVersion: string, include: string): JsonObject {
    const now = Date.now();
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: { resourceVersion },
      columnDefinitions: r.columns.map((c) => ({
        name: c.name,
        type: c.type === 'date' ? 'string' : c.type,
        format: c.format ?? '',
        description: c.description ?? '',
        priority: c.priority,
      })),
      rows: items.map((o) => ({
        cells: r.columns.map((c) => c.cell(o, now)),
        ...(include === 'None'
          ? {}
          : {
              object:
                include === 'Object'
                  ? o
                  : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
            }),
      })),
    };
  }

  /**
   * OpenAPI v3 discovery, as much as kubectl needs: per group-version, the PATCH operation
   * of each kind declaring the `fieldValidation` parameter, so kubectl leaves validation to
   * this server (`--validate=strict` becomes `fieldValidation=Strict`). No schemas are
   * published: kubectl then computes apply patches from its own types, as it does offline.
   */
  #openapiRoot(): JsonObject {
    const paths: Record<string, JsonObject> = {};
    for (const r of this.#api.resources()) {
      const gv = r.group ? `apis/${r.group}/${r.version}` : 'api/v1';
      const hash = createHash('sha256')
        .update(JSON.stringify(this.#openapiGroupVersion(gv)))
        .digest('hex')
        .slice(0, 32)
        .toUpperCase();
      paths[gv] = { serverRelativeURL: `/openapi/v3/${gv}?hash=${hash}` };
    }
    return { paths };
  }

  #openapiGroupVersion(gv: string): JsonObject {
    const [, group, version] = gv === 'api/v1' ? ['', '', 'v1'] : gv.split('/');
    const rs = this.#api.resources().filter((r) => r.group === group && r.version === version);
    if (rs.length === 0)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const params = ['dryRun', 'fieldManager', 'fieldValidation', 'force'].map((name) => ({
      name,
      in: 'query',
      schema: { type: name === 'force' ? 'boolean' : 'string', uniqueItems: true },
    }));
    const paths: Record<string, JsonObject> = {};
    for (const r of rs) {
      const base = r.group ? `/apis/${r.group}/${r.version}` : '/api/v1';
      const item = r.namespaced
        ? `${base}/namespaces/{namespace}/${r.plural}/{name}`
        : `${base}/${r.plural}/{name}`;
      const gvk = { group: r.group, version: r.version, kind: r.kind };
      paths[item] = {
        patch: {
          operationId: `patch${r.kind}`,
          parameters: params,
          'x-kubernetes-action': 'patch',
          'x-kubernetes-group-version-kind': gvk,
          responses: { '200': { description: 'OK' } },
        },
      };
    }
    return {
      openapi: '3.0.0',
      info: { title: 'Kubernetes', version: SERVER_VERSION.gitVersion },
      paths,
      components: { schemas: {} },
    };
  }

  #groups(): JsonObject {
    const byGroup = new Map<string, Set<string>>();
    for (const r of this.#api.resources()) {
      if (!r.group) continue;
      const v = byGroup.get(r.group) ?? new Set<string>();
      byGroup.set(r.group, v);
      v.add(r.version);
    }
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [...byGroup.entries()].map(([name, versions]) => {
        const vs = [...versions].map((version) => ({ groupVersion: `${name}/${version}`, version }));
        return { name, versions: vs, preferredVersion: vs[0] };
      }),
    };
  }

  #resourceList(group: string, version: string): JsonObject {
    const rs = this.#api.resources().filter((r) => r.group === group && r.version === version);
    if (rs.length === 0)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const verbs = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
    const resources: JsonObject[] = [];
    for (const r of rs) {
      resources.push({
        name: r.plural,
        singularName: r.singular,
        namespaced: r.namespaced,
        kind: r.kind,
        verbs,
        ...(r.shortNames.length ? { shortNames: r.shortNames } : {}),
        ...(r.categories.length ? { categories: r.categories } : {}),
      });
      if (r.statusSubresource)
        resources.push({
          name: `${r.plural}/status`,
          singularName: '',
          namespaced: r.namespaced,
          kind: r.kind,
          verbs: ['get', 'patch', 'update'],
        });
      if (r.kind === 'Pod') {
        resources.push({ name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] });
        resources.push({
          name: 'pods/exec',
          singularName: '',
          namespaced: true,
          kind: 'PodExecOptions',
          verbs: ['create', 'get'],
        });
        resources.push({
          name: 'pods/binding',
          singularName: '',
          namespaced: true,
          kind: 'Binding',
          verbs: ['create'],
        });
      }
    }
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: group ? `${group}/${version}` : version,
      resources,
    };
  }
}

function selectors(q: URLSearchParams): { labelSelector?: string; fieldSelector?: string } {
  return {
    ...(q.get('labelSelector') ? { labelSelector: q.get('labelSelector')! } : {}),
    ...(q.get('fieldSelector') ? { fieldSelector: q.get('fieldSelector')! } : {}),
  };
}

function patchType(contentType: string | undefined): PatchType {
  const t = (contentType ?? '').split(';')[0]!.trim();
  switch (t) {
    case 'application/json-patch+json':
      return 'json';
    case 'application/merge-patch+json':
      return 'merge';
    case 'application/strategic-merge-patch+json':
      return 'strategic';
    case 'application/apply-patch+yaml':
    case 'application/apply-patch+cbor':
      return 'apply';
    default:
      throw errors.unsupportedMediaType(t);
  }
}

export interface ListenOptions {
  host: string | string[];
  port: number;
  key: string;
  cert: string;
  token: string;
}

/** Serves the handler over HTTPS on each host, requiring the bearer token (health checks excepted). */
export async function listen(
  handler: ApiHandler,
  o: ListenOptions,
): Promise<{ servers: Server[]; port: number; close(): Promise<void> }> {
  const expected = Buffer.from(`Bearer ${o.token}`);
  const serve = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size <= MAX_BODY + 1) chunks.push(c as Buffer);
    }
    const sink: ResponseSink = {
      head: (status, headers) => {
        res.writeHead(status, headers);
        // A watch may have nothing to say for a while: the client must see its headers now.
        if (headers['transfer-encoding'] === 'chunked') res.flushHeaders();
      },
      write: (chunk) => void res.write(chunk),
      end: (chunk) => void res.end(chunk),
      onClose: (fn) => res.on('close', fn),
    };
    const path = (req.url ?? '/').split('?')[0];
    const auth = Buffer.from(req.headers.authorization ?? '');
    const open = path === '/healthz' || path === '/livez' || path === '/readyz';
    if (!open && (auth.length !== expected.length || !timingSafeEqual(auth, expected))) {
      json(sink, 401, errors.unauthorized().toStatus());
      return;
    }
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    await handler.handle(
      { method: req.method ?? 'GET', url: req.url ?? '/', headers, body: Buffer.concat(chunks) },
      sink,
    );
  };
  const hosts = Array.isArray(o.host) ? o.host : [o.host];
  const servers: Server[] = [];
  let port = o.port;
  for (const host of hosts) {
    const server = createHttpsServer({ key: o.key, cert: o.cert }, (req, res) => void serve(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
      const auth = Buffer.from(req.headers.authorization ?? '');
      if (auth.length !== expected.length || !timingSafeEqual(auth, expected)) {
        socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n\r\nUnauthorized\n');
        return;
      }
      handler.upgrade(req, socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    port = (server.address() as AddressInfo).port;
    servers.push(server);
  }
  return {
    servers,
    port,
    close: async () => {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise<void>((r) => s.close(() => r()));
      }
    },
  };
}
