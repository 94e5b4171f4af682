/**
 * The agent API: HTTP+JSON on a root-only unix socket. `handle` serves a request without
 * a socket (tests call it directly); `serveApi` puts it on the socket.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { dirname } from 'node:path';
import { ifindexOf } from '../bpf/index.js';
import { errorMessage, ValidationError } from '../errors.js';
import { type GetFlowsRequest, type RingQuery, toResponse, toRingQuery } from '../hubble/index.js';
import { trace } from '../policy/index.js';
import type { Agent, EndpointRequest } from './agent.js';
import { IpamExhaustedError } from './ipam.js';

export function eventTypeName(t: number): string {
  return t === 1 ? 'drop' : t === 4 ? 'trace' : t === 5 ? 'policy-verdict' : `type-${t}`;
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

function need(o: Record<string, unknown>, field: string, type: 'string' | 'number'): void {
  if (typeof o[field] !== type) throw new ValidationError('request', field, `is required (${type})`);
}

export function handle(agent: Agent, method: string, path: string, body: unknown): ApiResponse {
  try {
    const parts = path.split('?')[0]!.split('/').filter(Boolean); // ['v1', 'endpoints', id]
    if (parts[0] !== 'v1') return { status: 404, body: { error: `no route ${path}` } };
    const route = `${method} /${parts.slice(0, 2).join('/')}${parts[2] ? '/:id' : ''}`;
    const id = parts[2] ? decodeURIComponent(parts[2]) : '';
    switch (route) {
      case 'GET /v1/healthz':
        return { status: 200, body: { ok: true } };
      case 'GET /v1/status':
        return { status: 200, body: agent.status() };
      case 'POST /v1/ipam': {
        const o = (body ?? {}) as Record<string, unknown>;
        need(o, 'owner', 'string');
        const ip = agent.ipam.allocate(o.owner as string);
        return { status: 201, body: { ip, gateway: agent.ipam.gateway, cidr: agent.ipam.cidr } };
      }
      case 'DELETE /v1/ipam/:id':
        return { status: 200, body: { released: agent.ipam.release(id) } };
      case 'GET /v1/endpoints':
        return { status: 200, body: agent.endpoints() };
      case 'GET /v1/services':
        return { status: 200, body: agent.services() };
      case 'GET /v1/identities':
        return { status: 200, body: agent.repo.identities().map(([id, labels]) => ({ id, labels })) };
      case 'GET /v1/policy':
        return { status: 200, body: agent.repo.policies() };
      case 'POST /v1/policy': {
        // /v1/policy/trace
        if (parts[2] !== undefined) return { status: 404, body: { error: `no route ${path}` } };
        return { status: 405, body: { error: 'policies come from the manifests directory' } };
      }
      case 'POST /v1/policy/:id': {
        if (id !== 'trace') return { status: 404, body: { error: `no route ${path}` } };
        const o = (body ?? {}) as Record<string, unknown>;
        const side = (name: string) => {
          const ref = o[name];
          if (typeof ref !== 'string')
            throw new ValidationError('request', name, 'an endpoint id or container id is required');
          const ep = agent.endpoint(ref);
          if (!ep) throw new ValidationError('request', name, `no endpoint ${ref}`);
          return {
            id: ep.id,
            namespace: ep.podNamespace,
            identity: ep.identity,
            labels: ep.labels,
            name: `${ep.podNamespace}/${ep.podName}`,
          };
        };
        need(o, 'dport', 'number');
        const protocol = typeof o.protocol === 'number' ? o.protocol : 6;
        const http = o.http as { method: string; path: string } | undefined;
        return {
          status: 200,
          body: trace(agent.repo, {
            src: side('src'),
            dst: side('dst'),
            dport: o.dport as number,
            protocol,
            ...(http ? { http } : {}),
          }),
        };
      }
      case 'GET /v1/fqdn/:id': {
        if (id !== 'cache') return { status: 404, body: { error: `no route ${path}` } };
        return { status: 200, body: agent.fqdn.cache() };
      }
      case 'GET /v1/endpoints/:id': {
        const ep = agent.endpoint(id);
        return ep ? { status: 200, body: ep } : { status: 404, body: { error: `no endpoint ${id}` } };
      }
      case 'PUT /v1/endpoints/:id': {
        const o = (body ?? {}) as Record<string, unknown>;
        for (const f of ['ifname', 'netns', 'podNamespace', 'podName', 'ip', 'hostIfname'] as const)
          need(o, f, 'string');
        // The agent runs in the node's namespace: it can resolve the veth itself.
        const hostIfindex =
          typeof o.hostIfindex === 'number' ? o.hostIfindex : ifindexOf(o.hostIfname as string);
        const req = { ...(o as unknown as EndpointRequest), hostIfindex, containerId: id };
        return { status: 200, body: agent.addEndpoint(req) };
      }
      case 'DELETE /v1/endpoints/:id': {
        const ep = agent.removeEndpoint(id);
        return { status: 200, body: { removed: ep !== undefined } };
      }
      default:
        return { status: 404, body: { error: `no route ${method} ${path}` } };
    }
  } catch (err) {
    if (err instanceof ValidationError)
      return { status: 400, body: { error: err.message, field: err.field } };
    if (err instanceof IpamExhaustedError) return { status: 507, body: { error: err.message } };
    return { status: 500, body: { error: errorMessage(err) } };
  }
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new ValidationError('request', 'body', 'is not JSON');
  }
}

/** Serves the API on a unix socket only root can reach (0600 in a 0700 directory). */
export function serveApi(agent: Agent, socket: string): Promise<Server> {
  mkdirSync(dirname(socket), { recursive: true, mode: 0o700 });
  chmodSync(dirname(socket), 0o700);
  rmSync(socket, { force: true });
  const server = createServer(async (req, res) => {
    // The monitor streams events as NDJSON until the client goes away.
    if (req.method === 'GET' && (req.url ?? '').startsWith('/v1/monitor')) {
      const types = new URL(req.url ?? '', 'http://x').searchParams.getAll('type');
      const ac = new AbortController();
      res.on('close', () => ac.abort());
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      agent.subscribe((ev) => {
        if (types.length && !types.includes(eventTypeName(ev.type))) return;
        res.write(
          `${JSON.stringify(ev, (_k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v))}\n`,
        );
      }, ac.signal);
      return;
    }
    // Flows (Hubble's GetFlows, as JSON): the request in the body, NDJSON responses back;
    // with follow, until the client goes away. A slow reader skips ahead (lost events), so
    // the agent never buffers for it.
    if (req.method === 'POST' && req.url === '/v1/flows') {
      const ac = new AbortController();
      res.on('close', () => ac.abort());
      let query: RingQuery;
      try {
        const body = ((await readBody(req)) ?? {}) as Partial<GetFlowsRequest>;
        query = toRingQuery(
          { number: 0, first: false, follow: false, whitelist: [], blacklist: [], ...body },
          ac.signal,
        );
      } catch (err) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify({ error: errorMessage(err) })}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      try {
        for await (const e of agent.flows.ring.read(query)) {
          if (!res.write(`${JSON.stringify(toResponse(e, agent.config.node))}\n`))
            await new Promise((r) => res.once('drain', r));
        }
      } catch (err) {
        if (!ac.signal.aborted) res.write(`${JSON.stringify({ error: errorMessage(err) })}\n`);
      }
      res.end();
      return;
    }
    let r: ApiResponse;
    try {
      r = handle(agent, req.method ?? 'GET', req.url ?? '/', await readBody(req));
    } catch (err) {
      r = { status: 400, body: { error: errorMessage(err) } };
    }
    res.writeHead(r.status, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(r.body)}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      chmodSync(socket, 0o600);
      resolve(server);
    });
  });
}
