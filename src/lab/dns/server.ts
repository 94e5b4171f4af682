/**
 * The lab's cluster DNS server (the `kube-dns` pod): UDP and TCP on port 53 of its pod,
 * answering from a Zone that can be swapped at any time (the lab rewrites it when
 * Services change). A malformed query gets FORMERR when its header is readable and is
 * dropped otherwise; nothing a client sends can stop the server.
 */
import { DnsFormatError, type DnsMessage, decodeMessage, formErrFor } from '../../dns/message.js';
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

export async function startDnsServer(o: DnsServerOptions): Promise<DnsServer> {
  let zone = o.zone;
  const handle = (buf: Uint8Array, transport: 'udp' | 'tcp'): DnsMessage | undefined => {
    let q: DnsMessage;
    try {
      q = decodeMessage(buf);
    } catch (err) {
      if (err instanceof DnsFormatError) return formErrFor(buf);
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
