/**
 * HTTP/2 through the L7 proxy: cleartext with prior knowledge (h2c), as gRPC clients and
 * `curl --http2-prior-knowledge` speak it to a service. A redirected connection that opens
 * with the HTTP/2 preface is served by node:http2 instead of the HTTP/1.1 parser; each
 * stream is one request, judged by the same rules (`:method`, `:path` without its query,
 * `:authority` as the host, the other headers by name) and either answered here (403
 * `Access denied`, as Envoy answers on HTTP/2) or sent to the original destination over
 * this connection's own HTTP/2 connection there (opened by `createSocket`, e.g. marked).
 * Bodies stream both ways; trailers (gRPC's status) pass. One record per request and per
 * response, protocol `HTTP/2`.
 */
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  constants,
  connect as h2connect,
  createServer as h2server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { Socket } from 'node:net';
import type { HeaderEdit, HttpRequestView } from '../../policy/http.js';
import type { HttpRecord, ProxyTarget } from './proxy.js';

/** The client connection preface (RFC 9113 §3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** 'h2': the bytes open with the HTTP/2 preface; 'http1': they cannot; undefined: too few to tell. */
export function sniffPreface(b: Buffer): 'h2' | 'http1' | undefined {
  const n = Math.min(b.length, PREFACE.length);
  if (!b.subarray(0, n).equals(PREFACE.subarray(0, n))) return 'http1';
  return n === PREFACE.length ? 'h2' : undefined;
}

/** Connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2); `te: trailers` is the one exception. */
const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
]);

export interface H2Context {
  resolve(): ProxyTarget | undefined;
  record(r: HttpRecord): void;
  createSocket?(target: ProxyTarget): Socket;
  ends: Pick<HttpRecord, 'source' | 'destination'>;
  /** Largest header list accepted from the client (SETTINGS_MAX_HEADER_LIST_SIZE). */
  maxHeaderSize: number;
  /** Client connections idle this long (ms) are closed. */
  idleTimeoutMs: number;
}

const DENIED_BODY = 'Access denied\r\n';

/** A request body read (and dropped) before a local answer: at most this many bytes, ... */
const DRAIN_BYTES = 64 * 1024;
/** ... for at most this long (ms). */
const DRAIN_MS = 1000;

/**
 * Answers `stream` here once its request body has been read and dropped. An answer that
 * ends the stream while the client is still sending is allowed (RFC 9113 §8.1), but
 * curl 7.88 then fails one request in fifty with "Stream error in the HTTP/2 framing layer"
 * (measured: 21 of 1,000 denied POSTs, none when the body is read first). A body larger than
 * DRAIN_BYTES, or slower than DRAIN_MS, is not waited for.
 */
function answerAfterBody(stream: ServerHttp2Stream, code: number, body: string): void {
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  const reply = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    if (stream.headersSent || stream.destroyed) return;
    stream.respond({ ':status': code, 'content-type': 'text/plain' });
    stream.end(body);
  };
  if (stream.readableEnded || stream.endAfterHeaders) {
    reply();
    return;
  }
  let read = 0;
  stream.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > DRAIN_BYTES) reply();
  });
  stream.once('end', reply);
  timer = setTimeout(reply, DRAIN_MS);
}

function single(v: string | string[] | undefined): string {
  return Array.isArray(v) ? (v[0] ?? '') : (v ?? '');
}

/** Serves HTTP/2 on `socket`, whose first bytes (`head`, already read) open with the preface. */
export function serveH2(socket: Socket, head: Buffer, ctx: H2Context): void {
  // A server (never listening) per connection: its streams then know their connection by
  // closure. HTTP/2 connections are long-lived, so the cost is per connection, not request.
  const server = h2server({
    maxHeaderListPairs: 256,
    settings: { maxHeaderListSize: ctx.maxHeaderSize },
  });
  const conn = new H2Connection(ctx);
  server.on('stream', (stream, headers) => conn.stream(stream, headers));
  server.on('session', (session) => {
    session.setTimeout(ctx.idleTimeoutMs, () => session.close());
    session.on('error', () => {});
    session.on('close', () => conn.close());
  });
  // node:http2 reads what the socket already buffered before its own reads.
  socket.pause();
  socket.unshift(head);
  server.emit('connection', socket);
}

/** One client connection's streams and its connection to the destination. */
class H2Connection {
  #upstream: { key: string; session: ClientHttp2Session } | undefined;

  constructor(readonly ctx: H2Context) {}

  close(): void {
    this.#upstream?.session.close();
    this.#upstream = undefined;
  }

  stream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => {});
    const started = process.hrtime.bigint();
    const method = single(headers[':method']);
    const url = single(headers[':path']);
    const authority = single(headers[':authority']) || single(headers.host);
    const view: HttpRequestView = {
      method,
      path: url.split('?')[0] ?? '',
      host: authority,
      headers: new Map(),
    };
    const list: { key: string; value: string }[] = [];
    // The header list's size as HTTP/2 counts it (RFC 9113 §6.5.2): what SETTINGS asked for,
    // which a client may ignore.
    let size = 0;
    for (const [name, v] of Object.entries(headers)) {
      if (v === undefined) continue;
      const values = Array.isArray(v) ? v : [String(v)];
      for (const value of values) size += name.length + value.length + 32;
      if (name.startsWith(':')) continue;
      view.headers.set(name, values);
      for (const value of values) list.push({ key: name, value });
    }
    const target = method === 'CONNECT' ? undefined : this.ctx.resolve();
    const base = {
      method,
      url,
      host: authority,
      protocol: 'HTTP/2',
      ...this.ctx.ends,
      headers: list,
      target,
      peerIdentity: target?.peerIdentity,
    };
    const answer = (code: number, body: string, verdict: HttpRecord['verdict'], reason: string) => {
      this.ctx.record({ ...base, type: verdict === 'error' ? 'response' : 'request', verdict, code, reason });
      answerAfterBody(stream, code, body);
    };
    if (size > this.ctx.maxHeaderSize) {
      answer(431, '', 'denied', `header list of ${size} bytes exceeds ${this.ctx.maxHeaderSize}`);
      return;
    }
    if (method === 'CONNECT') {
      answer(403, DENIED_BODY, 'denied', 'CONNECT tunnels are not proxied');
      return;
    }
    if (!target) {
      answer(503, 'No redirect for this connection\r\n', 'error', 'no redirect');
      return;
    }
    if (!target.rules) {
      answer(403, DENIED_BODY, 'denied', 'no L7 rule applies any more');
      return;
    }
    const verdict = target.rules.match(target.peerIdentity, view);
    if (!verdict.allowed) {
      answer(403, DENIED_BODY, 'denied', 'Access denied');
      return;
    }
    this.ctx.record({ ...base, type: 'request', verdict: 'forwarded' });
    this.#forward(stream, headers, target, verdict.edits, base, started);
  }

  #session(target: ProxyTarget): ClientHttp2Session {
    const key = `${target.mark ?? 0}|${target.source ? `${target.source.ip}:${target.source.port}` : ''}|${target.host}:${target.port}`;
    const cur = this.#upstream;
    if (cur && cur.key === key && !cur.session.closed && !cur.session.destroyed) return cur.session;
    cur?.session.close();
    const make = this.ctx.createSocket;
    const session = h2connect(`http://${target.host}:${target.port}`, {
      createConnection: () => {
        const s = make ? make(target) : new Socket();
        s.setNoDelay(true);
        return s.connect({ host: target.host, port: target.port });
      },
    });
    session.on('error', () => {});
    this.#upstream = { key, session };
    return session;
  }

  #forward(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    target: ProxyTarget,
    edits: HeaderEdit[],
    base: Omit<HttpRecord, 'type' | 'verdict'>,
    started: bigint,
  ): void {
    const out: OutgoingHttpHeaders = {};
    const touched = new Set(edits.filter((e) => e.kind !== 'add').map((e) => e.name.toLowerCase()));
    for (const [name, v] of Object.entries(headers)) {
      if (v === undefined || CONNECTION_SPECIFIC.has(name) || touched.has(name)) continue;
      if (name === 'te' && single(v).toLowerCase() !== 'trailers') continue;
      out[name] = v;
    }
    if (!out[':authority'] && base.host) out[':authority'] = base.host;
    for (const e of edits) {
      if (e.kind === 'delete') continue;
      const name = e.name.toLowerCase();
      const prev = out[name];
      out[name] =
        e.kind === 'add' && prev !== undefined
          ? [...(Array.isArray(prev) ? prev : [String(prev)]), e.value]
          : e.value;
    }
    let req: ClientHttp2Stream;
    let over = false;
    // Once per stream: an upstream reset can show as both an error and a close.
    const failed = (err: Error) => {
      if (over) return;
      over = true;
      this.ctx.record({
        ...base,
        type: 'response',
        verdict: 'error',
        code: 503,
        reason: err.message,
        latencyNs: Number(process.hrtime.bigint() - started),
      });
      if (!stream.headersSent && !stream.destroyed) {
        stream.respond({ ':status': 503, 'content-type': 'text/plain' });
        stream.end('upstream connect error or disconnect/reset before headers\r\n');
      } else stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    };
    try {
      req = this.#session(target).request(out, { endStream: stream.endAfterHeaders });
    } catch (err) {
      failed(err as Error);
      return;
    }
    let trailers: OutgoingHttpHeaders | undefined;
    req.on('response', (h) => {
      const status = Number(h[':status'] ?? 0);
      const resp: OutgoingHttpHeaders = {};
      for (const [name, v] of Object.entries(h))
        if (v !== undefined && !CONNECTION_SPECIFIC.has(name)) resp[name] = v;
      this.ctx.record({
        ...base,
        type: 'response',
        verdict: 'forwarded',
        code: status,
        latencyNs: Number(process.hrtime.bigint() - started),
      });
      if (stream.destroyed) return;
      stream.respond(resp, { waitForTrailers: true });
      req.pipe(stream);
    });
    req.on('trailers', (t) => {
      trailers = {};
      for (const [name, v] of Object.entries(t as IncomingHttpHeaders))
        if (v !== undefined && !name.startsWith(':')) trailers[name] = v;
    });
    // With no trailers the stream still ends with END_STREAM (empty trailers): close() would
    // reset it instead (RST_STREAM), which curl takes as a failed request when the reset
    // arrives before it has read the response (measured: 11 of 300).
    stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
    req.on('error', (err) => failed(err));
    // A reset from the destination before its response: the same as a failed connection.
    req.on('close', () => {
      if (!stream.headersSent && !stream.destroyed && req.rstCode)
        failed(new Error(`upstream reset the stream (${req.rstCode})`));
    });
    stream.on('close', () => {
      if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
    });
    if (!stream.endAfterHeaders) stream.pipe(req);
  }
}
