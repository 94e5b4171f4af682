import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { CompiledRuleSet } from '../../src/policy/http.js';
import { createHttpProxy, type HttpProxy, type HttpRecord } from '../../src/proxy/http/proxy.js';

const FRONTEND = 1001;
const OTHER = 1002;

// The tutorial's section 5.3 rule: from frontend, GET /api/v1/products.* only.
const rules = new CompiledRuleSet({
  groups: [
    { identities: [FRONTEND], rules: [{ method: 'GET', path: '/api/v1/products.*' }] },
    {
      identities: [OTHER],
      rules: [
        {
          method: 'PUT',
          path: '/admin',
          headers: ['X-Token: s3cret'],
          headerMatches: [{ name: 'X-Trace', value: 'on', mismatch: 'ADD' }],
        },
      ],
    },
  ],
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

describe('L7 HTTP proxy', () => {
  let backend: Server;
  let backendPort = 0;
  let proxy: HttpProxy;
  let port = 0;
  let peer = FRONTEND;
  const records: HttpRecord[] = [];

  before(async () => {
    backend = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(
          JSON.stringify({ method: req.method, path: req.url, body, trace: req.headers['x-trace'] ?? null }),
        );
      });
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    backendPort = (backend.address() as { port: number }).port;
    proxy = createHttpProxy({
      resolve: () => ({ host: '127.0.0.1', port: backendPort, rules, peerIdentity: peer }),
      onRecord: (r) => records.push(r),
      maxHeaderSize: 4096,
    });
    port = await proxy.listen(0, '127.0.0.1');
  });
  after(async () => {
    await proxy.close();
    backend.closeAllConnections();
    await new Promise((r) => backend.close(r));
  });

  test('GET on the allowed path is forwarded; POST and other paths get 403 on the same connection', async () => {
    peer = FRONTEND;
    const c = new RawClient(port);
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
    const denied = records.filter((r) => r.verdict === 'denied' && r.code === 403);
    assert.deepEqual(
      denied.map((r) => `${r.method} ${r.url}`),
      ['POST /api/v1/products', 'GET /admin'],
    );
    const resp = records.find((r) => r.type === 'response' && r.code === 200);
    assert.ok(resp && (resp.latencyNs ?? 0) > 0);
  });

  test('rules apply per peer identity; headers and header matches', async () => {
    peer = OTHER;
    const c = new RawClient(port);
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
    const c = new RawClient(port);
    // GET with a body is unusual but legal; the rule allows GET only.
    const res = await c.send(
      'GET /api/v1/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
      /\}$/,
    );
    assert.match(res, /"body":"hello world"/);
    c.sock.destroy();
  });

  test('smuggling, bad request lines and oversized headers are refused and recorded', async () => {
    const cases: [string, RegExp][] = [
      [
        'POST /api/v1/products HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n',
        /^HTTP\/1\.1 400/,
      ],
      ['GARBAGE\r\n\r\n', /^HTTP\/1\.1 400/],
      [`GET /api/v1/products HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`, /^HTTP\/1\.1 431/],
      ['GET /api/v1/products HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400/], // no Host
    ];
    for (const [raw, expected] of cases) {
      const before = records.length;
      const c = new RawClient(port);
      const out = await c.send(raw, /\r\n\r\n/);
      assert.match(out, expected, raw.slice(0, 40));
      assert.doesNotMatch(out, /"path":"\/admin"/, 'nothing reached the backend');
      await new Promise((r) => setTimeout(r, 20));
      assert.ok(c.closed, 'connection closed');
      assert.ok(records.length > before, 'recorded');
    }
  });

  test('an unreachable upstream gives 503, not a hang', async () => {
    const dead = createHttpProxy({
      resolve: () => ({ host: '127.0.0.1', port: 1, rules, peerIdentity: FRONTEND }),
    });
    const p = await dead.listen(0, '127.0.0.1');
    const c = new RawClient(p);
    assert.match(
      await c.send('GET /api/v1/products HTTP/1.1\r\nHost: x\r\n\r\n', /\r\n\r\n/),
      /^HTTP\/1\.1 503/,
    );
    c.sock.destroy();
    await dead.close();
  });

  test('a regex that does not compile names the rule', () => {
    assert.throws(
      () => new CompiledRuleSet({ groups: [{ identities: [], rules: [{ path: '/a(' }] }] }),
      /groups\[0\]\.rules\[0\]\.path/,
    );
  });
});
