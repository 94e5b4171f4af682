/**
 * The lab's internet: HTTP and HTTPS servers for the world hosts, each bound to its own
 * documentation-range address in the world namespace. `ifconfig.me` answers with the
 * caller's source address (what the egress gateway section checks); every other host
 * answers with a small JSON document naming itself, the method, the path and the caller.
 */
import {
  createServer as createHttp,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttps } from 'node:https';
import type { WorldHost } from '../cluster/topology.js';

export interface WorldServerOptions {
  hosts: WorldHost[];
  tls: { cert: string; key: string };
  /** Ports to serve on (defaults 80 and 443). */
  httpPort?: number;
  httpsPort?: number;
  log?: (line: string) => void;
}

export interface RunningWorld {
  /** Bound addresses, `ip:port`, for messages and tests. */
  listening: string[];
  close(): Promise<void>;
}

function clientAddress(req: IncomingMessage): string {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

function handler(host: WorldHost, scheme: string, log?: (l: string) => void) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const client = clientAddress(req);
    log?.(`${scheme} ${host.name} ${req.method} ${req.url} from ${client}`);
    req.resume();
    if (host.name === 'ifconfig.me') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`${client}\n`);
      return;
    }
    const body = JSON.stringify({ host: host.name, method: req.method, path: req.url, client });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`${body}\n`);
  };
}

function listen(server: Server, port: number, ip: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function startWorld(o: WorldServerOptions): Promise<RunningWorld> {
  const servers: Server[] = [];
  const listening: string[] = [];
  try {
    for (const h of o.hosts) {
      const http = createHttp(handler(h, 'http', o.log));
      const https = createHttps({ cert: o.tls.cert, key: o.tls.key }, handler(h, 'https', o.log));
      for (const [s, port] of [
        [http, o.httpPort ?? 80],
        [https, o.httpsPort ?? 443],
      ] as const) {
        servers.push(s);
        await listen(s, port, h.ip);
        listening.push(`${h.ip}:${port}`);
      }
    }
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw err;
  }
  return {
    listening,
    close: async () => {
      for (const s of servers) s.closeAllConnections?.();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    },
  };
}
