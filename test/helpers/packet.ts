/** Crafted Ethernet/IPv4 packets for BPF_PROG_TEST_RUN. Checksums are left zero: the programs do not check them. */

export interface PacketSpec {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | 'icmp' | 'sctp';
  sport?: number;
  dport?: number;
  /** TCP flags byte (SYN = 0x02, ACK = 0x10, FIN = 0x01, RST = 0x04). */
  flags?: number;
  icmpType?: number;
  icmpId?: number;
  payload?: number;
}

const PROTO = { tcp: 6, udp: 17, icmp: 1, sctp: 132 } as const;

function ip4(a: string): number[] {
  return a.split('.').map(Number);
}

export function packet(p: PacketSpec): Uint8Array {
  const l4len = p.proto === 'tcp' ? 20 : p.proto === 'icmp' ? 8 : p.proto === 'sctp' ? 12 : 8;
  const payload = p.payload ?? 16;
  const total = 20 + l4len + payload;
  const buf = new Uint8Array(14 + total);
  const d = new DataView(buf.buffer);
  buf.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  d.setUint16(12, 0x0800);
  buf[14] = 0x45;
  d.setUint16(16, total);
  buf[22] = 64;
  buf[23] = PROTO[p.proto];
  buf.set(ip4(p.src), 26);
  buf.set(ip4(p.dst), 30);
  const l4 = 34;
  if (p.proto === 'icmp') {
    buf[l4] = p.icmpType ?? 8;
    d.setUint16(l4 + 4, p.icmpId ?? 77);
  } else {
    d.setUint16(l4, p.sport ?? 40000);
    d.setUint16(l4 + 2, p.dport ?? 80);
    if (p.proto === 'tcp') {
      buf[l4 + 12] = 0x50;
      buf[l4 + 13] = p.flags ?? 0x02;
    } else if (p.proto === 'udp') {
      d.setUint16(l4 + 4, 8 + payload);
    }
  }
  return buf;
}

/** The reply direction of a packet spec. */
export function reply(p: PacketSpec, flags = 0x12): PacketSpec {
  const r: PacketSpec = { ...p, src: p.dst, dst: p.src, flags };
  if (p.sport !== undefined) r.dport = p.sport;
  if (p.dport !== undefined) r.sport = p.dport;
  if (p.proto === 'icmp') r.icmpType = 0;
  return r;
}
