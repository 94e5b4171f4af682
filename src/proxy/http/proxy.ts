/**
 * The HTTP proxy that enforces L7 rules. Connections arrive redirected by the datapath
 * with their original destination kept (so `socket.localAddress/localPort` name the
 * server the client meant); `resolve` tells which rule set and which identities apply.
 *
 * Requests are parsed by llhttp, Node's own HTTP/1.1 parser, strict (no lenient flags): a
 * request with both Content-Length and Transfer-Encoding, a malformed request line or
 * header, or oversized headers is answered 400/431 and the connection closed, before any
 * rule or upstream sees it. A denied request is answered `403 Forbidden` / `Access denied`
 * (its body is read and thrown away) and the connection stays usable. An allowed request
 * goes to the original destination over this client connection's own upstream connection
 * (kept alive, opened by `createSocket`, e.g. marked), its head rebuilt without hop-by-hop
 * headers and its body streamed; the response streams back byte for byte while a second
 * parser finds where it ends. Pipelined requests are answered in order.
 *
 * WebSocket upgrades, as Cilium's Envoy does them: the rules judge the upgrade request like
 * any other; an allowed one goes upstream with its Upgrade header, and only if the
 * destination answers `101 Switching Protocols` does the connection become a byte tunnel
 * (no more HTTP, so no more rules: the request that opened it was the one judged). Any
 * other answer ends the connection after it. Other upgrades (h2c, ...) are not passed on:
 * the request is served as HTTP/1.1. CONNECT is refused: its tunnel would go to a
 * destination no rule was asked about.
 *
 * Why not node:http: its server and client (ClientRequest, Agent, re-serialized
 * responses) cost ~150 µs of CPU per proxied request here, ~30 µs this way (and let
 * throughput fall to a tenth of the direct path's).
 */
import { createRequire } from 'node:module';
import {
  type Server as NetServer,
  Socket as NetSocket,
  createServer as netServer,
  type Socket,
} from 'node:net';
import type { CompiledRuleSet, HeaderEdit, HttpRequestView } from '../../policy/http.js';
import { serveH2, sniffPreface } from './h2.js';

/**
 * llhttp's binding, as node:http uses it: node:http has no public parser, and this one is
 * the same strict parser its server uses. The shape is checked at load.
 */
interface ParserBinding {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string; bytesParsed?: number; reason?: string });
  finish(): undefined | (Error & { code?: string });
  close(): void;
  [k: number]: unknown;
}
interface ParserClass {
  new (): ParserBinding;
  REQUEST: number;
  RESPONSE: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kLenientNone: number;
}
const common = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: ParserClass;
  methods: string[];
};
const { HTTPParser, methods: METHODS } = common;
if (typeof HTTPParser !== 'function' || typeof HTTPParser.kOnHeadersComplete !== 'number')
  throw new Error('this Node.js has no llhttp binding where node:http keeps it');

export interface ProxyTarget {
  /** Where the client was going. */
  host: string;
  port: number;
  /** The rules; undefined: nothing allows this connection any more (every request is denied). */
  rules: CompiledRuleSet | undefined;
  /** The identity rules are matched against (the source for ingress rules). */
  peerIdentity: number;
  /** SO_MARK for the connection to the destination (see socket.ts); 0 or absent: none. */
  mark?: number;
  /** The address and port to connect from (the client's, kept); absent: the node's. */
  source?: { ip: string; port: number };
}

/** One L7 record per request and per response, as Hubble shows them. */
export interface HttpRecord {
  type: 'request' | 'response';
  verdict: 'forwarded' | 'denied' | 'error';
  method: string;
  url: string;
  /** The request's Host header (or the authority of an absolute URL). */
  host: string;
  protocol: string;
  /** Response code (responses and denials). */
  code?: number;
  /** Request to response, nanoseconds. */
  latencyNs?: number;
  source: { ip: string; port: number };
  destination: { ip: string; port: number };
  peerIdentity?: number;
  /** The request's headers, names lower-cased (shared by an exchange's records: do not modify). */
  headers: { key: string; value: string }[];
  /** Why: the parse error, the upstream error, or what denied. */
  reason?: string;
  /** The target the request was decided with (absent for requests refused before that). */
  target?: ProxyTarget;
}

export interface HttpProxyOptions {
  resolve(socket: Socket): ProxyTarget | undefined;
  onRecord?(r: HttpRecord): void;
  /** Largest request head accepted (bytes); larger gets 431. Default 16 KiB. */
  maxHeaderSize?: number;
  /** Makes the (unconnected) socket for a connection to the destination, e.g. a marked one. */
  createSocket?(target: ProxyTarget): Socket;
  /** Client connections idle this long (ms) are closed. Default 60 s. */
  idleTimeoutMs?: number;
}

const DENIED_BODY = 'Access denied\r\n';

/** Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']);

/** Buffered request body of a pipelined request waiting its turn, before the client is paused. */
const MAX_PENDING_BODY = 1 << 20;
const DEFAULT_MAX_HEADER_SIZE = 16 * 1024;
const DEFAULT_IDLE_MS = 60_000;
/** A tunnel (after an upgrade) with no bytes either way this long is closed. */
const TUNNEL_IDLE_MS = 3_600_000;
/** Largest response head from a destination. */
const MAX_RESPONSE_HEAD = 64 << 10;

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  431: 'Request Header Fields Too Large',
  503: 'Service Unavailable',
};

function simpleResponse(code: number, body: string, close: boolean): string {
  return (
    `HTTP/1.1 ${code} ${REASONS[code] ?? ''}\r\ncontent-type: text/plain\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n${close ? 'connection: close\r\n' : ''}\r\n${body}`
  );
}

/** A parsed request, from its head to its response. */
interface Exchange {
  method: string;
  url: string;
  protocol: string;
  versionMinor: number;
  raw: string[];
  view: HttpRequestView;
  started: bigint;
  /** The client asked to close after this exchange (or the parser cannot go on). */
  close: boolean;
  chunked: boolean;
  target?: ProxyTarget;
  /** What happens: forward it, answer it here, or nothing (refused before a decision). */
  action: 'forward' | 'answer';
  answer?: string;
  edits?: HeaderEdit[];
  /** Body not yet sent (this exchange is not the active one yet). */
  pending: Buffer[];
  pendingBytes: number;
  requestDone: boolean;
  responseDone: boolean;
  /** The upstream response's status, once its head is in. */
  status?: number;
  /** For records, built once. */
  headerList?: { key: string; value: string }[];
  /** The request asks for WebSocket (Upgrade); `tunnel`: what the client sent after its head. */
  upgrade: boolean;
  tunnel?: Buffer[];
}

function toView(method: string, url: string, raw: string[]): HttpRequestView {
  const headers = new Map<string, string[]>();
  let host = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    const cur = headers.get(name);
    if (cur) cur.push(value);
    else headers.set(name, [value]);
    if (name === 'host' && !host) host = value;
  }
  // Origin-form (/path?q) from transparent clients; absolute-form from explicit proxies.
  let path = url;
  if (url.charCodeAt(0) !== 47 /* / */ && /^https?:\/\//i.test(url)) {
    try {
      const u = new URL(url);
      path = u.pathname;
      host = u.host;
    } catch {
      // Not a URL after all: matched as given.
    }
  } else {
    const q = url.indexOf('?');
    if (q >= 0) path = url.slice(0, q);
  }
  return { method, path, host, headers };
}

/** The request head for the destination: hop-by-hop headers (and those `Connection` names) dropped, edits applied. */
function upstreamHead(x: Exchange): string {
  const named = new Set<string>();
  for (const v of x.view.headers.get('connection') ?? [])
    for (const t of v.split(',')) {
      const n = t.trim().toLowerCase();
      // The message's own framing stays: the destination must read the body the same way.
      if (n && n !== 'transfer-encoding' && n !== 'content-length') named.add(n);
    }
  const edits = x.edits ?? [];
  const touched = new Set(edits.filter((e) => e.kind !== 'add').map((e) => e.name));
  let head = `${x.method} ${x.url} HTTP/1.${x.versionMinor}\r\n`;
  const raw = x.raw;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!.toLowerCase();
    if (x.upgrade && n === 'upgrade') head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    if (HOP_BY_HOP.has(n) || named.has(n) || touched.has(n)) continue;
    head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  }
  for (const e of edits) if (e.kind !== 'delete') head += `${e.name}: ${e.value}\r\n`;
  if (x.upgrade) head += 'connection: upgrade\r\n';
  else if (x.close) head += 'connection: close\r\n';
  return `${head}\r\n`;
}

/**
 * An upgrade to WebSocket, the one protocol switch proxied (as Cilium configures Envoy);
 * other Upgrade headers (h2c, ...) are dropped and the request served as HTTP/1.1.
 */
function isWebSocket(raw: string[]): boolean {
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.toLowerCase() === 'upgrade' && /(^|,)\s*websocket\s*(,|$)/i.test(raw[i + 1]!)) return true;
  return false;
}

/** Whether a response's connection stays open, from its version and Connection header. */
function persistent(minor: number, headers: string[]): boolean {
  let close = false;
  let keep = false;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'connection') continue;
    for (const t of headers[i + 1]!.toLowerCase().split(',')) {
      if (t.trim() === 'close') close = true;
      if (t.trim() === 'keep-alive') keep = true;
    }
  }
  return !close && (minor >= 1 || keep);
}

/** Exchanges with equal keys may share an upstream connection. */
function upstreamKey(t: ProxyTarget): string {
  return `${t.mark ?? 0}|${t.source ? `${t.source.ip}:${t.source.port}` : ''}|${t.host}:${t.port}`;
}

function chunk(b: Buffer): Buffer[] {
  return [Buffer.from(`${b.length.toString(16)}\r\n`, 'latin1'), b, Buffer.from('\r\n', 'latin1')];
}
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

/** The destination side of one client connection: one socket, one exchange at a time. */
class Upstream {
  readonly socket: Socket;
  readonly parser: ParserBinding;
  readonly key: string;
  /** Set once the response to `exchange` is complete and the connection may be reused. */
  reusable = false;
  exchange: Exchange | undefined;
  #final = false;
  #unsolicited = false;
  /** Response header lines delivered before their head completed (long heads). */
  #headers: string[] = [];

  constructor(
    readonly owner: ClientConnection,
    target: ProxyTarget,
    make: ((t: ProxyTarget) => Socket) | undefined,
  ) {
    this.key = upstreamKey(target);
    const s = make ? make(target) : new NetSocket();
    this.socket = s;
    s.setNoDelay(true);
    s.connect({ host: target.host, port: target.port });
    const p = new HTTPParser();
    p[HTTPParser.kOnHeaders] = (h: string[]) => {
      for (const x of h) this.#headers.push(x);
    };
    p[HTTPParser.kOnHeadersComplete] = (
      _maj: number,
      minor: number,
      headers: string[] | undefined,
      _m: unknown,
      _u: unknown,
      status: number,
      _msg: unknown,
      _upgrade: boolean,
      keepAlive: boolean,
    ) => this.#onHead(status, minor, headers ?? this.#headers, keepAlive);
    p[HTTPParser.kOnBody] = () => {};
    p[HTTPParser.kOnMessageComplete] = () => this.#onComplete();
    p.initialize(HTTPParser.RESPONSE, {}, MAX_RESPONSE_HEAD, HTTPParser.kLenientNone);
    this.parser = p;
    s.on('data', (d: Buffer) => this.#onData(d));
    s.on('end', () => {
      // A tunnel's half-close passes on; a response delimited by the end of the connection ends here.
      if (this.owner.tunnel) this.owner.socket.end();
      else if (this.exchange && !this.exchange.responseDone) this.parser.finish();
    });
    s.on('error', (err) => this.owner.upstreamFailed(this, err));
    s.on('close', () => this.owner.upstreamFailed(this, new Error('upstream closed the connection')));
    s.on('drain', () => this.owner.socket.resume());
  }

  send(x: Exchange): void {
    this.exchange = x;
    this.reusable = false;
    this.#final = false;
    const s = this.socket;
    s.cork();
    s.write(upstreamHead(x), 'latin1');
    for (const b of x.pending) this.body(b);
    x.pending = [];
    x.pendingBytes = 0;
    if (x.requestDone) this.endBody();
    process.nextTick(() => s.uncork());
  }

  body(b: Buffer): void {
    const x = this.exchange!;
    let ok = true;
    if (x.chunked) for (const part of chunk(b)) ok = this.socket.write(part);
    else ok = this.socket.write(b);
    if (!ok) this.owner.socket.pause();
  }

  endBody(): void {
    if (this.exchange?.chunked) this.socket.write(LAST_CHUNK);
  }

  close(): void {
    this.exchange = undefined;
    this.socket.removeAllListeners('close');
    this.socket.destroy();
    this.parser.close();
  }

  #onHead(status: number, minor: number, headers: string[], keepAlive: boolean): number {
    this.#headers = [];
    const x = this.exchange;
    if (!x || x.responseDone) {
      // A response nobody asked for.
      this.#unsolicited = true;
      return 1;
    }
    // 101 to an upgrade request: the head is the last HTTP on this connection (a tunnel
    // follows). Other 1xx are interim: another head follows. HEAD, 204 and 304 responses
    // carry no body.
    if (status === 101 && x.upgrade) {
      this.#final = true;
      x.status = status;
      this.owner.responseHead(x);
      this.owner.tunnelOpens(this, x);
      return 2; // no body, and llhttp parses nothing more (as node:http's client does)
    }
    if (status < 200) return 1;
    this.#final = true;
    x.status = status;
    const bodiless = x.method === 'HEAD' || status === 204 || status === 304;
    // llhttp judges keep-alive before it knows the body is skipped: a bodiless response
    // without a length would read as delimited by the connection's end.
    if (!(bodiless ? persistent(minor, headers) : keepAlive)) x.close = true;
    this.owner.responseHead(x);
    return bodiless ? 1 : 0;
  }

  #onComplete(): void {
    const x = this.exchange;
    if (!x || !this.#final || x.responseDone || this.#unsolicited) return;
    x.responseDone = true;
    this.reusable = !x.close;
  }

  #onData(d: Buffer): void {
    if (this.owner.tunnel) {
      if (!this.owner.socket.write(d)) this.socket.pause();
      return;
    }
    const x = this.exchange;
    if (!x || x.responseDone) {
      // Bytes nobody asked for: the connection cannot be trusted with another request.
      this.owner.upstreamFailed(this, new Error('unsolicited data from upstream'));
      return;
    }
    const ret = this.parser.execute(d);
    if (typeof ret !== 'number') {
      this.owner.upstreamFailed(this, new Error(`bad response from upstream: ${ret.reason ?? ret.code}`));
      return;
    }
    if (this.#unsolicited) {
      // Two responses to one request: nothing of this read can be told apart safely.
      this.owner.upstreamFailed(this, new Error('unsolicited response from upstream'));
      return;
    }
    // Byte for byte: with a 101, this read's bytes past the head are the tunnel's first.
    if (!this.owner.socket.write(d)) this.socket.pause();
    if (this.owner.tunnel) this.owner.tunnelFlush(this);
    else if (x.responseDone) this.owner.exchangeDone(x);
  }
}

/** One client connection: its parser, its exchanges in order, its upstream. */
class ClientConnection {
  readonly parser: ParserBinding;
  readonly exchanges: Exchange[] = [];
  upstream: Upstream | undefined;
  /** Once set, nothing more is parsed; the connection closes after the exchanges queued. */
  #stopped = false;
  #closeAfter: string | undefined;
  #headers: string[] = [];
  #url = '';
  #ends: ReturnType<typeof endpoints> | undefined;
  /** Set once an upgrade went through: bytes pass both ways unparsed. */
  tunnel = false;
  /** The first bytes, until they tell HTTP/2 from HTTP/1.x (then undefined). */
  #sniff: Buffer | undefined = Buffer.alloc(0);

  constructor(
    readonly socket: Socket,
    readonly proxy: ProxyCore,
  ) {
    const p = new HTTPParser();
    p[HTTPParser.kOnHeaders] = (h: string[], url: string) => {
      for (const x of h) this.#headers.push(x);
      this.#url += url;
    };
    p[HTTPParser.kOnHeadersComplete] = (
      _maj: number,
      minor: number,
      headers: string[] | undefined,
      method: number,
      url: string | undefined,
      _s: unknown,
      _sm: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ) => this.#onHead(minor, headers, method, url, upgrade, keepAlive);
    p[HTTPParser.kOnBody] = (b: Buffer) => this.#onBody(b);
    p[HTTPParser.kOnMessageComplete] = () => this.#onComplete();
    p.initialize(
      HTTPParser.REQUEST,
      {},
      proxy.o.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE,
      HTTPParser.kLenientNone,
    );
    this.parser = p;
    socket.setNoDelay(true);
    socket.setTimeout(proxy.o.idleTimeoutMs ?? DEFAULT_IDLE_MS, () => socket.destroy());
    socket.on('data', (d: Buffer) => this.#onData(d));
    socket.on('drain', () => this.upstream?.socket.resume());
    socket.on('error', () => {});
    socket.on('close', () => {
      this.upstream?.close();
      this.upstream = undefined;
      this.parser.close();
    });
  }

  get ends() {
    this.#ends ??= endpoints(this.socket);
    return this.#ends;
  }

  #onData(chunk: Buffer): void {
    let d = chunk;
    if (this.#sniff !== undefined) {
      // The first bytes tell HTTP/2 (its preface) from HTTP/1.x.
      const b = this.#sniff.length ? Buffer.concat([this.#sniff, d]) : d;
      const kind = sniffPreface(b);
      if (kind === undefined) {
        this.#sniff = b;
        return;
      }
      this.#sniff = undefined;
      if (kind === 'h2') {
        this.socket.removeAllListeners('data');
        const o = this.proxy.o;
        serveH2(this.socket, b, {
          resolve: () => o.resolve(this.socket),
          record: (r) => this.proxy.record(r),
          ...(o.createSocket ? { createSocket: o.createSocket } : {}),
          ends: this.ends,
          maxHeaderSize: o.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE,
          idleTimeoutMs: o.idleTimeoutMs ?? DEFAULT_IDLE_MS,
        });
        return;
      }
      d = b;
    }
    if (this.tunnel) {
      const u = this.upstream;
      if (u && !u.socket.write(d)) this.socket.pause();
      return;
    }
    const open = this.exchanges.at(-1);
    if (open?.tunnel) {
      // An upgrade request waits for its answer: what the client sends meanwhile is the new
      // protocol's, kept for the tunnel (bounded, as a pending body is).
      open.tunnel.push(d);
      open.pendingBytes += d.length;
      if (open.pendingBytes > MAX_PENDING_BODY) this.socket.pause();
      return;
    }
    if (this.#stopped) return;
    const ret = this.parser.execute(d);
    if (typeof ret === 'number' && ret < d.length) {
      // llhttp stops at the end of an upgrade request's head: the rest is the new protocol's.
      const x = this.exchanges.at(-1);
      if (x?.tunnel) {
        x.tunnel.push(d.subarray(ret));
        x.pendingBytes += d.length - ret;
      }
    }
    if (typeof ret !== 'number') {
      const code = ret.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      this.proxy.record({
        type: 'request',
        verdict: 'denied',
        method: '',
        url: '',
        host: '',
        protocol: 'HTTP/1.1',
        code,
        ...this.ends,
        headers: [],
        reason: `${ret.code ?? 'parse error'}: ${ret.reason ?? ret.message}`,
      });
      this.#stop(simpleResponse(code, '', true));
    }
  }

  /** Parses nothing more; answers `last` (if any) after the queued exchanges, then closes. */
  #stop(last?: string): void {
    this.#stopped = true;
    this.#closeAfter = last ?? '';
    // The exchange being parsed will never complete: drop it.
    const open = this.exchanges.at(-1);
    if (open && !open.requestDone) {
      this.exchanges.pop();
      if (this.upstream?.exchange === open) {
        this.upstream.close();
        this.upstream = undefined;
      }
    }
    this.#advance();
  }

  #onHead(
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    const raw = headers ?? this.#headers;
    this.#headers = [];
    const u = url ?? this.#url;
    this.#url = '';
    const m = METHODS[method] ?? '';
    const view = toView(m, u, raw);
    const x: Exchange = {
      method: m,
      url: u,
      protocol: `HTTP/1.${minor}`,
      versionMinor: minor,
      raw,
      view,
      started: process.hrtime.bigint(),
      close: !keepAlive || upgrade,
      chunked: false,
      action: 'answer',
      pending: [],
      pendingBytes: 0,
      requestDone: false,
      responseDone: false,
      upgrade: upgrade && isWebSocket(raw),
    };
    for (let i = 0; i < raw.length; i += 2)
      if (raw[i]!.length === 17 && raw[i]!.toLowerCase() === 'transfer-encoding') x.chunked = true;
    this.exchanges.push(x);
    // After an upgrade request llhttp parses nothing more (the rest would be the new
    // protocol): the exchange ends the connection (x.close) unless the destination
    // switches protocols; a forwarded one keeps what the client sends next for the tunnel.
    this.proxy.decide(this, x, upgrade);
    if (x.upgrade && x.action === 'forward') x.tunnel = [];
    if (this.exchanges[0] === x) this.#start(x);
    return 0;
  }

  #onBody(b: Buffer): void {
    const x = this.exchanges.at(-1);
    if (x?.action !== 'forward') return;
    if (this.upstream?.exchange === x) {
      this.upstream.body(b);
      return;
    }
    x.pending.push(b);
    x.pendingBytes += b.length;
    if (x.pendingBytes > MAX_PENDING_BODY) this.socket.pause();
  }

  #onComplete(): void {
    const x = this.exchanges.at(-1);
    if (!x || x.requestDone) return;
    x.requestDone = true;
    if (this.upstream?.exchange === x) this.upstream.endBody();
    if (x.close) this.#stopped = true;
    if (this.exchanges[0] === x && x.responseDone) this.exchangeDone(x);
  }

  /** The head of the queue starts: answered here, or sent upstream. */
  #start(x: Exchange): void {
    if (x.action === 'answer') {
      this.socket.write(x.answer ?? '', 'latin1');
      x.responseDone = true;
      if (x.requestDone) this.exchangeDone(x);
      return;
    }
    const t = x.target!;
    if (this.upstream && (this.upstream.key !== upstreamKey(t) || !this.upstream.reusable)) {
      this.upstream.close();
      this.upstream = undefined;
    }
    this.upstream ??= new Upstream(this, t, this.proxy.o.createSocket);
    this.upstream.send(x);
  }

  /** The destination switched protocols: from now on bytes pass both ways, unparsed. */
  tunnelOpens(u: Upstream, x: Exchange): void {
    if (this.upstream !== u) return;
    this.tunnel = true;
    x.responseDone = true;
    this.exchanges.length = 0;
    // A long-lived tunnel (a WebSocket) idles longer than an HTTP connection.
    this.socket.setTimeout(TUNNEL_IDLE_MS);
    u.socket.setTimeout(TUNNEL_IDLE_MS, () => u.socket.destroy());
    this.socket.on('end', () => u.socket.end());
  }

  /** Sends the upstream what the client sent after its upgrade request, once the tunnel is open. */
  tunnelFlush(u: Upstream): void {
    const x = u.exchange;
    if (!x?.tunnel) return;
    for (const b of x.tunnel) u.socket.write(b);
    x.tunnel = undefined;
    x.pendingBytes = 0;
    u.exchange = undefined;
    if (this.socket.isPaused()) this.socket.resume();
  }

  responseHead(x: Exchange): void {
    this.proxy.record({
      ...this.proxy.base(this, x),
      type: 'response',
      verdict: 'forwarded',
      code: x.status ?? 0,
      latencyNs: Number(process.hrtime.bigint() - x.started),
    });
  }

  /** An exchange is over on both sides: the next one starts, or the connection closes. */
  exchangeDone(x: Exchange): void {
    if (!x.requestDone || !x.responseDone || this.exchanges[0] !== x) return;
    this.exchanges.shift();
    if (this.upstream?.exchange === x) this.upstream.exchange = undefined;
    if (this.upstream && !this.upstream.reusable) {
      this.upstream.close();
      this.upstream = undefined;
    }
    if (x.close) {
      this.exchanges.length = 0;
      this.socket.end();
      return;
    }
    if (this.socket.isPaused() && !this.upstream?.socket.writableNeedDrain) this.socket.resume();
    this.#advance();
  }

  #advance(): void {
    const next = this.exchanges[0];
    if (next) {
      if (!this.upstream?.exchange && !(next.action === 'answer' && next.responseDone)) this.#start(next);
      return;
    }
    if (this.#closeAfter !== undefined) {
      this.socket.end(this.#closeAfter, 'latin1');
      this.#closeAfter = undefined;
    }
  }

  upstreamFailed(u: Upstream, err: Error): void {
    if (this.upstream !== u) return;
    if (this.tunnel) {
      // The tunnel's other end went away: this one follows (after what is queued for it).
      this.upstream = undefined;
      u.close();
      this.socket.end();
      return;
    }
    const x = u.exchange;
    this.upstream = undefined;
    u.close();
    if (!x) return; // an idle connection went away: the next request opens another
    this.proxy.record({
      ...this.proxy.base(this, x),
      type: 'response',
      verdict: 'error',
      code: 503,
      reason: err.message,
      latencyNs: Number(process.hrtime.bigint() - x.started),
    });
    if (x.status === undefined) {
      // Nothing of the response went out: answer it, and go on if the request is complete.
      x.status = 503;
      x.responseDone = true;
      this.socket.write(
        simpleResponse(503, 'upstream connect error or disconnect/reset before headers\r\n', !x.requestDone),
        'latin1',
      );
      if (x.requestDone) this.exchangeDone(x);
      else this.#stop();
    } else {
      // Half a response went out: the client can only learn of it from the connection closing.
      this.socket.destroy();
    }
  }
}

function endpoints(socket: Socket) {
  return {
    source: { ip: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
    destination: { ip: socket.localAddress ?? '', port: socket.localPort ?? 0 },
  };
}

class ProxyCore {
  constructor(readonly o: HttpProxyOptions) {}

  record(r: HttpRecord): void {
    this.o.onRecord?.(r);
  }

  base(c: ClientConnection, x: Exchange) {
    let headers = x.headerList;
    if (!headers) {
      headers = [];
      for (let i = 0; i < x.raw.length; i += 2)
        headers.push({ key: x.raw[i]!.toLowerCase(), value: x.raw[i + 1]! });
      x.headerList = headers;
    }
    const ends = c.ends;
    // One shape for every record (no spreads): two of these per proxied request.
    return {
      method: x.method,
      url: x.url,
      host: x.view.host,
      protocol: x.protocol,
      source: ends.source,
      destination: ends.destination,
      headers,
      target: x.target,
      peerIdentity: x.target?.peerIdentity,
    };
  }

  /** Decides an exchange from its head: forward, or the answer given here. */
  decide(c: ClientConnection, x: Exchange, upgrade: boolean): void {
    const deny = (code: number, body: string, reason: string, close: boolean) => {
      x.action = 'answer';
      x.close ||= close;
      x.answer = simpleResponse(code, body, x.close);
      if (this.o.onRecord)
        this.record({ ...this.base(c, x), type: 'request', verdict: 'denied', code, reason });
    };
    if (x.method === 'CONNECT') {
      // A CONNECT tunnel would carry bytes no rule looks at.
      deny(403, DENIED_BODY, 'CONNECT tunnels are not proxied', true);
      return;
    }
    if (x.versionMinor >= 1 && !x.view.headers.has('host')) {
      deny(400, '', 'HTTP/1.1 request without Host', true);
      return;
    }
    if ((x.view.headers.get('host')?.length ?? 0) > 1) {
      // Rules judge one Host; a destination might take the other (RFC 9112 §3.2: 400).
      deny(400, '', 'more than one Host', true);
      return;
    }
    const target = this.o.resolve(c.socket);
    if (!target) {
      // Nothing says where this connection may go: refuse rather than guess, and close, so
      // that the client's next connection is judged by the datapath again.
      x.action = 'answer';
      x.close = true;
      x.answer = simpleResponse(503, 'No redirect for this connection\r\n', true);
      this.record({
        ...this.base(c, x),
        type: 'response',
        verdict: 'error',
        code: 503,
        reason: 'no redirect',
      });
      return;
    }
    x.target = target;
    if (!target.rules) {
      // The policy that sent this connection here changed: the client reconnects and the
      // datapath decides again.
      deny(403, DENIED_BODY, 'no L7 rule applies any more', true);
      return;
    }
    const verdict = target.rules.match(target.peerIdentity, x.view);
    if (!verdict.allowed) {
      deny(403, DENIED_BODY, 'Access denied', upgrade);
      return;
    }
    x.action = 'forward';
    if (verdict.edits.length) x.edits = verdict.edits;
    if (this.o.onRecord) this.record({ ...this.base(c, x), type: 'request', verdict: 'forwarded' });
  }
}

export interface HttpProxy {
  readonly server: NetServer;
  listen(port: number, host: string): Promise<number>;
  /** Serves on a bound socket made elsewhere (e.g. a transparent one from socket.ts). */
  listenFd(fd: number): Promise<void>;
  close(): Promise<void>;
}

export function createHttpProxy(o: HttpProxyOptions): HttpProxy {
  const core = new ProxyCore(o);
  const conns = new Set<ClientConnection>();
  const server = netServer({ noDelay: true }, (socket) => {
    const c = new ClientConnection(socket, core);
    conns.add(c);
    socket.once('close', () => conns.delete(c));
  });
  const listening = (start: (cb: () => void) => void) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      start(() => {
        server.off('error', reject);
        resolve();
      });
    });
  return {
    server,
    listen: async (port, host) => {
      await listening((cb) => server.listen(port, host, cb));
      const addr = server.address();
      return typeof addr === 'object' && addr ? addr.port : port;
    },
    listenFd: (fd) => listening((cb) => server.listen({ fd }, cb)),
    close: async () => {
      const closed = new Promise((r) => server.close(r));
      for (const c of conns) c.socket.destroy();
      await closed;
    },
  };
}
