/**
 * DNS over UDP and TCP on one address and port, for the servers Hypha runs (the lab's
 * cluster DNS, the DNS proxy): UDP answers are truncated to 512 bytes with TC set; TCP
 * messages are length-prefixed and answered in order. The handler decides; a handler
 * that returns nothing drops a UDP query and closes a TCP connection. A handler may
 * return wire bytes instead of a message (a proxy relaying an answer as it came: records
 * it does not decode keep their compressed names intact).
 */
import { createSocket } from 'node:dgram';
import { createServer, type Socket } from 'node:net';
import { type DnsMessage, encodeForUdp, encodeMessage } from './message.js';

export interface DnsPeer {
  ip: string;
  port: number;
}

export type DnsHandler = (
  query: Uint8Array,
  client: DnsPeer,
  local: DnsPeer,
  transport: 'udp' | 'tcp',
) => DnsResponse | undefined | Promise<DnsResponse | undefined>;

export type DnsResponse = DnsMessage | Uint8Array;

export interface DnsListener {
  readonly port: number;
  close(): Promise<void>;
}

export async function serveDns(host: string, port: number, handler: DnsHandler): Promise<DnsListener> {
  const udp = createSocket('udp4');
  udp.on('error', () => {}); // per-datagram send errors must not stop the server
  let local: DnsPeer = { ip: host, port };
  udp.on('message', (msg, rinfo) => {
    // A handler's failure (even a synchronous throw) costs one query, never the server.
    Promise.resolve()
      .then(() => handler(msg, { ip: rinfo.address, port: rinfo.port }, local, 'udp'))
      .then(
        (r) => r && udp.send(r instanceof Uint8Array ? r : encodeForUdp(r), rinfo.port, rinfo.address),
        () => {},
      );
  });
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(port, host, () => {
      udp.off('error', reject);
      resolve();
    });
  });
  const bound = udp.address().port;
  local = { ip: udp.address().address, port: bound };

  const conns = new Set<Socket>();
  const tcp = createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.setTimeout(10_000, () => sock.destroy());
    const client = { ip: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 };
    const local = { ip: sock.localAddress ?? '', port: sock.localPort ?? 0 };
    let pending = Buffer.alloc(0);
    let chain = Promise.resolve();
    sock.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const msg = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + msg.length);
        chain = chain
          .then(async () => {
            const r = await handler(msg, client, local, 'tcp');
            if (!r) {
              sock.destroy();
              return;
            }
            const out = r instanceof Uint8Array ? r : encodeMessage(r);
            const frame = Buffer.alloc(2 + out.length);
            frame.writeUInt16BE(out.length);
            frame.set(out, 2);
            sock.write(frame);
          })
          .catch(() => {
            sock.destroy();
          });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(bound, host, () => {
      tcp.off('error', reject);
      resolve();
    });
  });

  return {
    port: bound,
    async close() {
      for (const c of conns) c.destroy();
      await Promise.all([
        new Promise<void>((r) => udp.close(() => r())),
        new Promise<void>((r) => tcp.close(() => r())),
      ]);
    },
  };
}
