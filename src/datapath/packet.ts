/** A short summary of a captured Ethernet/IPv4 packet, for monitor lines and flows. */

export interface PacketSummary {
  src: string;
  dst: string;
  protocol: number;
  sport?: number;
  dport?: number;
  tcpFlags?: string[];
  icmpType?: number;
}

const TCP_FLAGS = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG'];

export function summarizePacket(p: Uint8Array): PacketSummary | undefined {
  if (p.length < 34 || p[12] !== 0x08 || p[13] !== 0x00) return undefined;
  const d = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const ihl = (p[14]! & 0x0f) * 4;
  const ip = (o: number) => `${p[o]}.${p[o + 1]}.${p[o + 2]}.${p[o + 3]}`;
  const s: PacketSummary = { src: ip(26), dst: ip(30), protocol: p[23]! };
  const l4 = 14 + ihl;
  if ((s.protocol === 6 || s.protocol === 17 || s.protocol === 132) && p.length >= l4 + 4) {
    s.sport = d.getUint16(l4);
    s.dport = d.getUint16(l4 + 2);
    if (s.protocol === 6 && p.length >= l4 + 14) {
      const f = p[l4 + 13]!;
      s.tcpFlags = TCP_FLAGS.filter((_, i) => f & (1 << i));
    }
  } else if (s.protocol === 1 && p.length > l4) {
    s.icmpType = p[l4];
  }
  return s;
}
