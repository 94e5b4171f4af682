/**
 * What only the native HTTP proxy engine has (the behaviour both engines share is held by
 * http.test.ts): its channel with the agent (records as the agent unpacks them, a bad
 * endpoints message changing nothing, exiting with its agent or on SIGTERM), HTTP/2 handed
 * to a Node.js worker over a unix socket behind a PROXY line, idle connections closed,
 * large bodies both ways under back-pressure, and many connections at once without leaks.
 * Loopback only; no datapath (the engine's test flags name the upstream and the peer).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server, type Http2Server } from 'node:http2';
import { connect, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CompiledRuleSet } from '../../src/policy/http.js';
import { handoffPath, listenHandoff, parseProxyLine } from '../../src/proxy/http/handoff.js';
import { createHttpProxy, type HttpProxy } from '../../src/proxy/http/proxy.js';
import { nativeRecord, PROXY_ENGINES, startNative } from '../helpers/proxies.js';

const FRONTEND = 1001;
const RULES = { [FRONTEND]: [{ method: 'GET|PUT', path: '/api/v1/products.*' }] };
const native = PROXY_ENGINES.find((e) => e.name === 'native')!;

/** One request on a fresh connection: status and body. */
function get(port: number, path: string, method = 'GET', body?: Buffer) {
  return new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function closed(sock: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (sock.destroyed) resolve();
    else sock.once('close', () => resolve());
  });
}

test('PROXY v1 lines: TCP4 with two addresses and ports, nothing else', () => {
  assert.deepEqual(parseProxyLine('PROXY TCP4 10.244.1.2 10.244.1.4 35770 8080'), {
    source: { ip: '10.244.1.2', port: 35770 },
    destination: { ip: '10.244.1.4', port: 8080 },
  });
  for (const bad of [
    'PROXY TCP6 ::1 ::1 1 2',
    'PROXY TCP4 10.0.0.1 10.0.0.2 0 80',
    'PROXY TCP4 10.0.0.1 10.0.0.2 1 65536',
    'PROXY TCP4 10.0.0.300 10.0.0.2 1 80',
    'PROXY UNKNOWN',
    'GET / HTTP/1.1',
  ])
    assert.equal(parseProxyLine(bad), undefined, bad);
});

describe('native HTTP proxy engine', { skip: native.skip }, () => {
  let backend: Server;
  let backendPort = 0;
  const seen: string[] = [];

  before(async () => {
    backend = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.url === '/api/v1/products/big') {
        // 8 MiB out, in 64 KiB writes, to a client that may read slowly.
        res.writeHead(200, { 'content-length': String(8 << 20) });
        const chunk = Buffer.alloc(64 << 10, 'b');
        let left = 128;
        const more = () => {
          while (left > 0) {
            left--;
            if (!res.write(chunk)) return void res.once('drain', more);
          }
          res.end();
        };
        more();
        return;
      }
      let n = 0;
      req.on('data', (d: Buffer) => (n += d.length));
      req.on('end', () => res.end(JSON.stringify({ path: req.url, received: n })));
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    backendPort = (backend.address() as { port: number }).port;
  });
  after(async () => {
    backend.closeAllConnections();
    await new Promise((r) => backend.close(r));
  });

  test('records reach the agent packed: identities, absolute URL, policy, latency, headers lower-cased', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES });
    try {
      const packed: unknown[] = [];
      p.child.on('message', (m: { type?: string; packed?: unknown[] }) => {
        if (m.type === 'l7') packed.push(...(m.packed ?? []));
      });
      assert.equal((await get(p.port, '/api/v1/products?id=1')).status, 200);
      assert.equal((await get(p.port, '/api/v1/products', 'POST')).status, 403);
      await p.records();
      const [req, resp, denied] = packed.map((x) => nativeRecord(x));
      assert.deepEqual(
        [req?.type, req?.verdict, resp?.type, resp?.code, denied?.verdict, denied?.code],
        ['request', 'forwarded', 'response', 200, 'denied', 403],
      );
      assert.ok((resp?.latencyNs ?? 0) > 0, 'a response has its latency');
      const raw = packed[0] as unknown[];
      // [time, flags, endpoint, srcIp, srcPort, srcId, dstIp, dstPort, dstId, code, method, url, ...]
      assert.equal(raw[2], 1, 'the endpoint the connection belongs to');
      assert.equal(raw[5], 100, "egress: the client is the local endpoint's identity");
      assert.equal(raw[8], FRONTEND, 'and the server the peer');
      assert.equal(raw[11], `http://127.0.0.1:${p.port}/api/v1/products?id=1`);
      assert.equal(raw[12], 'HTTP/1.1');
      assert.equal(raw[14], 'CiliumNetworkPolicy/production/catalog-l7-policy');
      assert.match(String(raw[16]), /^host\n127\.0\.0\.1:\d+\nconnection\nclose$/);
      assert.equal((packed[2] as unknown[])[15], 'Access denied');
    } finally {
      await p.close();
    }
  });

  test('record strings are JSON-escaped whole: quotes, backslashes, control and Latin-1 bytes', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES });
    try {
      const packed: unknown[][] = [];
      p.child.on('message', (m: { type?: string; packed?: unknown[][] }) => {
        if (m.type === 'l7') packed.push(...(m.packed ?? []));
      });
      const s = connect(p.port, '127.0.0.1');
      s.on('error', () => {});
      const value = 'a"b\\c\té';
      s.write(
        Buffer.from(`GET /api/v1/products?q="x"\\ HTTP/1.1\r\nHost: x\r\nX-Q: ${value}\r\n\r\n`, 'latin1'),
      );
      await new Promise((r) => s.once('data', r));
      s.destroy();
      await p.records();
      assert.equal(packed.length, 2, 'a request and its response');
      for (const rec of packed) {
        assert.equal(rec[11], 'http://x/api/v1/products?q="x"\\');
        assert.equal(rec[16], `host\nx\nx-q\n${value}`);
      }
    } finally {
      await p.close();
    }
  });

  test('a bad endpoints message changes nothing; the agent going away ends the process', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES });
    let stderr = '';
    p.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    p.child.send({
      type: 'endpoints',
      full: true,
      upsert: [{ id: 1, ip: '127.0.0.1', identity: 100, entries: [{ direction: 'sideways' }] }],
      remove: [],
    });
    p.child.send({ type: 'endpoints', full: false, upsert: 'nope', remove: [] });
    await new Promise((r) => setTimeout(r, 100));
    assert.match(stderr, /endpoints update refused: .*endpoint 1 entries\[0\]\.direction/);
    assert.equal((await get(p.port, '/api/v1/products')).status, 200, 'the previous rules still hold');
    assert.equal((await get(p.port, '/admin')).status, 403);
    const exited = new Promise<number | null>((r) => p.child.once('exit', (code) => r(code)));
    p.child.disconnect();
    assert.equal(await exited, 0, 'it exits once its channel closes');
  });

  test('SIGTERM ends it at once, with connections open; idle connections are closed', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES }, [
      '--idle-timeout-ms',
      '300',
    ]);
    const idle = connect(p.port, '127.0.0.1');
    idle.on('error', () => {});
    const t0 = performance.now();
    await closed(idle);
    const waited = performance.now() - t0;
    // Swept about once a second.
    assert.ok(waited >= 250 && waited < 3000, `closed after ${waited} ms`);
    const open = connect(p.port, '127.0.0.1');
    open.on('error', () => {});
    await new Promise((r) => open.once('connect', r));
    const exited = new Promise<string | null>((r) => p.child.once('exit', (_c, sig) => r(sig)));
    const t1 = performance.now();
    p.child.kill('SIGTERM');
    await exited;
    assert.ok(performance.now() - t1 < 1500, 'no wait for the open connection');
    await closed(open);
  });

  test('closing after an answer lingers: bytes the client sent after it do not reset the answer away', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES });
    try {
      // An answer still in flight when the connection closes, and unread bytes from the
      // client: closing at once would reset the connection and cut the answer short.
      const junk = 'x'.repeat(4 << 20);
      const s = connect(p.port, '127.0.0.1');
      let got = 0;
      let reset = false;
      s.on('data', (d: Buffer) => (got += d.length));
      s.on('error', () => (reset = true));
      s.write(`GET /api/v1/products/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n${junk}`);
      await closed(s);
      assert.equal(reset, false, 'a FIN, not a reset');
      assert.ok(got > 8 << 20, `the whole answer (${got} bytes)`);
    } finally {
      await p.close();
    }
  });

  test('8 MiB down to a slow reader and 8 MiB up arrive whole (back-pressure both ways)', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES });
    try {
      const down = await new Promise<number>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port: p.port, path: '/api/v1/products/big', agent: false },
          (res) => {
            let n = 0;
            res.on('data', (d: Buffer) => {
              n += d.length;
              // Read slowly at first: the proxy must stop reading its upstream, not buffer it all.
              if (n < 2 << 20) {
                res.pause();
                setTimeout(() => res.resume(), 2);
              }
            });
            res.on('end', () => resolve(n));
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(down, 8 << 20);
      const up = await get(p.port, '/api/v1/products/upload', 'PUT', Buffer.alloc(8 << 20, 'u'));
      assert.equal(up.status, 200);
      assert.equal(JSON.parse(up.body.toString()).received, 8 << 20);
    } finally {
      await p.close();
    }
  });

  test('200 connections at once, 10 keep-alive requests each: every answer right, no descriptor left', async () => {
    const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES });
    const fds = () => readdirSync(`/proc/${p.child.pid}/fd`).length;
    const baseline = fds();
    try {
      const one = (i: number) =>
        new Promise<string[]>((resolve, reject) => {
          const s = connect(p.port, '127.0.0.1');
          const codes: string[] = [];
          let buf = '';
          let sent = 0;
          const send = () => {
            const path = sent % 3 === 2 ? '/admin' : `/api/v1/products/${i}-${sent}`;
            s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
            sent++;
          };
          s.on('connect', send);
          s.on('data', (d: Buffer) => {
            buf += d.toString();
            // Each answer ends with a body of known shape: a JSON object or "Access denied".
            for (;;) {
              const m = /^HTTP\/1\.1 (\d{3})[\s\S]*?\r\n\r\n(\{[^}]*\}|Access denied\r\n)/.exec(buf);
              if (!m) break;
              codes.push(m[1]!);
              buf = buf.slice(m[0].length);
              if (sent < 10) send();
              else {
                s.destroy();
                resolve(codes);
              }
            }
          });
          s.on('error', reject);
        });
      const all = await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
      const expected = Array.from({ length: 10 }, (_, k) => (k % 3 === 2 ? '403' : '200'));
      for (const codes of all) assert.deepEqual(codes, expected);
      for (let i = 0; i < 50 && fds() > baseline; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(fds(), baseline, 'every client and upstream socket closed');
    } finally {
      await p.close();
    }
  });

  describe('HTTP/2 handed to a Node.js worker', () => {
    let h2backend: Http2Server;
    let h2port = 0;
    let dir = '';
    let nodeProxy: HttpProxy;
    let handoffs: NetServer[] = [];
    const resolved: string[] = [];

    before(async () => {
      h2backend = createHttp2Server();
      h2backend.on('stream', (stream, headers) => {
        stream.respond({ ':status': 200 });
        stream.end(`h2 ${headers[':method']} ${headers[':path']}`);
      });
      await new Promise<void>((r) => h2backend.listen(0, '127.0.0.1', r));
      h2port = (h2backend.address() as { port: number }).port;
      dir = mkdtempSync(join(tmpdir(), 'hy-handoff-'));
      const rules = new CompiledRuleSet({ groups: [{ identities: [], rules: RULES[FRONTEND] }] });
      nodeProxy = createHttpProxy({
        resolve: (socket) => {
          resolved.push(
            `${socket.remoteAddress}:${socket.remotePort}>${socket.localAddress}:${socket.localPort}`,
          );
          return { host: '127.0.0.1', port: h2port, rules, peerIdentity: FRONTEND };
        },
      });
      handoffs = [
        await listenHandoff(handoffPath(dir, 'egress'), (s) => nodeProxy.server.emit('connection', s)),
      ];
    });
    after(async () => {
      await nodeProxy.close();
      for (const h of handoffs) await new Promise((r) => h.close(r));
      h2backend.close();
      rmSync(dir, { recursive: true, force: true });
    });

    const h2 = (port: number, method: string, path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const s = connectHttp2(`http://127.0.0.1:${port}`);
        s.on('error', reject);
        const req = s.request({ ':method': method, ':path': path });
        let status = 0;
        let body = '';
        req.on('response', (h) => (status = Number(h[':status'])));
        req.on('data', (d: Buffer) => (body += d));
        req.on('end', () => {
          s.close();
          resolve({ status, body });
        });
        req.on('error', reject);
        req.end();
      });

    test('the preface sends the connection to the worker, which sees the original addresses', async () => {
      const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES }, [
        '--handoff-dir',
        dir,
      ]);
      try {
        assert.deepEqual(await h2(p.port, 'GET', '/api/v1/products'), {
          status: 200,
          body: 'h2 GET /api/v1/products',
        });
        assert.equal((await h2(p.port, 'POST', '/api/v1/products')).status, 403);
        assert.match(resolved[0]!, new RegExp(`^127\\.0\\.0\\.1:\\d+>127\\.0\\.0\\.1:${p.port}$`));
        // HTTP/1.1 on the same engine stays native.
        assert.equal((await get(p.port, '/api/v1/products')).status, 200);
      } finally {
        await p.close();
      }
    });

    test('without a worker to hand it to, an HTTP/2 connection is reset, not left hanging', async () => {
      const p = await startNative({ upstreamPort: backendPort, peer: FRONTEND, rules: RULES }, [
        '--handoff-dir',
        join(dir, 'missing'),
      ]);
      try {
        const t0 = performance.now();
        const r = await h2(p.port, 'GET', '/api/v1/products').catch((e: Error) => ({
          status: 0,
          body: e.message,
        }));
        assert.equal(r.status, 0, 'no answer');
        assert.ok(performance.now() - t0 < 1000, 'at once');
      } finally {
        await p.close();
      }
    });

    test('a handoff connection without a valid PROXY line is closed', async () => {
      const s = connect(handoffPath(dir, 'egress'));
      s.on('error', () => {});
      s.write('PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n');
      await closed(s);
    });
  });
});
