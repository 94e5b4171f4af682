/**
 * The HTTP proxy that enforces L7 rules. Connections arrive redirected by the datapath
 * with their original destination kept (so `socket.localAddress/localPort` name the
 * server the client meant); `resolve` tells which rule set and which identities apply.
 * Parsing is Node's own strict HTTP/1.1 parser (llhttp): a request with both
 * Content-Length and Transfer-Encoding, a malformed request line or oversized headers is
 * answered 400/431 and the connection closed, before any rule or upstream sees it.
 * A denied request is answered `403 Forbidden` / `Access denied` and the connection
 * stays usable; allowed ones are streamed to the original destination over keep-alive.
 */
import {
  Agent,
  createServer,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import type { CompiledRuleSet, HeaderEdit, HttpRequestView } from '../../policy/http.js';

export interface ProxyTarget {
  /** Where the client was going. */
  host: string;
  port: number;
  rules: CompiledRuleSet;
  /** The identity rules are matched against (the source for ingress rules). */
  peerIdentity: number;
}

/** One L7 record per request and per response, as Hubble shows them. */
export interface HttpRecord {
  type: 'request' | 'response';
  verdict: 'forwarded' | 'denied' | 'error';
  method: string;
  url: string;
  protocol: string;
  /** Response code (responses and denials). */
  code?: number;
  /** Request to response, nanoseconds. */
  latencyNs?: number;
  source: { ip: string; port: number };
  destination: { ip: string; port: number };
  peerIdentity?: number;
  headers: [string, string][];
  /** Why: the rule that allowed, or the parse error. */
  reason?: string;
}

export interface HttpProxyOptions {
  resolve(socket: Socket): ProxyTarget | undefined;
  onRecord?(r: HttpRecord): void;
  /** Largest request head accepted (bytes); larger gets 431. */
  maxHeaderSize?: number;
}

const DENIED_BODY = 'Access denied\r\n';

function view(req: IncomingMessage): HttpRequestView {
  const headers = new Map<string, string[]>();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), req.rawHeaders[i + 1]!]);
  }
  const url = req.url ?? '/';
  // Origin-form (/path?q) from transparent clients; absolute-form from explicit proxies.
  let path = url;
  let host = req.headers.host ?? '';
  if (/^https?:\/\//i.test(url)) {
    const u = new URL(url);
    path = u.pathname;
    host = u.host;
  } else {
    const q = url.indexOf('?');
    if (q >= 0) path = url.slice(0, q);
  }
  return { method: req.method ?? '', path, host, headers };
}

function applyEdits(headers: Record<string, string | string[] | undefined>, edits: HeaderEdit[]): void {
  for (const e of edits) {
    if (e.kind === 'delete') delete headers[e.name];
    else if (e.kind === 'replace') headers[e.name] = e.value;
    else {
      const cur = headers[e.name];
      headers[e.name] = cur === undefined ? e.value : [...(Array.isArray(cur) ? cur : [cur]), e.value];
    }
  }
}

function endpoints(socket: Socket) {
  return {
    source: { ip: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
    destination: { ip: socket.localAddress ?? '', port: socket.localPort ?? 0 },
  };
}

export interface HttpProxy {
  readonly server: Server;
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
}

export function createHttpProxy(o: HttpProxyOptions): HttpProxy {
  const agents = new Map<string, Agent>();
  const agentFor = (host: string, port: number) => {
    const key = `${host}:${port}`;
    let a = agents.get(key);
    if (!a) {
      a = new Agent({ keepAlive: true, maxSockets: 256 });
      agents.set(key, a);
    }
    return a;
  };
  const record = (r: HttpRecord) => o.onRecord?.(r);

  const server = createServer(
    // The Host check is ours (not Node's) so that refusals are recorded like the others.
    { maxHeaderSize: o.maxHeaderSize ?? 16 * 1024, insecureHTTPParser: false, requireHostHeader: false },
    (req: IncomingMessage, res: ServerResponse) => {
      const started = process.hrtime.bigint();
      const socket = req.socket;
      const ends = endpoints(socket);
      const target = o.resolve(socket);
      const v = view(req);
      const base = {
        method: v.method,
        url: req.url ?? '',
        protocol: `HTTP/${req.httpVersion}`,
        ...ends,
        headers: Object.entries(req.headers).flatMap(([k, val]) =>
          Array.isArray(val)
            ? val.map((x): [string, string] => [k, x])
            : val === undefined
              ? []
              : [[k, val] as [string, string]],
        ),
      };
      if (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1 && !req.headers.host) {
        req.resume();
        res.writeHead(400, { connection: 'close', 'content-length': 0 }).end();
        res.on('finish', () => socket.destroy());
        record({
          ...base,
          type: 'request',
          verdict: 'denied',
          code: 400,
          reason: 'HTTP/1.1 request without Host',
        });
        return;
      }
      if (!target) {
        // Nothing says where this connection may go: refuse rather than guess.
        req.resume();
        res.writeHead(503, { 'content-type': 'text/plain' }).end('No redirect for this connection\r\n');
        record({ ...base, type: 'response', verdict: 'error', code: 503, reason: 'no redirect' });
        return;
      }
      const verdict = target.rules.match(target.peerIdentity, v);
      if (!verdict.allowed) {
        req.resume();
        res.writeHead(403, {
          'content-type': 'text/plain',
          'content-length': Buffer.byteLength(DENIED_BODY),
        });
        res.end(DENIED_BODY);
        record({ ...base, type: 'request', verdict: 'denied', code: 403, peerIdentity: target.peerIdentity });
        return;
      }
      record({ ...base, type: 'request', verdict: 'forwarded', peerIdentity: target.peerIdentity });
      const headers: Record<string, string | string[] | undefined> = { ...req.headers };
      applyEdits(headers, verdict.edits);
      const up = request({
        host: target.host,
        port: target.port,
        method: req.method,
        path: req.url,
        headers,
        agent: agentFor(target.host, target.port),
        setHost: false,
      });
      up.on('response', (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.rawHeaders);
        ur.pipe(res);
        record({
          ...base,
          type: 'response',
          verdict: 'forwarded',
          code: ur.statusCode ?? 0,
          latencyNs: Number(process.hrtime.bigint() - started),
          peerIdentity: target.peerIdentity,
        });
      });
      up.on('error', (err) => {
        if (!res.headersSent) {
          res
            .writeHead(503, { 'content-type': 'text/plain' })
            .end('upstream connect error or disconnect/reset before headers\r\n');
        } else {
          res.destroy(err);
        }
        record({
          ...base,
          type: 'response',
          verdict: 'error',
          code: 503,
          reason: err.message,
          peerIdentity: target.peerIdentity,
        });
      });
      req.pipe(up);
    },
  );

  // Requests the parser rejects never reach the handler: answer and close, and record it.
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket) => {
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const reason = code === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
    if (socket.writable)
      socket.end(`HTTP/1.1 ${code} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    else socket.destroy();
    record({
      type: 'request',
      verdict: 'denied',
      method: '',
      url: '',
      protocol: 'HTTP/1.1',
      code,
      ...endpoints(socket),
      headers: [],
      reason: `${err.code ?? 'parse error'}: ${err.message}`,
    });
  });

  return {
    server,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const addr = server.address();
          resolve(typeof addr === 'object' && addr ? addr.port : port);
        });
      }),
    close: async () => {
      server.closeAllConnections();
      for (const a of agents.values()) a.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
