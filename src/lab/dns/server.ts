/**
 * The lab's cluster DNS server (the `kube-dns` pod): UDP and TCP on port 53 of its pod,
 * answering from a Zone that can be swapped at any time (the lab rewrites it when
 * Services change). A malformed query gets FORMERR when its header is readable and is
 * dropped otherwise; nothing a client sends can stop the server.
 */
import { DnsFormatError, type DnsMessage, decodeMessage, RCode, responseTo } from '../../dns/message.js';
import { serveDns } from '../../dns/transport.js';
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

  const listener = await serveDns(o.host, o.port, (bytes, _client, _local, transport) =>
    handle(bytes, transport),
  );

  return {
    port: listener.port,
    setZone(z) {
      zone = z;
    },
    close: () => listener.close(),
  };
}
