import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as connectHttp2,
  createServer as createHttp2Server,
  type Http2Server,
} from 'node:http2';
import { connect, createServer as netServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { CompiledRuleSet, type HttpRule } from '../../src/policy/http.js';
import { F_DROPPED, F_EGRESS, F_RESPONSE, packHeaders, unpackEvent } from '../../src/proxy/http/events.js';
import {
  MARK_MAGIC_PROXY_EGRESS,
  MARK_MAGIC_PROXY_INGRESS,
  upstreamMark,
} from '../../src/proxy/http/main.js';
import { createHttpProxy, type HttpProxy, type HttpRecord } from '../../src/proxy/http/proxy.js';
import { type ProxyEndpoint, RedirectTable } from '../../src/proxy/http/rules.js';
import { PROXY_ENGINES, type ProxyUnderTest } from '../helpers/proxies.js';

const run = promisify(execFile);

const FRONTEND = 1001;
const OTHER = 1002;

// The tutorial's section 5.3 rule: from frontend, GET /api/v1/products.* only.
const RULES: Record<number, HttpRule[]> = {
  [FRONTEND]: [
    { method: 'GET', path: '/api/v1/products.*' },
    { method: 'HEAD', path: '/api/v1/products.*' },
  ],
  [OTHER]: [
    {
      method: 'PUT',
      path: '/admin',
      headers: ['X-Token: s3cret'],
      headerMatches: [{ name: 'X-Trace', value: 'on', mismatch: 'ADD' }],
    },
  ],
};
const rules = new CompiledRuleSet({
  groups: Object.entries(RULES).map(([id, r]) => ({ identities: [Number(id)], rules: r })),
});

/** Sends raw bytes on one connection and collects what comes back until it goes quiet. */
class RawClient {
  readonly sock: Socket;
  buf = '';
  closed = false;
  constructor(port: number) {
    this.sock = connect(port, '127.0.0.1');
    this.sock.on('data', (d) => (this.buf += d.toString()));
    this.sock.on('close', () => (this.closed = true));
    this.sock.on('error', () => {});
  }
  async send(text: string, waitFor: RegExp): Promise<string> {
    const start = this.buf.length;
    this.sock.write(text);
    for (let i = 0; i < 200 && !waitFor.test(this.buf.slice(start)) && !this.closed; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.buf.slice(start);
  }
}

for (const engine of PROXY_ENGINES)
  describe(`L7 HTTP proxy (${engine.name} engine)`, { skip: engine.skip }, () => {
    let backend: Server;
    let backendPort = 0;
    /** One proxy per client identity (the native engine learns it from the datapath, so per process). */
    const proxies = new Map<number, ProxyUnderTest>();
    let peer = FRONTEND;
    const portOf = (id = peer) => proxies.get(id)!.port;
    const records = (id = peer) => proxies.get(id)!.records();
    /** Requests the backend received, and the last one's headers. */
    const seen: string[] = [];
    let lastHeaders: Record<string, unknown> = {};

    before(async () => {
      backend = createServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        lastHeaders = req.headers;
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          res.setHeader('content-type', 'application/json');
          res.end(
            JSON.stringify({
              method: req.method,
              path: req.url,
              body,
              trace: req.headers['x-trace'] ?? null,
            }),
          );
        });
      });
      await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
      backendPort = (backend.address() as { port: number }).port;
      for (const id of [FRONTEND, OTHER])
        proxies.set(
          id,
          await engine.start({ upstreamPort: backendPort, peer: id, rules: RULES, maxHeaderSize: 4096 }),
        );
    });
    after(async () => {
      for (const p of proxies.values()) await p.close();
      backend.closeAllConnections();
      await new Promise((r) => backend.close(r));
    });

    test('GET on the allowed path is forwarded; POST and other paths get 403 on the same connection', async () => {
      peer = FRONTEND;
      const c = new RawClient(portOf());
      const ok = await c.send('GET /api/v1/products?id=1 HTTP/1.1\r\nHost: catalog:8080\r\n\r\n', /\}$/);
      assert.match(ok, /^HTTP\/1\.1 200 OK/);
      assert.match(ok, /"path":"\/api\/v1\/products\?id=1"/);
      const post = await c.send(
        'POST /api/v1/products HTTP/1.1\r\nHost: catalog:8080\r\nContent-Length: 2\r\n\r\n{}',
        /Access denied\r\n$/,
      );
      assert.match(post, /^HTTP\/1\.1 403 Forbidden/);
      const admin = await c.send('GET /admin HTTP/1.1\r\nHost: catalog:8080\r\n\r\n', /Access denied\r\n$/);
      assert.match(admin, /^HTTP\/1\.1 403/);
      const again = await c.send('GET /api/v1/products/42 HTTP/1.1\r\nHost: catalog:8080\r\n\r\n', /\}$/);
      assert.match(again, /^HTTP\/1\.1 200/, 'the connection stays usable after a denial');
      assert.equal(c.closed, false);
      c.sock.destroy();
      const denied = (await records()).filter((r) => r.verdict === 'denied' && r.code === 403);
      assert.deepEqual(
        denied.map((r) => `${r.method} ${r.url}`),
        ['POST /api/v1/products', 'GET /admin'],
      );
      const resp = (await records()).find((r) => r.type === 'response' && r.code === 200);
      assert.ok(resp && (resp.latencyNs ?? 0) > 0);
    });

    test('rules apply per peer identity; headers and header matches', async () => {
      peer = OTHER;
      const c = new RawClient(portOf());
      assert.match(await c.send('GET /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /denied\r\n$/), / 403 /);
      assert.match(
        await c.send('PUT /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n', /denied\r\n$/),
        / 403 /,
      );
      const ok = await c.send(
        'PUT /admin HTTP/1.1\r\nHost: x\r\nX-Token: s3cret\r\nContent-Length: 0\r\n\r\n',
        /\}$/,
      );
      assert.match(ok, / 200 /);
      assert.match(ok, /"trace":"on"/, 'the ADD mismatch action added the header');
      c.sock.destroy();
      peer = FRONTEND;
    });

    test('chunked request bodies stream through', async () => {
      const c = new RawClient(portOf());
      // GET with a body is unusual but legal; the rule allows GET only.
      const res = await c.send(
        'GET /api/v1/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
        /\}$/,
      );
      assert.match(res, /"body":"hello world"/);
      c.sock.destroy();
    });

    test('smuggling, bad request lines and oversized headers are refused, recorded, and reach nothing', async () => {
      // Each hides a second request (GET /admin) that a lenient parser would forward.
      const hidden = 'GET /admin HTTP/1.1\r\nHost: x\r\n\r\n';
      const cases: [string, string, RegExp][] = [
        [
          'Content-Length and Transfer-Encoding',
          `GET /api/v1/products HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${hidden}`,
          /^HTTP\/1\.1 400/,
        ],
        [
          'Transfer-Encoding then Content-Length',
          `GET /api/v1/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n${hidden}`,
          /^HTTP\/1\.1 400/,
        ],
        [
          'an encoding that is not chunked last',
          `GET /api/v1/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${hidden}`,
          /^HTTP\/1\.1 400/,
        ],
        [
          'whitespace before the colon',
          `GET /api/v1/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n${hidden}`,
          /^HTTP\/1\.1 400/,
        ],
        [
          'two Content-Lengths',
          `GET /api/v1/products HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 47\r\n\r\n${hidden}`,
          /^HTTP\/1\.1 400/,
        ],
        ['a bad request line', 'GARBAGE\r\n\r\n', /^HTTP\/1\.1 400/],
        ['a request line with a bare LF', 'GET /api/v1/products HTTP/1.1\nHost: x\n\n', /^HTTP\/1\.1 400/],
        ['a bad version', 'GET /api/v1/products HTTP/9.9\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400/],
        [
          'oversized headers',
          `GET /api/v1/products HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`,
          /^HTTP\/1\.1 431/,
        ],
        ['HTTP/1.1 without Host', 'GET /api/v1/products HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400/],
        [
          'two Hosts (the rules would judge one, the destination might take the other)',
          'GET /api/v1/products HTTP/1.1\r\nHost: catalog\r\nHost: internal-admin\r\n\r\n',
          /^HTTP\/1\.1 400/,
        ],
      ];
      for (const [what, raw, expected] of cases) {
        const before = (await records()).length;
        seen.length = 0;
        const c = new RawClient(portOf());
        const out = await c.send(raw, /\r\n\r\n/);
        assert.match(out, expected, what);
        await new Promise((r) => setTimeout(r, 30));
        assert.deepEqual(seen, [], `${what}: nothing reached the backend`);
        assert.ok(c.closed, `${what}: connection closed`);
        const rec = (await records()).slice(before);
        assert.ok(
          rec.some((r) => r.verdict === 'denied' && (r.code === 400 || r.code === 431)),
          `${what}: recorded as denied`,
        );
      }
    });

    test('a denied request with a body leaves the connection usable (Content-Length and chunked)', async () => {
      peer = FRONTEND;
      const c = new RawClient(portOf());
      const body = 'x'.repeat(3000);
      const post = await c.send(
        `POST /api/v1/products HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        /Access denied\r\n$/,
      );
      assert.match(post, /^HTTP\/1\.1 403 Forbidden/);
      const chunked = await c.send(
        'PUT /api/v1/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGET \r\n0\r\n\r\n',
        /Access denied\r\n$/,
      );
      assert.match(chunked, /^HTTP\/1\.1 403/);
      seen.length = 0;
      const ok = await c.send('GET /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /\}$/);
      assert.match(ok, /^HTTP\/1\.1 200/);
      assert.deepEqual(seen, ['GET /api/v1/products'], 'the denied bodies were not read as requests');
      assert.equal(c.closed, false);
      c.sock.destroy();
    });

    test('hop-by-hop headers stay on their hop; an upgrade the destination declines is no tunnel; CONNECT is refused', async () => {
      const c = new RawClient(portOf());
      const ok = await c.send(
        'GET /api/v1/products HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n',
        /\}$/,
      );
      assert.match(ok, /^HTTP\/1\.1 200/);
      // The upgrade was asked for (the rules allowed the request); this destination answered
      // 200, so the exchange is plain HTTP and the connection ends after it.
      assert.equal(lastHeaders.upgrade, 'websocket');
      assert.equal(lastHeaders.connection, 'upgrade');
      assert.equal(lastHeaders['x-hop'], undefined);
      assert.equal(lastHeaders['x-keep'], '2');
      await new Promise((r) => setTimeout(r, 20));
      assert.ok(c.closed, 'no second request on a connection that asked to switch protocols');
      // Only WebSocket is passed on: an h2c upgrade is served as HTTP/1.1, its Upgrade dropped.
      const h2c = new RawClient(portOf());
      const plain = await h2c.send(
        'GET /api/v1/products HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n',
        /\}$/,
      );
      assert.match(plain, /^HTTP\/1\.1 200/);
      assert.equal(lastHeaders.upgrade, undefined);
      assert.equal(lastHeaders['http2-settings'], undefined);
      h2c.sock.destroy();
      seen.length = 0;
      const t = new RawClient(portOf());
      const out = await t.send('CONNECT catalog:8080 HTTP/1.1\r\nHost: catalog:8080\r\n\r\n', /denied\r\n$/);
      assert.match(out, /^HTTP\/1\.1 403/);
      await new Promise((r) => setTimeout(r, 20));
      assert.ok(t.closed);
      assert.deepEqual(seen, []);
      assert.ok((await records()).some((r) => r.method === 'CONNECT' && r.verdict === 'denied'));
    });

    test('an allowed upgrade the destination accepts (101) becomes a tunnel; a denied one never reaches it', async () => {
      // A destination that switches to WebSocket, here an echo in capitals (no framing: bytes are bytes).
      const heads: string[] = [];
      const echo = netServer((s) => {
        let head = '';
        let switched = false;
        s.on('data', (d: Buffer) => {
          if (switched) {
            s.write(d.toString().toUpperCase());
            return;
          }
          head += d.toString('latin1');
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          heads.push(head.slice(0, end));
          switched = true;
          s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
          const rest = head.slice(end + 4);
          if (rest) s.write(rest.toUpperCase());
        });
        s.on('error', () => {});
      });
      await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
      const echoPort = (echo.address() as { port: number }).port;
      const p = await engine.start({ upstreamPort: echoPort, peer: FRONTEND, rules: RULES });
      const pport = p.port;
      try {
        const c = new RawClient(pport);
        // The first tunnel bytes ride in the same segment as the request head.
        const first = await c.send(
          'GET /api/v1/products/stream HTTP/1.1\r\nHost: catalog\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello',
          /HELLO$/,
        );
        assert.match(first, /^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\r\n\r\nHELLO$/);
        assert.match(heads[0]!, /^GET \/api\/v1\/products\/stream HTTP\/1\.1\r\n/);
        assert.match(heads[0]!, /\r\nUpgrade: websocket\r\n/i);
        assert.match(heads[0]!, /\r\nconnection: upgrade$/im);
        // Past the 101 the bytes are the new protocol's: not parsed, not judged (as with Envoy).
        const more = await c.send('POST /admin HTTP/1.1\r\n\r\n', /POST \/ADMIN HTTP\/1\.1\r\n\r\n$/);
        assert.equal(more, 'POST /ADMIN HTTP/1.1\r\n\r\n');
        assert.deepEqual(
          (await p.records()).map((r) => [r.type, r.verdict, r.method, r.url, r.code ?? null]),
          [
            ['request', 'forwarded', 'GET', '/api/v1/products/stream', null],
            ['response', 'forwarded', 'GET', '/api/v1/products/stream', 101],
          ],
        );
        // Closing one end closes the other.
        c.sock.end();
        await new Promise((r) => setTimeout(r, 50));
        assert.ok(c.closed);

        // A denied upgrade: 403, the connection closed, the destination never asked.
        heads.length = 0;
        const d = new RawClient(pport);
        const denied = await d.send(
          'GET /admin HTTP/1.1\r\nHost: catalog\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello',
          /Access denied\r\n$/,
        );
        assert.match(denied, /^HTTP\/1\.1 403 Forbidden/);
        await new Promise((r) => setTimeout(r, 20));
        assert.ok(d.closed);
        assert.deepEqual(heads, []);
      } finally {
        await p.close();
        await new Promise((r) => echo.close(r));
      }
    });

    test('pipelined requests are answered in order, denied ones in their place', async () => {
      peer = FRONTEND;
      seen.length = 0;
      const c = new RawClient(portOf());
      const out = await c.send(
        'GET /api/v1/products/1 HTTP/1.1\r\nHost: x\r\n\r\n' +
          'POST /api/v1/products HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc' +
          'GET /api/v1/products/3 HTTP/1.1\r\nHost: x\r\n\r\n',
        /products\/3","body":""[^}]*\}$/,
      );
      const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
      assert.deepEqual(statuses, ['200', '403', '200']);
      assert.ok(out.indexOf('products/1') < out.indexOf('Access denied'));
      assert.ok(out.indexOf('Access denied') < out.indexOf('products/3'));
      assert.deepEqual(seen, ['GET /api/v1/products/1', 'GET /api/v1/products/3']);
      c.sock.destroy();
    });

    test('HEAD responses have no body; HTTP/1.0 and Connection: close end the connection after the answer', async () => {
      const h = new RawClient(portOf());
      const head = await h.send('HEAD /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /\r\n\r\n$/);
      assert.match(head, /^HTTP\/1\.1 200/, JSON.stringify(head));
      const next = await h.send('GET /api/v1/products/9 HTTP/1.1\r\nHost: x\r\n\r\n', /\}$/);
      assert.match(next, /^HTTP\/1\.1 200[\s\S]*products\/9/, JSON.stringify(head + next));
      h.sock.destroy();
      for (const req of [
        'GET /api/v1/products HTTP/1.0\r\n\r\n',
        'GET /api/v1/products HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      ]) {
        const c = new RawClient(portOf());
        const out = await c.send(req, /\}$/);
        assert.match(out, /"path":"\/api\/v1\/products"/, req);
        await new Promise((r) => setTimeout(r, 30));
        assert.ok(c.closed, `closed after: ${req.split('\r\n')[0]}`);
      }
    });

    test('a connection the proxy has no endpoint for: 503, recorded, and closed (judged again on the next one)', async () => {
      const lost = await engine.start({
        upstreamPort: backendPort,
        peer: FRONTEND,
        rules: RULES,
        noEndpoint: true,
      });
      const c = new RawClient(lost.port);
      const got = await c.send('GET /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /No redirect/);
      assert.match(got, /^HTTP\/1\.1 503/);
      assert.match(got, /\r\nconnection: close\r\n/i);
      for (let i = 0; i < 200 && !c.closed; i++) await new Promise((r) => setTimeout(r, 5));
      const closed = c.closed;
      c.sock.destroy();
      assert.ok(closed, 'the connection is closed');
      const recs = await lost.records();
      assert.ok(recs.some((r) => r.verdict === 'error' && r.code === 503 && r.reason === 'no redirect'));
      await lost.close();
    });

    test('an unreachable upstream gives 503, not a hang', async () => {
      const dead = await engine.start({ upstreamPort: 1, peer: FRONTEND, rules: RULES });
      const c = new RawClient(dead.port);
      assert.match(
        await c.send('GET /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /\r\n\r\n/),
        /^HTTP\/1\.1 503/,
      );
      c.sock.destroy();
      await dead.close();
    });
  });

for (const engine of PROXY_ENGINES)
  describe(`L7 HTTP proxy: streaming (${engine.name} engine)`, { skip: engine.skip }, () => {
    let backend: Server;
    let proxy: ProxyUnderTest;
    /** Resolves the backend's pending response (it streams until then). */
    let finish: (() => void) | undefined;
    let uploadSeen: ((chunk: string) => void) | undefined;

    before(async () => {
      backend = createServer((req, res) => {
        if (req.url === '/api/v1/products/upload') {
          req.on('data', (d: Buffer) => uploadSeen?.(d.toString()));
          req.on('end', () => res.end('uploaded'));
          return;
        }
        // A chunked response whose first part goes out long before the last.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first part\n');
        finish = () => res.end('last part\n');
      });
      await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
      const backendPort = (backend.address() as { port: number }).port;
      proxy = await engine.start({
        upstreamPort: backendPort,
        peer: FRONTEND,
        rules: { [FRONTEND]: [{ path: '/api/.*' }] },
      });
    });
    after(async () => {
      await proxy.close();
      backend.closeAllConnections();
      await new Promise((r) => backend.close(r));
    });

    test('a response streams through chunk by chunk, chunked on the wire', async () => {
      const c = new RawClient(proxy.port);
      const head = await c.send('GET /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /first part\n\r\n$/);
      assert.match(head, /transfer-encoding: chunked/i);
      assert.match(head, /first part/);
      assert.doesNotMatch(head, /last part/, 'the first chunk arrived before the backend finished');
      finish?.();
      const rest = await c.send('', /\r\n0\r\n\r\n$/);
      assert.match(rest, /last part/);
      c.sock.destroy();
    });

    test('a request body streams to the destination before the client finishes it', async () => {
      const c = new RawClient(proxy.port);
      const got = new Promise<string>((resolve) => {
        uploadSeen = resolve;
      });
      c.sock.write(
        'POST /api/v1/products/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\npart-1\r\n',
      );
      assert.equal(await got, 'part-1');
      uploadSeen = undefined;
      const res = await c.send('6\r\npart-2\r\n0\r\n\r\n', /uploaded/);
      assert.match(res, /^HTTP\/1\.1 200/);
      c.sock.destroy();
    });
  });

test('a regex that does not compile names the rule', () => {
  assert.throws(
    () => new CompiledRuleSet({ groups: [{ identities: [], rules: [{ path: '/a(' }] }] }),
    /groups\[0\]\.rules\[0\]\.path/,
  );
});

describe('L7 HTTP proxy: which entry a connection falls under', () => {
  const rulesOf = (path: string) => [{ method: 'GET', path }];
  const table = new RedirectTable();
  const ep: ProxyEndpoint = {
    id: 7,
    ip: '10.0.0.7',
    identity: 300,
    entries: [
      // Any peer on 8080: /any only. The frontend on 8080: /front only. The frontend on
      // 8080-8083 (a /14 block): /range. The frontend, egress, any TCP port: /out.
      {
        direction: 'ingress',
        identity: 0,
        protocol: 6,
        port: 8080,
        portPrefixLen: 16,
        rules: rulesOf('/any'),
      },
      {
        direction: 'ingress',
        identity: FRONTEND,
        protocol: 6,
        port: 8080,
        portPrefixLen: 16,
        rules: rulesOf('/front'),
      },
      {
        direction: 'ingress',
        identity: FRONTEND,
        protocol: 6,
        port: 8080,
        portPrefixLen: 14,
        rules: rulesOf('/range'),
      },
      {
        direction: 'egress',
        identity: FRONTEND,
        protocol: 6,
        port: 0,
        portPrefixLen: 0,
        rules: rulesOf('/out'),
      },
    ],
  };
  table.apply({ type: 'endpoints', full: true, upsert: [ep], remove: [] });
  const allows = (m: ReturnType<RedirectTable['match']>, path: string) =>
    m?.rules.match(0, { method: 'GET', path, host: '', headers: new Map() }).allowed;

  test("the datapath's choice: longest port prefix, then the exact identity", () => {
    assert.equal(allows(table.match(ep, 'ingress', FRONTEND, 8080), '/front'), true);
    assert.equal(allows(table.match(ep, 'ingress', FRONTEND, 8080), '/any'), false);
    assert.equal(allows(table.match(ep, 'ingress', OTHER, 8080), '/any'), true);
    assert.equal(allows(table.match(ep, 'ingress', FRONTEND, 8082), '/range'), true);
    assert.equal(table.match(ep, 'ingress', OTHER, 8082), undefined);
    assert.equal(allows(table.match(ep, 'egress', FRONTEND, 443), '/out'), true);
    assert.equal(table.match(ep, 'egress', OTHER, 443), undefined);
  });

  test('updates replace an endpoint; removal forgets it; a bad rule changes nothing', () => {
    const t = new RedirectTable();
    assert.equal(t.synced, false);
    t.apply({ type: 'endpoints', full: true, upsert: [ep], remove: [] });
    assert.equal(t.synced, true);
    assert.equal(t.endpointAt('10.0.0.7')?.id, 7);
    assert.throws(
      () =>
        t.apply({
          type: 'endpoints',
          full: false,
          upsert: [{ ...ep, entries: [{ ...ep.entries[0]!, rules: [{ path: '(' }] }] }],
          remove: [],
        }),
      /endpoint 7 entries\[0\]/,
    );
    assert.equal(allows(t.match(ep, 'ingress', FRONTEND, 8080), '/front'), true, 'unchanged');
    t.apply({ type: 'endpoints', full: false, upsert: [], remove: [7] });
    assert.equal(t.endpointAt('10.0.0.7'), undefined);
    assert.equal(t.match(ep, 'ingress', FRONTEND, 8080), undefined);
  });

  test('upstream marks carry 24 bits of identity; node-local identities read as world', () => {
    assert.equal(upstreamMark(MARK_MAGIC_PROXY_INGRESS, 0x12345), 0x23450a01);
    assert.equal(upstreamMark(MARK_MAGIC_PROXY_EGRESS, 256), 0x01000b00);
    assert.equal(upstreamMark(MARK_MAGIC_PROXY_INGRESS, (1 << 24) | 5), 0x00020a00);
  });
});

describe('L7 HTTP proxy: events to the agent', () => {
  test('a packed event unpacks to the L7Event the flow builder takes', () => {
    const headers = packHeaders([
      { key: 'host', value: 'catalog:8080' },
      { key: 'accept', value: '*/*' },
    ]);
    const e = unpackEvent([
      1700000000000.5,
      F_RESPONSE | F_EGRESS,
      7,
      '10.244.1.4',
      8080,
      300,
      '10.244.1.3',
      40000,
      301,
      200,
      'GET',
      'http://catalog:8080/api/v1/products',
      'HTTP/1.1',
      1500000,
      'CiliumNetworkPolicy/production/catalog-l7-policy',
      '',
      headers,
    ]);
    assert.deepEqual(e, {
      time: 1700000000000.5,
      kind: 'http',
      type: 'response',
      verdict: 'FORWARDED',
      trafficDirection: 'EGRESS',
      endpointId: 7,
      source: { ip: '10.244.1.4', port: 8080, identity: 300 },
      destination: { ip: '10.244.1.3', port: 40000, identity: 301 },
      http: {
        code: 200,
        method: 'GET',
        url: 'http://catalog:8080/api/v1/products',
        protocol: 'HTTP/1.1',
        headers: [
          { key: 'host', value: 'catalog:8080' },
          { key: 'accept', value: '*/*' },
        ],
      },
      latencyNs: 1500000,
      policy: { kind: 'CiliumNetworkPolicy', namespace: 'production', name: 'catalog-l7-policy' },
    });
    const denied = unpackEvent([
      1,
      F_DROPPED,
      7,
      'a',
      1,
      2,
      'b',
      3,
      4,
      403,
      'POST',
      '/x',
      'HTTP/1.1',
      -1,
      '',
      'Access denied',
      '',
    ]);
    assert.equal(denied.verdict, 'DROPPED');
    assert.equal(denied.type, 'request');
    assert.equal(denied.reason, 'Access denied');
    assert.equal(denied.latencyNs, undefined);
    assert.throws(() => unpackEvent(['short']), TypeError);
  });
});

describe('L7 HTTP proxy over HTTP/2 (h2c, prior knowledge)', () => {
  let backend: Http2Server;
  let backendPort = 0;
  let proxy: HttpProxy;
  let port = 0;
  let peer = FRONTEND;
  let target = 0;
  const records: HttpRecord[] = [];
  const seen: string[] = [];

  before(async () => {
    // A gRPC-like destination: echoes the request, with a trailer.
    backend = createHttp2Server();
    backend.on('stream', (stream, headers) => {
      seen.push(`${headers[':method']} ${headers[':path']}`);
      let body = '';
      stream.on('data', (d: Buffer) => (body += d));
      stream.on('end', () => {
        const trailer = headers['x-want-trailer'] !== undefined;
        stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: trailer });
        if (trailer) stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(
          JSON.stringify({
            method: headers[':method'],
            path: headers[':path'],
            body,
            trace: headers['x-trace'] ?? null,
            te: headers.te ?? null,
          }),
        );
      });
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    backendPort = (backend.address() as { port: number }).port;
    target = backendPort;
    proxy = createHttpProxy({
      resolve: () => ({ host: '127.0.0.1', port: target, rules, peerIdentity: peer }),
      onRecord: (r) => records.push(r),
    });
    port = await proxy.listen(0, '127.0.0.1');
  });
  after(async () => {
    await proxy.close();
    await new Promise((r) => backend.close(r));
  });

  /** One request on a session: status, body, trailers. */
  const request = (session: ClientHttp2Session, headers: Record<string, string>, body?: string) =>
    new Promise<{ status: number; body: string; trailers: Record<string, unknown> }>((resolve, reject) => {
      const req = session.request(headers, { endStream: body === undefined });
      let status = 0;
      let out = '';
      let trailers: Record<string, unknown> = {};
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('trailers', (t) => (trailers = t));
      req.on('data', (d: Buffer) => (out += d));
      req.on('end', () => resolve({ status, body: out, trailers }));
      req.on('error', reject);
      if (body !== undefined) req.end(body);
    });

  test('the rules judge each stream: GET allowed, POST and other paths 403, on one connection', async () => {
    peer = FRONTEND;
    records.length = 0;
    seen.length = 0;
    const s = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      const ok = await request(s, { ':method': 'GET', ':path': '/api/v1/products?id=1', te: 'trailers' });
      assert.equal(ok.status, 200);
      assert.deepEqual(JSON.parse(ok.body), {
        method: 'GET',
        path: '/api/v1/products?id=1',
        body: '',
        trace: null,
        te: 'trailers',
      });
      const post = await request(s, { ':method': 'POST', ':path': '/api/v1/products' }, '{}');
      assert.equal(post.status, 403);
      assert.equal(post.body, 'Access denied\r\n');
      const admin = await request(s, { ':method': 'GET', ':path': '/admin' });
      assert.equal(admin.status, 403);
      const again = await request(s, { ':method': 'GET', ':path': '/api/v1/products/42' });
      assert.equal(again.status, 200);
      assert.deepEqual(
        seen,
        ['GET /api/v1/products?id=1', 'GET /api/v1/products/42'],
        'denied ones never reached it',
      );
    } finally {
      s.close();
    }
    assert.deepEqual(
      records.map((r) => [r.type, r.verdict, r.method, r.url, r.protocol, r.code ?? null]),
      [
        ['request', 'forwarded', 'GET', '/api/v1/products?id=1', 'HTTP/2', null],
        ['response', 'forwarded', 'GET', '/api/v1/products?id=1', 'HTTP/2', 200],
        ['request', 'denied', 'POST', '/api/v1/products', 'HTTP/2', 403],
        ['request', 'denied', 'GET', '/admin', 'HTTP/2', 403],
        ['request', 'forwarded', 'GET', '/api/v1/products/42', 'HTTP/2', null],
        ['response', 'forwarded', 'GET', '/api/v1/products/42', 'HTTP/2', 200],
      ],
    );
  });

  test('a denied request is answered once its body is in (or after 1 s of waiting for it)', async () => {
    peer = FRONTEND;
    const s = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      const answered = (req: ClientHttp2Stream) =>
        new Promise<number>((resolve, reject) => {
          req.on('response', (h) => resolve(Number(h[':status'])));
          req.on('error', reject);
        });
      // The body comes 300 ms after the headers: the 403 waits for it.
      const late = s.request({ ':method': 'POST', ':path': '/api/v1/products' }, { endStream: false });
      const t0 = performance.now();
      late.write('{');
      setTimeout(() => late.end('}'), 300);
      assert.equal(await answered(late), 403);
      assert.ok(performance.now() - t0 >= 290, 'not before the body ended');
      // A body that never ends is not waited for past the limit.
      const stuck = s.request({ ':method': 'POST', ':path': '/api/v1/products' }, { endStream: false });
      const t1 = performance.now();
      stuck.write('{');
      assert.equal(await answered(stuck), 403);
      const waited = performance.now() - t1;
      assert.ok(waited >= 900 && waited < 3000, `answered after ${waited} ms`);
      stuck.close();
    } finally {
      s.close();
    }
  });

  test('bodies stream, header edits apply, trailers (gRPC status) pass', async () => {
    peer = OTHER;
    const s = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      const put = await request(
        s,
        { ':method': 'PUT', ':path': '/admin', 'x-token': 's3cret', 'x-want-trailer': '1' },
        'x'.repeat(100_000),
      );
      assert.equal(put.status, 200);
      const echoed = JSON.parse(put.body) as { body: string; trace: string };
      assert.equal(echoed.body.length, 100_000);
      assert.equal(echoed.trace, 'on', 'the headerMatches mismatch ADD applied');
      assert.equal(put.trailers['grpc-status'], '0');
      const noToken = await request(s, { ':method': 'PUT', ':path': '/admin' }, 'x');
      assert.equal(noToken.status, 403);
    } finally {
      s.close();
      peer = FRONTEND;
    }
  });

  test('a destination that does not answer: 503 on the stream, the connection goes on', async () => {
    const s = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      target = 1; // nothing listens on port 1
      const r = await request(s, { ':method': 'GET', ':path': '/api/v1/products' });
      assert.equal(r.status, 503);
      target = backendPort;
      const ok = await request(s, { ':method': 'GET', ':path': '/api/v1/products' });
      assert.equal(ok.status, 200);
    } finally {
      target = backendPort;
      s.close();
    }
    assert.ok(records.some((r) => r.verdict === 'error' && r.code === 503 && r.protocol === 'HTTP/2'));
  });

  test('curl gets every answer, allowed and denied: streams end with END_STREAM, never a reset', async () => {
    // curl 7.88 fails a request whose stream is reset (RST_STREAM, even NO_ERROR) before it
    // has read the answer: one in thirty did, when the proxy ended streams that way.
    peer = FRONTEND;
    const codes: string[] = [];
    for (let i = 0; i < 40; i++) {
      const post = i % 2 === 1;
      const { stdout } = await run('curl', [
        '-sS',
        '-m',
        '5',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '--http2-prior-knowledge',
        ...(post ? ['-X', 'POST', '-d', '{}'] : []),
        `http://127.0.0.1:${port}/api/v1/products`,
      ]).catch((e: { stdout?: string; stderr?: string }) => ({
        stdout: `${e.stdout ?? ''} ${e.stderr ?? ''}`,
      }));
      codes.push(`${post ? 'POST' : 'GET'} ${stdout.trim()}`);
    }
    assert.deepEqual(
      codes.filter((c) => !/^(GET 200|POST 403)$/.test(c)),
      [],
      'every request answered',
    );
  });

  test('garbage after the preface ends that connection (GOAWAY) and nothing else; oversized headers are refused', async () => {
    const raw = new RawClient(port);
    await raw.send('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\x00\x00\x00\x01garbage!', /$^/);
    for (let i = 0; i < 100 && !raw.closed; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(raw.closed, 'the proxy closed the connection');
    const s = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      const big = await request(s, {
        ':method': 'GET',
        ':path': '/api/v1/products',
        'x-big': 'y'.repeat(40_000),
      }).catch((e: Error) => ({ status: 0, body: e.message, trailers: {} }));
      assert.equal(big.status, 431, 'a 40 kB header list never reaches the destination');
      const s2 = connectHttp2(`http://127.0.0.1:${port}`);
      try {
        assert.equal((await request(s2, { ':method': 'GET', ':path': '/api/v1/products' })).status, 200);
      } finally {
        s2.close();
      }
    } finally {
      s.destroy();
    }
  });
});
