/**
 * `hypha ui`'s HTTP server (node:http): the static UI from `ui/` and the API of api.ts,
 * its flows from the relay's Observer API. Bound to a loopback address it answers only
 * requests addressed to a loopback name, so a web page elsewhere cannot read the
 * cluster's flows through DNS rebinding.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../errors.js';
import { type ApiResponse, UiApi } from './api.js';
import { RelayFeed } from './feed.js';
import { FlowStore, type FlowStoreOptions } from './store.js';

export interface UiServerOptions extends FlowStoreOptions {
  /** The relay's Observer API, `host:port` or `unix:///path` (default 127.0.0.1:4245). */
  relay?: string;
  /** Default 127.0.0.1. */
  address?: string;
  /** Default 12000; 0 for any free port. */
  port?: number;
  /** Folder of the static UI (default: the repository's `ui/`). */
  staticDir?: string;
  log?: (line: string) => void;
}

export interface UiServer {
  /** e.g. http://127.0.0.1:12000 */
  url: string;
  address: string;
  port: number;
  api: UiApi;
  store: FlowStore;
  close(): Promise<void>;
}

/** The repository's `ui/` folder, from `dist/src/ui` (built) or `src/ui`. */
export function uiDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '../../../ui'), join(here, '../../ui')];
  const dir = candidates.find((d) => existsSync(join(d, 'index.html')));
  if (!dir) throw new Error(`the UI's files were not found (looked in ${candidates.join(', ')})`);
  return dir;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]']);

function isLoopback(address: string): boolean {
  return address === 'localhost' || address === '::1' || address.startsWith('127.');
}

export async function startUiServer(o: UiServerOptions = {}): Promise<UiServer> {
  const log = o.log ?? (() => {});
  const address = o.address ?? '127.0.0.1';
  const port = o.port ?? 12000;
  if (address !== 'localhost' && isIP(address) === 0)
    throw new Error(`address "${address}" is not an IP address`);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`port ${port} is not a port number (0 to 65535)`);
  const staticDir = resolve(o.staticDir ?? uiDir());
  const store = new FlowStore(o);
  const feed = new RelayFeed(o.relay ?? '127.0.0.1:4245', store, { log });
  const api = new UiApi({ store, feed });
  const checkHost = isLoopback(address);

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log(`${req.method} ${req.url}: ${errorMessage(err)}`);
      if (!res.headersSent) send(res, { status: 500, body: { error: 'internal error' } });
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const rawUrl = req.url ?? '/';
    if (checkHost) {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
      if (!LOOPBACK_NAMES.has(host) && !host.startsWith('127.'))
        return send(res, { status: 421, body: { error: `host "${host}" is not this server's` } });
    }
    const path = rawUrl.split('?', 1)[0]!;
    if (path === '/api/events' && method === 'GET') {
      const s = api.stream(rawUrl);
      if (!('start' in s)) return send(res, s);
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        ...SECURITY_HEADERS,
      });
      res.flushHeaders();
      s.start(res);
      return;
    }
    if (path.startsWith('/api/')) return send(res, await api.request(method, rawUrl), method === 'HEAD');
    return serveStatic(res, method, path);
  }

  function serveStatic(res: ServerResponse, method: string, path: string): void {
    const file = staticFile(method, path);
    if ('status' in file) {
      send(res, file);
      return;
    }
    const body = readFileSync(file.path);
    res.writeHead(200, {
      'content-type': file.type,
      'content-length': body.length,
      'cache-control': 'no-cache',
      ...SECURITY_HEADERS,
    });
    res.end(method === 'HEAD' ? undefined : body);
  }

  /** The file a path names inside the UI's folder, or the error to answer. */
  function staticFile(method: string, path: string): { path: string; type: string } | ApiResponse {
    if (method !== 'GET' && method !== 'HEAD') return { status: 405, body: { error: `${method}: only GET` } };
    const invalid = { status: 400, body: { error: `"${path}" is not a valid path` } };
    let rel: string;
    try {
      rel = decodeURIComponent(path);
    } catch {
      return invalid;
    }
    if (rel.includes('\0') || rel.split('/').includes('..')) return invalid;
    if (rel.endsWith('/')) rel += 'index.html';
    const file = resolve(staticDir, `.${rel}`);
    const type = TYPES[extname(file)];
    if (!file.startsWith(staticDir + sep) || !type || !existsSync(file) || !statSync(file).isFile())
      return { status: 404, body: { error: `${path}: not found` } };
    return { path: file, type };
  }

  await new Promise<void>((resolveListen, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(
        new Error(
          err.code === 'EADDRINUSE'
            ? `${address}:${port} is already in use (another hypha ui, or a lab's UI?)`
            : `cannot listen on ${address}:${port}: ${err.message}`,
          { cause: err },
        ),
      );
    };
    const onListening = () => {
      server.off('error', onError);
      resolveListen();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, address);
  }).catch((err: unknown) => {
    feed.close();
    throw err;
  });
  feed.start();

  const bound = server.address();
  const actualPort = typeof bound === 'object' && bound ? bound.port : port;
  const host = isIP(address) === 6 ? `[${address}]` : address;
  return {
    url: `http://${host}:${actualPort}`,
    address,
    port: actualPort,
    api,
    store,
    close: () => closeServer(server, api, feed),
  };
}

function send(res: ServerResponse, r: ApiResponse, headOnly = false): void {
  const body = JSON.stringify(r.body);
  res.writeHead(r.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...SECURITY_HEADERS,
  });
  res.end(headOnly ? undefined : body);
}

async function closeServer(server: Server, api: UiApi, feed: RelayFeed): Promise<void> {
  feed.close();
  api.close();
  await new Promise<void>((resolveClose) => {
    server.close(() => resolveClose());
    // Event streams and keep-alive connections never end by themselves.
    server.closeAllConnections();
  });
}
