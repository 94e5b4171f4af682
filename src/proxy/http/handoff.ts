/**
 * HTTP/2 connections the native workers (src/proxy/http/native) hand to a Node.js one,
 * which has node:http2: a unix socket per direction, root only (the line it trusts names
 * the client, so no other local process may write one), whose connections open with a
 * PROXY protocol v1 line naming the client and the original destination; the rest is the
 * client's bytes. Past the line the socket is, to the proxy, the redirected connection
 * itself: its addresses are the line's.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, isIPv4, type Server, type Socket } from 'node:net';

/** The longest PROXY v1 line (the specification's 107 bytes with its CRLF). */
const MAX_LINE = 107;
const LINE = /^PROXY TCP4 (\S+) (\S+) (\d{1,5}) (\d{1,5})$/;

/** The socket paths the native workers connect to (proxy.c handoff()). */
export function handoffPath(dir: string, direction: 'egress' | 'ingress'): string {
  return `${dir}/h2-${direction}.sock`;
}

interface Ends {
  source: { ip: string; port: number };
  destination: { ip: string; port: number };
}

/** The addresses of a PROXY v1 line, or undefined if it is not one (TCP4 only). */
export function parseProxyLine(line: string): Ends | undefined {
  const m = LINE.exec(line);
  if (!m) return undefined;
  const [, src = '', dst = '', sport = '', dport = ''] = m;
  const ports = [Number(sport), Number(dport)];
  if (!isIPv4(src) || !isIPv4(dst) || ports.some((p) => p < 1 || p > 65535)) return undefined;
  return { source: { ip: src, port: ports[0]! }, destination: { ip: dst, port: ports[1]! } };
}

/**
 * Listens on `path`; each connection, once its PROXY line is read, goes to `serve` with
 * the line's addresses as its own. A connection without a valid line is closed.
 */
export function listenHandoff(path: string, serve: (socket: Socket) => void): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((socket) => {
    socket.on('error', () => {});
    let head: Buffer = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      head = head.length ? Buffer.concat([head, d]) : d;
      const end = head.indexOf('\r\n');
      if (end < 0) {
        if (head.length >= MAX_LINE) socket.destroy();
        return;
      }
      socket.off('data', onData);
      socket.pause();
      const ends = end < MAX_LINE ? parseProxyLine(head.subarray(0, end).toString('latin1')) : undefined;
      if (!ends) {
        socket.destroy();
        return;
      }
      // Own properties shadow net.Socket's getters: resolve() and the records read these.
      Object.defineProperties(socket, {
        remoteAddress: { value: ends.source.ip },
        remotePort: { value: ends.source.port },
        remoteFamily: { value: 'IPv4' },
        localAddress: { value: ends.destination.ip },
        localPort: { value: ends.destination.port },
      });
      const rest = head.subarray(end + 2);
      if (rest.length) socket.unshift(rest);
      serve(socket);
      // Paused to take the line off; the proxy reads on from here.
      socket.resume();
    };
    socket.on('data', onData);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      chmodSync(path, 0o600);
      resolve(server);
    });
  });
}
