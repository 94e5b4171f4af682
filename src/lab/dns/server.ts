/**
 * The lab's cluster DNS server (the `kube-dns` pod): UDP and TCP on port 53 of its pod,
 * answering from a Zone that can be swapped at any time (the lab rewrites it when
 * Services change). A malformed query gets FORMERR when its header is readable and is
 * dropped otherwise; nothing a client sends can stop the server.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import {
  DnsFormatError,
  type DnsMessage,
  decodeMessage,
  encodeForUdp,
  encodeMessage,
  RCode,
  responseTo,
} from '../../dns/message.js';
import type { Zone } from './zone.js';

export interface DnsServerOptions {
  host: string;
  port: number;
  zone: Zone;
  /** Called for every answered query (for logs and tests). */
  onQuery?: (q: DnsMessage, r: DnsMessage, transport: 'udp' | 'tcp') => void;
}

export interface DnsServer {
  readonly port: number;
  setZone(zone: Zone): void;
  close(): Promise<void>;
}

/** FORMERR for a query whose 12-byte header is intact; undefined when even that is not. */
function formErr(buf: Uint8Array): DnsMessage | undefined {
  if (buf.length < 12) return undefined;
  const id = (buf[0]! << 8) | buf[1]!;
  return responseTo(
    {
      id,
      qr: false,
      opcode: 0,
      aa: false,
      tc: false,
      rd: (buf[2]! & 1) === 1,
      ra: false,
      rcode: 0,
      questions: [],
      answers: [],
      authorities: [],
      additionals: [],
    },
    RCode.FormErr,
  );
}

export async function startDnsServer(o: DnsServerOptions): Promise<DnsServer> {
  let zone = o.zone;
  const handle = (buf: Uint8Array, transport: 'udp' | 'tcp'): DnsMessage | undefined => {
    let q: DnsMessage;
    try {
      q = decodeMessage(buf);
    } catch (err) {
      if (err instanceof DnsFormatError) return formErr(buf);
      throw err;
    }
    if (q.qr) return undefined; // a response sent to us: ignore
    const r = zone.answer(q);
    o.onQuery?.(q, r, transport);
    return r;
  };

  const udp: Socket = createSocket({ type: 'udp4', reuseAddr: false });
  udp.on('message', (msg, rinfo) => {
    const r = handle(msg, 'udp');
    if (r) udp.send(encodeForUdp(r), rinfo.port, rinfo.address);
  });
  udp.on('error', () => {}); // per-packet send errors must not stop the server
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(o.port, o.host, () => {
      udp.off('error', reject);
      resolve();
    });
  });
  const port = udp.address().port;

  const conns = new Set<TcpSocket>();
  const tcp: Server = createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    let pending = Buffer.alloc(0);
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const len = pending.readUInt16BE(0);
        if (pending.length < 2 + len) break;
        const msg = pending.subarray(2, 2 + len);
        pending = pending.subarray(2 + len);
        const r = handle(msg, 'tcp');
        if (!r) {
          sock.destroy();
          return;
        }
        const out = encodeMessage(r);
        const frame = Buffer.alloc(2 + out.length);
        frame.writeUInt16BE(out.length, 0);
        frame.set(out, 2);
        sock.write(frame);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(port, o.host, () => {
      tcp.off('error', reject);
      resolve();
    });
  });

  return {
    port,
    setZone(z) {
      zone = z;
    },
    async close() {
      for (const c of conns) c.destroy();
      await Promise.all([
        new Promise<void>((r) => udp.close(() => r())),
        new Promise<void>((r) => tcp.close(() => r())),
      ]);
    },
  };
}
