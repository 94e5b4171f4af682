/**
 * The lab's stand-in for a container image: an HTTP server on every port it is given that
 * answers any method and path with 200 and a JSON document naming the pod, the container,
 * the request's method and path and its Host header. Connections are kept alive. Each
 * request is logged to stdout, so `logs` shows the traffic.
 *
 * Run as `node serve.js '{"pod":"web","namespace":"prod","container":"c","ports":[8080]}'`.
 */
import { createServer, type Server } from 'node:http';

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
const servers: Server[] = config.ports.map((port) => {
  const server = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({
      pod: config.pod,
      namespace: config.namespace,
      container: config.container,
      method: req.method,
      path: req.url,
      host: req.headers.host ?? '',
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) + 1 });
    res.end(`${body}\n`);
    const from = req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    process.stdout.write(`${new Date().toISOString()} ${from} ${req.method} ${req.url} :${port}\n`);
  });
  server.keepAliveTimeout = 65_000;
  server.on('error', (err) => {
    process.stderr.write(`serve: port ${port}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(port, () => process.stdout.write(`listening on :${port}\n`));
  return server;
});

process.on('SIGTERM', () => {
  for (const s of servers) {
    s.close();
    s.closeAllConnections();
  }
  process.exitCode = 0;
});
