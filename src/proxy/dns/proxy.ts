/**
 * The DNS proxy. Pod DNS traffic under a `dns` rule arrives here (redirected by the
 * datapath). A query for a name no rule allows is answered REFUSED, as Cilium does; an
 * allowed one is forwarded to the DNS server the pod asked, and the answer is handed to
 * `onAnswer` -- which updates FQDN identities and policy maps -- and only then released
 * to the pod, so the pod can never race its own policy. Malformed queries get FORMERR,
 * malformed or missing upstream answers SERVFAIL; every outcome is a DNS record for flows.
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import {
  DnsFormatError,
  type DnsMessage,
  decodeMessage,
  formErrFor,
  RCode,
  RRType,
  responseTo,
} from '../../dns/message.js';
import { serveDns } from '../../dns/transport.js';

export interface DnsTarget {
  /** The DNS server the pod asked (the original destination). */
  upstream: { host: string; port: number };
  /** Whether the rules for this pod and server allow the name. */
  allows(name: string): boolean;
  /** The pod's endpoint, for records and for attributing learned IPs. */
  endpointId: number;
  identity: number;
}

export interface DnsAnswer {
  endpointId: number;
  name: string;
  ips: string[];
  /** The smallest TTL among the answer's A/AAAA records, seconds. */
  ttl: number;
}

export interface DnsRecord {
  type: 'query' | 'response';
  verdict: 'forwarded' | 'refused' | 'error';
  name: string;
  qtypes: string[];
  rcode?: number;
  ips?: string[];
  ttl?: number;
  source: { ip: string; port: number };
  endpointId?: number;
  identity?: number;
  reason?: string;
  /** Query to response, nanoseconds. */
  latencyNs?: number;
  transport: 'udp' | 'tcp';
}

export interface DnsProxyOptions {
  /** Finds the pod and the rules from the client address (and the local address it reached). */
  resolve(client: { ip: string; port: number }, local: { ip: string; port: number }): DnsTarget | undefined;
  /** Must finish before the answer goes to the pod (policy updates). */
  onAnswer?(a: DnsAnswer): Promise<void> | void;
  onRecord?(r: DnsRecord): void;
  /** How long to wait for the upstream server. */
  upstreamTimeoutMs?: number;
}

export interface DnsProxy {
  readonly port: number;
  close(): Promise<void>;
}

const QTYPE = (t: number) => Object.entries(RRType).find(([, v]) => v === t)?.[0] ?? `TYPE${t}`;

function answerOf(m: DnsMessage, endpointId: number): DnsAnswer | undefined {
  const q = m.questions[0];
  if (!q) return undefined;
  const ips: string[] = [];
  let ttl = Number.POSITIVE_INFINITY;
  for (const rr of m.answers) {
    if (rr.data.kind === 'a' || rr.data.kind === 'aaaa') {
      ips.push(rr.data.address);
      ttl = Math.min(ttl, rr.ttl);
    }
  }
  return ips.length ? { endpointId, name: q.name, ips, ttl } : undefined;
}

/** Sends a query to the upstream over UDP or TCP and returns the raw answer. */
function askUpstream(
  bytes: Uint8Array,
  up: { host: string; port: number },
  transport: 'udp' | 'tcp',
  timeoutMs: number,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new Error(`upstream ${up.host}:${up.port} did not answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    let cleanup = () => {};
    const done = (err: Error | undefined, data?: Uint8Array) => {
      clearTimeout(timer);
      cleanup();
      if (err) reject(err);
      else resolve(data!);
    };
    if (transport === 'udp') {
      const s = createSocket('udp4');
      cleanup = () => s.close();
      s.on('error', (e) => done(e));
      s.on('message', (m) => done(undefined, m));
      s.send(bytes, up.port, up.host);
    } else {
      const s = connect(up.port, up.host);
      cleanup = () => s.destroy();
      let buf = Buffer.alloc(0);
      s.on('error', (e) => done(e));
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
          done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
      });
      const frame = Buffer.alloc(2 + bytes.length);
      frame.writeUInt16BE(bytes.length);
      frame.set(bytes, 2);
      s.write(frame);
    }
  });
}

export async function startDnsProxy(host: string, port: number, o: DnsProxyOptions): Promise<DnsProxy> {
  const timeoutMs = o.upstreamTimeoutMs ?? 2000;
  const record = (r: DnsRecord) => o.onRecord?.(r);

  /** The whole exchange for one query; returns the response to send, or undefined for none. */
  async function exchange(
    bytes: Uint8Array,
    client: { ip: string; port: number },
    local: { ip: string; port: number },
    transport: 'udp' | 'tcp',
  ): Promise<DnsMessage | undefined> {
    const started = process.hrtime.bigint();
    let q: DnsMessage;
    try {
      q = decodeMessage(bytes);
    } catch (err) {
      if (!(err instanceof DnsFormatError) || bytes.length < 12) return undefined;
      record({
        type: 'query',
        verdict: 'error',
        name: '',
        qtypes: [],
        rcode: RCode.FormErr,
        source: client,
        reason: err.message,
        transport,
      });
      return formErrFor(bytes);
    }
    if (q.qr) return undefined;
    const name = q.questions[0]?.name ?? '';
    const qtypes = q.questions.map((x) => QTYPE(x.type));
    const target = o.resolve(client, local);
    const base = { name, qtypes, source: client, transport } as const;
    if (!target) {
      record({
        ...base,
        type: 'query',
        verdict: 'refused',
        rcode: RCode.Refused,
        reason: 'no DNS redirect for this client',
      });
      return responseTo(q, RCode.Refused);
    }
    const who = { endpointId: target.endpointId, identity: target.identity };
    if (q.questions.length !== 1 || !target.allows(name)) {
      record({
        ...base,
        ...who,
        type: 'query',
        verdict: 'refused',
        rcode: RCode.Refused,
        reason: 'name not allowed by any dns rule',
      });
      return responseTo(q, RCode.Refused);
    }
    record({ ...base, ...who, type: 'query', verdict: 'forwarded' });
    let answer: DnsMessage;
    let raw: Uint8Array;
    try {
      raw = await askUpstream(bytes, target.upstream, transport, timeoutMs);
      answer = decodeMessage(raw);
      if (answer.id !== q.id) throw new DnsFormatError(`upstream answered id ${answer.id} to query ${q.id}`);
    } catch (err) {
      record({
        ...base,
        ...who,
        type: 'response',
        verdict: 'error',
        rcode: RCode.ServFail,
        reason: (err as Error).message,
        transport,
      });
      return responseTo(q, RCode.ServFail);
    }
    const learned = answerOf(answer, target.endpointId);
    if (learned && o.onAnswer) {
      try {
        await o.onAnswer(learned);
      } catch (err) {
        // Policy could not take the IPs: the pod would be refused at L3 anyway; say so now.
        record({
          ...base,
          ...who,
          type: 'response',
          verdict: 'error',
          rcode: RCode.ServFail,
          reason: `policy update failed: ${(err as Error).message}`,
        });
        return responseTo(q, RCode.ServFail);
      }
    }
    record({
      ...base,
      ...who,
      type: 'response',
      verdict: 'forwarded',
      rcode: answer.rcode,
      ips: learned?.ips ?? [],
      ...(learned ? { ttl: learned.ttl } : {}),
      latencyNs: Number(process.hrtime.bigint() - started),
    });
    return answer;
  }

  const listener = await serveDns(host, port, exchange);
  return { port: listener.port, close: () => listener.close() };
}
