/**
 * The DNS proxy. Pod DNS traffic under a `dns` rule arrives here (redirected by the
 * datapath). A query for a name no rule allows is answered REFUSED, as Cilium does; an
 * allowed one is forwarded to the DNS server the pod asked, and the answer is handed to
 * `onAnswer` -- which updates FQDN identities and policy maps -- and only then released
 * to the pod, so the pod can never race its own policy. The upstream's answer is relayed
 * byte for byte (records this proxy does not decode keep their compressed names).
 *
 * Bad input never crashes the proxy nor passes it: malformed queries get FORMERR (or
 * nothing, when not even a header arrived), other opcodes NOTIMP, malformed, mismatched,
 * late or missing upstream answers SERVFAIL; every outcome is a DNS record for flows.
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import {
  DnsFormatError,
  type DnsMessage,
  decodeMessage,
  formErrFor,
  RCode,
  responseTo,
  rrTypeName,
} from '../../dns/message.js';
import { type DnsResponse, serveDns } from '../../dns/transport.js';

export type DnsTransport = 'udp' | 'tcp';

export interface DnsPeer {
  ip: string;
  port: number;
}

export interface DnsTarget {
  /** The DNS server the pod asked (the original destination). */
  upstream: { host: string; port: number };
  /** Whether the rules for this pod and server allow the name. */
  allows(name: string): boolean;
  /** The pod's endpoint and identity, for records and for attributing learned IPs. */
  endpointId: number;
  identity: number;
  /** The DNS server's identity, for records. */
  upstreamIdentity?: number;
  /** The policy rule that sent the pod's DNS here (the datapath's cookie), for records. */
  cookie?: number;
}

export interface DnsAnswer {
  endpointId: number;
  name: string;
  ips: string[];
  /** The smallest TTL among the answer's A/AAAA records, seconds. */
  ttl: number;
}

export interface DnsRecord {
  /** Wall clock, ms since the epoch. */
  time: number;
  type: 'query' | 'response';
  /** forwarded: to the server or, for a response, from it; refused: by policy; error: bad input or a failed exchange. */
  verdict: 'forwarded' | 'refused' | 'error';
  name: string;
  qtypes: string[];
  /** Record types of the answer section (responses). */
  rrtypes?: string[];
  rcode?: number;
  ips?: string[];
  ttl?: number;
  /** The pod. */
  source: DnsPeer;
  /** The server the pod asked, when known. */
  destination?: DnsPeer;
  endpointId?: number;
  identity?: number;
  upstreamIdentity?: number;
  cookie?: number;
  reason?: string;
  /** Query to response, nanoseconds. */
  latencyNs?: number;
  transport: DnsTransport;
}

export interface DnsProxyOptions {
  /** Finds the pod, the server it asked and the rules, from the client's address and transport. */
  resolve(client: DnsPeer, local: DnsPeer, transport: DnsTransport): DnsTarget | undefined;
  /** Must finish before the answer goes to the pod (policy updates). */
  onAnswer?(a: DnsAnswer): Promise<void> | void;
  onRecord?(r: DnsRecord): void;
  /** How long to wait for the upstream server (default 2000 ms). */
  upstreamTimeoutMs?: number;
  /** Queries in flight at once; more are answered SERVFAIL (default 1024). */
  maxInFlight?: number;
}

export interface DnsProxy {
  readonly port: number;
  close(): Promise<void>;
}

/** IPs of the A/AAAA records of an answer and their smallest TTL. */
function answerOf(m: DnsMessage, endpointId: number, name: string): DnsAnswer | undefined {
  const ips: string[] = [];
  let ttl = Number.POSITIVE_INFINITY;
  for (const rr of m.answers) {
    if (rr.data.kind === 'a' || rr.data.kind === 'aaaa') {
      if (!ips.includes(rr.data.address)) ips.push(rr.data.address);
      ttl = Math.min(ttl, rr.ttl);
    }
  }
  return ips.length ? { endpointId, name, ips, ttl } : undefined;
}

class UpstreamError extends Error {
  override name = 'UpstreamError';
}

/**
 * Queries over UDP to the upstreams, on shared sockets: a socket per upstream, used for
 * ROTATE_QUERIES queries or ROTATE_MS, then replaced (a fresh random port), and closed once
 * its last query is answered. Each query gets a random id unused on its socket; the answer
 * gets the client's id back. Datagrams from anyone but the upstream, or with an id nothing
 * waits for, are ignored: an off-path spoofer must guess the port and the id.
 */
class UdpUpstreams {
  static readonly ROTATE_QUERIES = 1000;
  static readonly ROTATE_MS = 10_000;
  readonly #current = new Map<string, UpstreamSocket>();

  ask(bytes: Uint8Array, up: { host: string; port: number }, timeoutMs: number): Promise<Uint8Array> {
    const key = `${up.host}:${up.port}`;
    let u = this.#current.get(key);
    if (
      !u ||
      u.uses >= UdpUpstreams.ROTATE_QUERIES ||
      Date.now() - u.born > UdpUpstreams.ROTATE_MS ||
      u.broken
    ) {
      u?.retire();
      u = new UpstreamSocket(up);
      this.#current.set(key, u);
    }
    return u.ask(bytes, timeoutMs);
  }

  close(): void {
    for (const u of this.#current.values()) u.retire();
    this.#current.clear();
  }
}

class UpstreamSocket {
  readonly #s = createSocket('udp4');
  readonly #up: { host: string; port: number };
  readonly #pending = new Map<
    number,
    { client: number; resolve(b: Uint8Array): void; reject(e: Error): void; timer: NodeJS.Timeout }
  >();
  readonly born = Date.now();
  uses = 0;
  broken = false;
  #retired = false;

  constructor(up: { host: string; port: number }) {
    this.#up = up;
    this.#s.on('error', (e) => {
      this.broken = true;
      for (const [id, p] of this.#pending)
        this.#settle(id, p, new UpstreamError(`upstream ${up.host}:${up.port}: ${e.message}`));
      this.retire();
    });
    this.#s.on('message', (m, rinfo) => {
      if (rinfo.address !== up.host || rinfo.port !== up.port || m.length < 2) return;
      const id = m.readUInt16BE(0);
      const p = this.#pending.get(id);
      if (!p) return;
      m.writeUInt16BE(p.client, 0);
      this.#settle(id, p, undefined, m);
    });
  }

  ask(bytes: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    this.uses++;
    return new Promise((resolve, reject) => {
      let id = 0;
      for (let i = 0; i < 64; i++) {
        id = (Math.random() * 0x10000) | 0;
        if (!this.#pending.has(id)) break;
      }
      if (this.#pending.has(id)) {
        reject(new UpstreamError(`upstream ${this.#up.host}:${this.#up.port}: no free query id`));
        return;
      }
      const out = Buffer.from(bytes);
      const client = out.readUInt16BE(0);
      out.writeUInt16BE(id, 0);
      const p = {
        client,
        resolve,
        reject,
        timer: setTimeout(
          () =>
            this.#settle(
              id,
              p,
              new UpstreamError(
                `upstream ${this.#up.host}:${this.#up.port} did not answer in ${timeoutMs} ms`,
              ),
            ),
          timeoutMs,
        ),
      };
      this.#pending.set(id, p);
      this.#s.send(out, this.#up.port, this.#up.host, (err) => {
        if (err)
          this.#settle(
            id,
            p,
            new UpstreamError(`upstream ${this.#up.host}:${this.#up.port}: ${err.message}`),
          );
      });
    });
  }

  #settle(
    id: number,
    p: { resolve(b: Uint8Array): void; reject(e: Error): void; timer: NodeJS.Timeout },
    err: Error | undefined,
    data?: Uint8Array,
  ): void {
    if (this.#pending.get(id) !== p) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(data!);
    if (this.#retired && this.#pending.size === 0) this.#close();
  }

  /** No new queries; closes once the last one is settled. */
  retire(): void {
    this.#retired = true;
    if (this.#pending.size === 0) this.#close();
  }

  #close(): void {
    try {
      this.#s.close();
    } catch {
      // Closed already.
    }
  }
}

/** Sends a query to the upstream over TCP (a connection per query) and returns the raw answer. */
function askUpstreamTcp(
  bytes: Uint8Array,
  up: { host: string; port: number },
  timeoutMs: number,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new UpstreamError(`upstream ${up.host}:${up.port} did not answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    let finished = false;
    const s = connect(up.port, up.host);
    const done = (err: Error | undefined, data?: Uint8Array) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(data!);
    };
    let buf = Buffer.alloc(0);
    s.on('error', (e) => done(new UpstreamError(`upstream ${up.host}:${up.port}: ${e.message}`)));
    s.on('close', () => done(new UpstreamError(`upstream ${up.host}:${up.port} closed without an answer`)));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
        done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
    const frame = Buffer.alloc(2 + bytes.length);
    frame.writeUInt16BE(bytes.length);
    frame.set(bytes, 2);
    s.write(frame);
  });
}

export async function startDnsProxy(host: string, port: number, o: DnsProxyOptions): Promise<DnsProxy> {
  const timeoutMs = o.upstreamTimeoutMs ?? 2000;
  const maxInFlight = o.maxInFlight ?? 1024;
  let inFlight = 0;
  const upstreams = new UdpUpstreams();
  const record = (r: Omit<DnsRecord, 'time'>) => {
    try {
      o.onRecord?.({ time: Date.now(), ...r });
    } catch {
      // A record sink's failure must not cost the pod its answer.
    }
  };

  /** The whole exchange for one query; returns the response to send, or undefined for none. */
  async function exchange(
    bytes: Uint8Array,
    client: DnsPeer,
    local: DnsPeer,
    transport: DnsTransport,
  ): Promise<DnsResponse | undefined> {
    const started = process.hrtime.bigint();
    const latencyNs = () => Number(process.hrtime.bigint() - started);
    let q: DnsMessage;
    try {
      q = decodeMessage(bytes);
    } catch (err) {
      if (!(err instanceof DnsFormatError)) throw err;
      const header = bytes.length >= 12;
      const base = { name: '', qtypes: [] as string[], source: client, transport, reason: err.message };
      record({ ...base, type: 'query', verdict: 'error' });
      if (!header) return undefined; // no id to answer to
      record({ ...base, type: 'response', verdict: 'error', rcode: RCode.FormErr });
      return formErrFor(bytes);
    }
    const name = q.questions[0]?.name ?? '';
    const qtypes = q.questions.map((x) => rrTypeName(x.type));
    const base = { name, qtypes, source: client, transport } as const;
    if (q.qr) {
      // A response sent to a server: answering would let two servers loop.
      record({ ...base, type: 'query', verdict: 'error', reason: 'a response, not a query' });
      return undefined;
    }
    const target = o.resolve(client, local, transport);
    const who = target
      ? {
          endpointId: target.endpointId,
          identity: target.identity,
          destination: { ip: target.upstream.host, port: target.upstream.port },
          ...(target.upstreamIdentity !== undefined ? { upstreamIdentity: target.upstreamIdentity } : {}),
          ...(target.cookie !== undefined ? { cookie: target.cookie } : {}),
        }
      : {};
    const reject = (verdict: 'refused' | 'error', rcode: number, reason: string) => {
      record({ ...base, ...who, type: 'query', verdict, rcode, reason });
      record({ ...base, ...who, type: 'response', verdict, rcode, reason, latencyNs: latencyNs() });
      return responseTo(q, rcode);
    };
    if (q.opcode !== 0) return reject('error', RCode.NotImp, `opcode ${q.opcode} is not a query`);
    if (q.questions.length !== 1)
      return reject('error', RCode.FormErr, `${q.questions.length} questions (one is supported)`);
    if (!target) return reject('refused', RCode.Refused, 'no DNS redirect for this client');
    if (!target.allows(name)) return reject('refused', RCode.Refused, 'name not allowed by any dns rule');
    if (inFlight >= maxInFlight)
      return reject('error', RCode.ServFail, `${inFlight} queries in flight: the proxy is saturated`);

    record({ ...base, ...who, type: 'query', verdict: 'forwarded' });
    const fail = (reason: string) => {
      record({
        ...base,
        ...who,
        type: 'response',
        verdict: 'error',
        rcode: RCode.ServFail,
        reason,
        latencyNs: latencyNs(),
      });
      return responseTo(q, RCode.ServFail);
    };
    inFlight++;
    let raw: Uint8Array;
    let answer: DnsMessage;
    try {
      raw =
        transport === 'udp'
          ? await upstreams.ask(bytes, target.upstream, timeoutMs)
          : await askUpstreamTcp(bytes, target.upstream, timeoutMs);
      answer = decodeMessage(raw);
    } catch (err) {
      if (!(err instanceof UpstreamError || err instanceof DnsFormatError)) throw err;
      return fail(err instanceof DnsFormatError ? `malformed upstream answer: ${err.message}` : err.message);
    } finally {
      inFlight--;
    }
    const aq = answer.questions[0];
    if (
      !answer.qr ||
      answer.id !== q.id ||
      answer.questions.length !== 1 ||
      aq?.name.toLowerCase() !== name.toLowerCase() ||
      aq.type !== q.questions[0]!.type
    )
      return fail('upstream answer does not match the query');
    const learned = answerOf(answer, target.endpointId, name);
    if (learned && o.onAnswer) {
      try {
        await o.onAnswer(learned);
      } catch (err) {
        // Policy could not take the IPs: the pod would be refused at L3 anyway; say so now.
        return fail(`policy update failed: ${(err as Error).message}`);
      }
    }
    record({
      ...base,
      ...who,
      type: 'response',
      verdict: 'forwarded',
      rcode: answer.rcode,
      rrtypes: answer.answers.map((rr) => rrTypeName(rr.type)),
      ips: learned?.ips ?? [],
      ...(learned ? { ttl: learned.ttl } : {}),
      ...(answer.tc ? { reason: 'truncated: the client retries over TCP' } : {}),
      latencyNs: latencyNs(),
    });
    return raw;
  }

  /** A bug in an exchange still answers (SERVFAIL) and is recorded. */
  async function guarded(
    bytes: Uint8Array,
    client: DnsPeer,
    local: DnsPeer,
    transport: DnsTransport,
  ): Promise<DnsResponse | undefined> {
    try {
      return await exchange(bytes, client, local, transport);
    } catch (err) {
      const reason = `proxy error: ${(err as Error).message}`;
      record({ type: 'response', verdict: 'error', name: '', qtypes: [], source: client, transport, reason });
      const q = formErrFor(bytes);
      return q && { ...q, rcode: RCode.ServFail };
    }
  }

  const listener = await serveDns(host, port, guarded);
  return {
    port: listener.port,
    async close() {
      await listener.close();
      upstreams.close();
    },
  };
}
