/** DNS clients for tests: one query over UDP or TCP to 127.0.0.1. */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { type DnsMessage, decodeMessage, encodeMessage } from '../../src/dns/message.js';

/** Raw bytes over UDP; undefined when nothing answers in time. */
export function udpExchange(
  port: number,
  bytes: Uint8Array,
  timeoutMs = 1000,
): Promise<Uint8Array | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m);
    });
    s.send(bytes, port, '127.0.0.1');
  });
}

/** A decoded answer over UDP, or undefined. */
export async function udpQuery(
  port: number,
  bytes: Uint8Array,
  timeoutMs = 1000,
): Promise<DnsMessage | undefined> {
  const r = await udpExchange(port, bytes, timeoutMs);
  return r && decodeMessage(r);
}

/** A decoded answer over TCP (length-prefixed). */
export function tcpQuery(port: number, q: DnsMessage): Promise<DnsMessage> {
  return new Promise((resolve, reject) => {
    const wire = encodeMessage(q);
    const sock = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        sock.end();
        resolve(decodeMessage(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
    sock.on('error', reject);
    const frame = Buffer.alloc(2 + wire.length);
    frame.writeUInt16BE(wire.length);
    frame.set(wire, 2);
    sock.write(frame);
  });
}
