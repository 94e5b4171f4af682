/**
 * The lab's stand-in for a container image: an HTTP server on every port it is given that
 * answers any method and path with 200 and a JSON document naming the pod, the container,
 * the request's method and path, its Host header (or HTTP/2 authority) and protocol.
 * Connections are kept alive; HTTP/1.x and HTTP/2 with prior knowledge (h2c) share each
 * port, told apart by the connection's first bytes; a WebSocket upgrade request is answered
 * 101 and the connection echoes its bytes. Each request is logged to stdout, so
 * `logs` shows the traffic.
 *
 * Run as `node serve.js '{"pod":"web","namespace":"prod","container":"c","ports":[8080]}'`.
 */
import { createServer as http1, type IncomingMessage, type ServerResponse } from 'node:http';
import { type Http2ServerRequest, type Http2ServerResponse, createServer as http2 } from 'node:http2';
import { type Server, type Socket, createServer as tcp } from 'node:net';
import { sniffPreface } from '../../proxy/http/h2.js';

interface Config {
  pod: string;
  namespace: string;
  container: string;
  ports: number[];
}

function parseConfig(text: string | undefined): Config {
  const c = JSON.parse(text ?? '') as Partial<Config>;
  const ok =
    typeof c.pod === 'string' &&
    typeof c.namespace === 'string' &&
    typeof c.container === 'string' &&
    Array.isArray(c.ports) &&
    c.ports.every((p) => Number.isInteger(p) && p > 0 && p < 65536);
  if (!ok) throw new Error(`serve: bad configuration ${text}`);
  return c as Config;
}

const config = parseConfig(process.argv[2]);
/** What the server answers: who it is and what it was asked. */
function document(req: IncomingMessage | Http2ServerRequest) {
  const h2 = req.httpVersionMajor === 2;
  return {
    pod: config.pod,
    namespace: config.namespace,
    container: config.container,
    method: req.method,
    path: req.url,
    host: (h2 ? (req as Http2ServerRequest).authority : req.headers.host) ?? '',
    protocol: `HTTP/${req.httpVersion}`,
  };
}

const servers: { server: Server; open: Set<Socket> }[] = config.ports.map((port) => {
  const handle = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
    req.resume();
    const body = JSON.stringify(document(req));
    (res as ServerResponse).writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body) + 1,
    });
    res.end(`${body}\n`);
    const from = req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    process.stdout.write(`${new Date().toISOString()} ${from} ${req.method} ${req.url} :${port}\n`);
  };
  const one = http1(handle);
  one.keepAliveTimeout = 65_000;
  // A WebSocket upgrade switches the connection to an echo of its bytes (no framing: the
  // lab has no WebSocket application); any other upgrade (h2c...) is declined, answered as
  // HTTP/1.1 on a connection that then closes.
  one.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    if (!/(^|,)\s*websocket\s*(,|$)/i.test(req.headers.upgrade ?? '')) {
      const body = `${JSON.stringify(document(req))}\n`;
      socket.end(
        `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
      return;
    }
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    if (head.length) socket.write(head);
    socket.on('data', (d: Buffer) => socket.write(d));
    socket.on('end', () => socket.end());
    process.stdout.write(
      `${new Date().toISOString()} ${req.socket.remoteAddress ?? ''} UPGRADE ${req.url} :${port}\n`,
    );
  });
  const two = http2(handle);
  const open = new Set<Socket>();
  const server = tcp((socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    let head: Buffer = Buffer.alloc(0);
    const first = (d: Buffer) => {
      head = head.length ? Buffer.concat([head, d]) : d;
      const kind = sniffPreface(head);
      if (kind === undefined) return;
      socket.off('data', first);
      if (kind === 'h2') {
        // node:http2 reads what the socket buffered before its own reads.
        socket.pause();
        socket.unshift(head);
        two.emit('connection', socket);
      } else {
        // node:http's parser reads the socket natively once it has it: the bytes already
        // read reach it through its data listener.
        one.emit('connection', socket);
        socket.emit('data', head);
      }
    };
    socket.on('data', first);
    socket.on('error', () => {});
  });
  server.on('error', (err) => {
    process.stderr.write(`serve: port ${port}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(port, () => process.stdout.write(`listening on :${port}\n`));
  return { server, open };
});

// Stop: no new connections, and the open ones (kept alive, or tunnels) closed now, as a
// container's process that exits takes its connections with it.
process.on('SIGTERM', () => {
  for (const { server, open } of servers) {
    server.close();
    for (const socket of open) socket.destroy();
  }
  process.exitCode = 0;
});
