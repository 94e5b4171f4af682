/**
 * The captured bytes of an event (an Ethernet frame, often cut short) decoded into a
 * flow's ethernet, IP and l4 fields and Hubble's summary text. Layers are decoded in
 * order and decoding stops at the first one that is unknown or truncated, so a short
 * capture still yields its outer layers; the summary names the last layer decoded, as
 * Hubble's does ("TCP Flags: SYN, ACK", "ICMPv4 EchoRequest", "UDP", "IPv4").
 */
import type { Ethernet, IP, Layer4, TCPFlags } from './flow.js';

export interface DecodedPacket {
  ethernet?: Ethernet;
  IP?: IP;
  l4?: Layer4;
  /** IP protocol number of the L4 header, when it was decoded. */
  protocol?: number;
  sourcePort?: number;
  destinationPort?: number;
  summary: string;
}

const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58, SCTP: 132, HOPOPTS: 0 } as const;

export function decodePacket(p: Uint8Array): DecodedPacket {
  const out: DecodedPacket = { summary: '' };
  if (p.length < 14) return out;
  const d = new DataView(p.buffer, p.byteOffset, p.byteLength);
  out.ethernet = { source: mac(p, 6), destination: mac(p, 0) };
  out.summary = 'Ethernet';
  let etherType = d.getUint16(12);
  let off = 14;
  if (etherType === 0x8100 && p.length >= 18) {
    etherType = d.getUint16(16);
    off = 18;
  }
  let proto: number;
  if (etherType === 0x0800) {
    if (p.length < off + 20 || p[off]! >> 4 !== 4) return out;
    const ihl = (p[off]! & 0x0f) * 4;
    if (ihl < 20 || p.length < off + ihl) return out;
    out.IP = { source: ipv4(p, off + 12), destination: ipv4(p, off + 16), ipVersion: 'IPv4' };
    out.summary = 'IPv4';
    // A later fragment carries no L4 header.
    if ((d.getUint16(off + 6) & 0x1fff) !== 0) return out;
    proto = p[off + 9]!;
    off += ihl;
  } else if (etherType === 0x86dd) {
    if (p.length < off + 40 || p[off]! >> 4 !== 6) return out;
    out.IP = { source: ipv6(p, off + 8), destination: ipv6(p, off + 24), ipVersion: 'IPv6' };
    out.summary = 'IPv6';
    proto = p[off + 6]!;
    off += 40;
    if (proto === IPPROTO.HOPOPTS) {
      if (p.length < off + 8) return out;
      proto = p[off]!;
      off += (p[off + 1]! + 1) * 8;
    }
  } else {
    return out;
  }
  decodeL4(p, d, off, proto, out);
  return out;
}

function decodeL4(p: Uint8Array, d: DataView, off: number, proto: number, out: DecodedPacket): void {
  switch (proto) {
    case IPPROTO.TCP: {
      if (p.length < off + 20) return;
      // Per packet: the flags byte (and NS) indexes precomputed flag sets and summaries.
      const bits = p[off + 13]! | ((p[off + 12]! & 0x01) << 8);
      const flags = tcpFlags(bits);
      setPorts(out, d, off, proto);
      out.l4 = { TCP: { ...portFields(out), flags } };
      out.summary = tcpSummary(bits);
      return;
    }
    case IPPROTO.UDP:
      if (p.length < off + 8) return;
      setPorts(out, d, off, proto);
      out.l4 = { UDP: portFields(out) };
      out.summary = 'UDP';
      return;
    case IPPROTO.SCTP:
      if (p.length < off + 12) return;
      setPorts(out, d, off, proto);
      out.l4 = { SCTP: portFields(out) };
      out.summary = 'SCTP';
      return;
    case IPPROTO.ICMP:
    case IPPROTO.ICMPV6: {
      if (p.length < off + 4) return;
      const type = p[off]!;
      const code = p[off + 1]!;
      const v6 = proto === IPPROTO.ICMPV6;
      const icmp = { ...(type ? { type } : {}), ...(code ? { code } : {}) };
      out.protocol = proto;
      out.l4 = v6 ? { ICMPv6: icmp } : { ICMPv4: icmp };
      out.summary = `${v6 ? 'ICMPv6' : 'ICMPv4'} ${icmpTypeCode(v6 ? ICMPV6_TYPES : ICMPV4_TYPES, type, code)}`;
      return;
    }
  }
}

function setPorts(out: DecodedPacket, d: DataView, off: number, proto: number): void {
  out.protocol = proto;
  out.sourcePort = d.getUint16(off);
  out.destinationPort = d.getUint16(off + 2);
}

function portFields(out: DecodedPacket): { source_port?: number; destination_port?: number } {
  const r: { source_port?: number; destination_port?: number } = {};
  if (out.sourcePort) r.source_port = out.sourcePort;
  if (out.destinationPort) r.destination_port = out.destinationPort;
  return r;
}

const TCP_FLAG_BITS = [
  ['FIN', 0x01],
  ['SYN', 0x02],
  ['RST', 0x04],
  ['PSH', 0x08],
  ['ACK', 0x10],
  ['URG', 0x20],
  ['ECE', 0x40],
  ['CWR', 0x80],
  ['NS', 0x100],
] as const;
/** Hubble lists the flags in this order in summaries. */
const SUMMARY_ORDER = ['SYN', 'ACK', 'RST', 'FIN', 'PSH', 'URG', 'ECE', 'CWR', 'NS'] as const;
const flagSets = new Map<number, { flags: TCPFlags; summary: string }>();

function tcpFlagSet(bits: number): { flags: TCPFlags; summary: string } {
  let e = flagSets.get(bits);
  if (!e) {
    const flags: TCPFlags = {};
    for (const [name, bit] of TCP_FLAG_BITS) if (bits & bit) flags[name] = true;
    e = { flags, summary: `TCP Flags: ${SUMMARY_ORDER.filter((n) => flags[n]).join(', ')}` };
    flagSets.set(bits, e);
  }
  return e;
}

/** Shared between flows, as flows are not modified once built. */
function tcpFlags(bits: number): TCPFlags {
  return tcpFlagSet(bits).flags;
}

function tcpSummary(bits: number): string {
  return tcpFlagSet(bits).summary;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function mac(p: Uint8Array, o: number): string {
  return `${HEX[p[o]!]}:${HEX[p[o + 1]!]}:${HEX[p[o + 2]!]}:${HEX[p[o + 3]!]}:${HEX[p[o + 4]!]}:${HEX[p[o + 5]!]}`;
}

/** Addresses repeat from packet to packet: their text is kept, up to a bound. */
const ipv4Text = new Map<number, string>();

function ipv4(p: Uint8Array, o: number): string {
  const n = ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
  let s = ipv4Text.get(n);
  if (s === undefined) {
    if (ipv4Text.size >= 65536) ipv4Text.clear();
    s = `${p[o]}.${p[o + 1]}.${p[o + 2]}.${p[o + 3]}`;
    ipv4Text.set(n, s);
  }
  return s;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run of zero groups as `::`. */
export function ipv6(p: Uint8Array, o: number): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((p[o + 2 * i]! << 8) | p[o + 2 * i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

type TypeTable = Record<number, [string, Record<number, string>?]>;

// Names as gopacket prints ICMP type codes (Hubble's summaries come from there).
const ICMPV4_TYPES: TypeTable = {
  0: ['EchoReply'],
  3: [
    'DestinationUnreachable',
    {
      0: 'Net',
      1: 'Host',
      2: 'Protocol',
      3: 'Port',
      4: 'FragmentationNeeded',
      5: 'SourceRoutingFailed',
      6: 'NetUnknown',
      7: 'HostUnknown',
      8: 'SourceIsolated',
      9: 'NetAdminProhibited',
      10: 'HostAdminProhibited',
      11: 'NetTOS',
      12: 'HostTOS',
      13: 'CommAdminProhibited',
      14: 'HostPrecedence',
      15: 'PrecedenceCutoff',
    },
  ],
  4: ['SourceQuench'],
  5: ['Redirect', { 0: 'Net', 1: 'Host', 2: 'TOS+Net', 3: 'TOS+Host' }],
  8: ['EchoRequest'],
  9: ['RouterAdvertisement'],
  10: ['RouterSolicitation'],
  11: ['TimeExceeded', { 0: 'TTLExceeded', 1: 'FragmentReassemblyTimeExceeded' }],
  12: ['ParameterProblem', { 0: 'PointerIndicatesError', 1: 'MissingOption', 2: 'BadLength' }],
  13: ['TimestampRequest'],
  14: ['TimestampReply'],
  15: ['InfoRequest'],
  16: ['InfoReply'],
  17: ['AddressMaskRequest'],
  18: ['AddressMaskReply'],
};

const ICMPV6_TYPES: TypeTable = {
  1: [
    'DestinationUnreachable',
    {
      0: 'NoRouteToDst',
      1: 'AdminProhibited',
      2: 'BeyondScopeOfSrc',
      3: 'AddressUnreachable',
      4: 'PortUnreachable',
      5: 'SrcAddressFailedPolicy',
      6: 'RejectRouteToDst',
    },
  ],
  2: ['PacketTooBig'],
  3: ['TimeExceeded', { 0: 'HopLimitExceeded', 1: 'FragmentReassemblyTimeExceeded' }],
  4: [
    'ParameterProblem',
    { 0: 'ErroneousHeaderField', 1: 'UnrecognizedNextHeader', 2: 'UnrecognizedIPv6Option' },
  ],
  128: ['EchoRequest'],
  129: ['EchoReply'],
  133: ['RouterSolicitation'],
  134: ['RouterAdvertisement'],
  135: ['NeighborSolicitation'],
  136: ['NeighborAdvertisement'],
  137: ['Redirect'],
};

function icmpTypeCode(table: TypeTable, type: number, code: number): string {
  const info = table[type];
  if (!info) return `${type}(${code})`;
  const [name, codes] = info;
  if (!codes) return code === 0 ? name : `${name}(Code: ${code})`;
  const c = codes[code];
  return c === undefined ? `${name}(Code: ${code})` : `${name}(${c})`;
}

/** gopacket's name of an ICMP type and code, as Hubble prints and labels them. */
export function icmpTypeName(v6: boolean, type: number, code: number): string {
  return icmpTypeCode(v6 ? ICMPV6_TYPES : ICMPV4_TYPES, type, code);
}
