/**
 * DNS messages (RFC 1035) in and out of wire format: what the lab's cluster DNS serves and
 * what the DNS proxy inspects. Decoding validates everything it reads (lengths, label
 * sizes, compression pointers that only point backwards), so a malformed packet is a
 * DnsFormatError, never a crash or a loop.
 */

export const RRType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
} as const;

export const RCode = {
  NoError: 0,
  FormErr: 1,
  ServFail: 2,
  NXDomain: 3,
  NotImp: 4,
  Refused: 5,
} as const;

const TYPE_NAMES = new Map<number, string>(Object.entries(RRType).map(([k, v]) => [v, k]));
const RCODE_NAMES = new Map<number, string>(Object.entries(RCode).map(([k, v]) => [v, k]));

export function rrTypeName(t: number): string {
  return TYPE_NAMES.get(t) ?? `TYPE${t}`;
}

export function rcodeName(r: number): string {
  return RCODE_NAMES.get(r) ?? `RCODE${r}`;
}

export class DnsFormatError extends Error {
  override name = 'DnsFormatError';
}

export interface Question {
  name: string;
  type: number;
  class: number;
}

/** A resource record. `data` is decoded for the types Hypha uses, raw bytes otherwise. */
export interface ResourceRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: RecordData;
}

export type RecordData =
  | { kind: 'a'; address: string }
  | { kind: 'aaaa'; address: string }
  | { kind: 'name'; name: string } // CNAME, PTR, NS
  | { kind: 'srv'; priority: number; weight: number; port: number; target: string }
  | { kind: 'txt'; strings: string[] }
  | {
      kind: 'soa';
      mname: string;
      rname: string;
      serial: number;
      refresh: number;
      retry: number;
      expire: number;
      minimum: number;
    }
  | { kind: 'raw'; bytes: Uint8Array };

export interface DnsMessage {
  id: number;
  /** true for responses. */
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  rcode: number;
  questions: Question[];
  answers: ResourceRecord[];
  authorities: ResourceRecord[];
  additionals: ResourceRecord[];
}

const MAX_NAME = 255;
const MAX_LABEL = 63;

/** Lower-cases and strips the trailing dot: names compare this way. */
export function canonicalName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

class Reader {
  off = 0;
  constructor(readonly buf: Uint8Array) {}
  #need(n: number, what: string): void {
    if (this.off + n > this.buf.length) throw new DnsFormatError(`truncated ${what} at byte ${this.off}`);
  }
  u8(what: string): number {
    this.#need(1, what);
    return this.buf[this.off++]!;
  }
  u16(what: string): number {
    this.#need(2, what);
    const v = (this.buf[this.off]! << 8) | this.buf[this.off + 1]!;
    this.off += 2;
    return v;
  }
  u32(what: string): number {
    this.#need(4, what);
    const v =
      ((this.buf[this.off]! << 24) >>> 0) +
      ((this.buf[this.off + 1]! << 16) | (this.buf[this.off + 2]! << 8) | this.buf[this.off + 3]!);
    this.off += 4;
    return v;
  }
  bytes(n: number, what: string): Uint8Array {
    this.#need(n, what);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }

  /** A possibly compressed name. Pointers must go strictly backwards, which rules out loops. */
  name(what: string): string {
    const labels: string[] = [];
    let pos = this.off;
    let jumped = false;
    let length = 0;
    let limit = pos; // a pointer must point before the smallest position seen so far
    for (;;) {
      if (pos >= this.buf.length) throw new DnsFormatError(`truncated ${what} at byte ${pos}`);
      const len = this.buf[pos]!;
      if ((len & 0xc0) === 0xc0) {
        if (pos + 1 >= this.buf.length) throw new DnsFormatError(`truncated ${what} pointer at byte ${pos}`);
        const target = ((len & 0x3f) << 8) | this.buf[pos + 1]!;
        if (target >= limit)
          throw new DnsFormatError(`${what}: compression pointer at byte ${pos} does not point backwards`);
        if (!jumped) this.off = pos + 2;
        jumped = true;
        limit = target;
        pos = target;
        continue;
      }
      if ((len & 0xc0) !== 0) throw new DnsFormatError(`${what}: reserved label type at byte ${pos}`);
      if (len === 0) {
        if (!jumped) this.off = pos + 1;
        break;
      }
      if (pos + 1 + len > this.buf.length) throw new DnsFormatError(`truncated ${what} label at byte ${pos}`);
      length += len + 1;
      if (length > MAX_NAME) throw new DnsFormatError(`${what}: name longer than ${MAX_NAME} bytes`);
      let label = '';
      for (let i = pos + 1; i <= pos + len; i++) {
        const c = this.buf[i]!;
        label += c === 0x2e || c === 0x5c ? `\\${String.fromCharCode(c)}` : String.fromCharCode(c);
      }
      labels.push(label);
      pos += 1 + len;
    }
    return labels.join('.');
  }
}

function decodeRecord(r: Reader, section: string): ResourceRecord {
  const name = r.name(`${section} name`);
  const type = r.u16(`${section} type`);
  const klass = r.u16(`${section} class`);
  const ttl = r.u32(`${section} ttl`);
  const rdlen = r.u16(`${section} rdlength`);
  const end = r.off + rdlen;
  if (end > r.buf.length)
    throw new DnsFormatError(`truncated ${section} rdata of ${rrTypeName(type)} ${name}`);
  let data: RecordData;
  const what = `${section} ${rrTypeName(type)} ${name}`;
  switch (type) {
    case RRType.A: {
      if (rdlen !== 4) throw new DnsFormatError(`${what}: A rdata of ${rdlen} bytes`);
      data = { kind: 'a', address: Array.from(r.bytes(4, what)).join('.') };
      break;
    }
    case RRType.AAAA: {
      if (rdlen !== 16) throw new DnsFormatError(`${what}: AAAA rdata of ${rdlen} bytes`);
      data = { kind: 'aaaa', address: formatIpv6(r.bytes(16, what)) };
      break;
    }
    case RRType.CNAME:
    case RRType.PTR:
    case RRType.NS:
      data = { kind: 'name', name: r.name(what) };
      break;
    case RRType.SRV:
      data = {
        kind: 'srv',
        priority: r.u16(what),
        weight: r.u16(what),
        port: r.u16(what),
        target: r.name(what),
      };
      break;
    case RRType.TXT: {
      const strings: string[] = [];
      while (r.off < end) {
        const n = r.u8(what);
        strings.push(new TextDecoder().decode(r.bytes(n, what)));
      }
      data = { kind: 'txt', strings };
      break;
    }
    case RRType.SOA:
      data = {
        kind: 'soa',
        mname: r.name(what),
        rname: r.name(what),
        serial: r.u32(what),
        refresh: r.u32(what),
        retry: r.u32(what),
        expire: r.u32(what),
        minimum: r.u32(what),
      };
      break;
    default:
      data = { kind: 'raw', bytes: r.bytes(rdlen, what).slice() };
  }
  if (r.off !== end) throw new DnsFormatError(`${what}: rdata length ${rdlen} does not match its content`);
  return { name, type, class: klass, ttl, data };
}

/** Decodes a message; throws DnsFormatError with the place of the first problem. */
export function decodeMessage(buf: Uint8Array): DnsMessage {
  const r = new Reader(buf);
  const id = r.u16('header');
  const flags = r.u16('header');
  const counts = [r.u16('header'), r.u16('header'), r.u16('header'), r.u16('header')] as const;
  // Each question takes at least 5 bytes and each record 11: reject counts that cannot fit
  // before allocating for them.
  if (counts[0] * 5 + (counts[1] + counts[2] + counts[3]) * 11 > buf.length - 12) {
    throw new DnsFormatError(`header counts (${counts.join('/')}) exceed the ${buf.length}-byte message`);
  }
  const questions: Question[] = [];
  for (let i = 0; i < counts[0]; i++) {
    questions.push({
      name: r.name('question name'),
      type: r.u16('question type'),
      class: r.u16('question class'),
    });
  }
  const section = (n: number, label: string) => Array.from({ length: n }, () => decodeRecord(r, label));
  return {
    id,
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    ra: (flags & 0x0080) !== 0,
    rcode: flags & 0xf,
    questions,
    answers: section(counts[1], 'answer'),
    authorities: section(counts[2], 'authority'),
    additionals: section(counts[3], 'additional'),
  };
}

class Writer {
  buf = new Uint8Array(512);
  off = 0;
  readonly #names = new Map<string, number>();
  #grow(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.off + n));
    next.set(this.buf);
    this.buf = next;
  }
  u8(v: number): void {
    this.#grow(1);
    this.buf[this.off++] = v & 0xff;
  }
  u16(v: number): void {
    this.#grow(2);
    this.buf[this.off++] = (v >> 8) & 0xff;
    this.buf[this.off++] = v & 0xff;
  }
  u32(v: number): void {
    this.u16((v >>> 16) & 0xffff);
    this.u16(v & 0xffff);
  }
  bytes(b: Uint8Array): void {
    this.#grow(b.length);
    this.buf.set(b, this.off);
    this.off += b.length;
  }
  /** Writes a name, compressing against names written before. */
  name(name: string): void {
    const labels = splitName(name);
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.').toLowerCase();
      const at = this.#names.get(suffix);
      if (at !== undefined) {
        this.u16(0xc000 | at);
        return;
      }
      if (this.off < 0x3fff) this.#names.set(suffix, this.off);
      const enc = labelBytes(labels[i]!);
      this.u8(enc.length);
      this.bytes(enc);
    }
    this.u8(0);
  }
}

/** Splits a presentation-form name into labels, honouring `\.` escapes. */
function splitName(name: string): string[] {
  const n = name.endsWith('.') && !name.endsWith('\\.') ? name.slice(0, -1) : name;
  if (n === '') return [];
  const labels: string[] = [];
  let cur = '';
  for (let i = 0; i < n.length; i++) {
    const c = n[i]!;
    if (c === '\\' && i + 1 < n.length) {
      cur += c + n[++i]!;
    } else if (c === '.') {
      labels.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  labels.push(cur);
  let total = 1;
  for (const l of labels) {
    const len = labelBytes(l).length;
    if (len === 0) throw new DnsFormatError(`name "${name}" has an empty label`);
    if (len > MAX_LABEL)
      throw new DnsFormatError(`name "${name}" has a label longer than ${MAX_LABEL} bytes`);
    total += len + 1;
  }
  if (total > MAX_NAME) throw new DnsFormatError(`name "${name}" is longer than ${MAX_NAME} bytes`);
  return labels;
}

function labelBytes(label: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < label.length; i++) {
    const c = label[i]!;
    if (c === '\\' && i + 1 < label.length) out.push(label.charCodeAt(++i));
    else out.push(label.charCodeAt(i) & 0xff);
  }
  return Uint8Array.from(out);
}

function encodeRecord(w: Writer, rr: ResourceRecord): void {
  w.name(rr.name);
  w.u16(rr.type);
  w.u16(rr.class);
  w.u32(rr.ttl);
  const lenAt = w.off;
  w.u16(0);
  const start = w.off;
  const d = rr.data;
  switch (d.kind) {
    case 'a':
      w.bytes(parseIpv4(d.address));
      break;
    case 'aaaa':
      w.bytes(parseIpv6(d.address));
      break;
    case 'name':
      w.name(d.name);
      break;
    case 'srv':
      w.u16(d.priority);
      w.u16(d.weight);
      w.u16(d.port);
      w.name(d.target);
      break;
    case 'txt':
      for (const s of d.strings) {
        const b = new TextEncoder().encode(s);
        if (b.length > 255) throw new DnsFormatError('TXT string longer than 255 bytes');
        w.u8(b.length);
        w.bytes(b);
      }
      break;
    case 'soa':
      w.name(d.mname);
      w.name(d.rname);
      for (const v of [d.serial, d.refresh, d.retry, d.expire, d.minimum]) w.u32(v);
      break;
    case 'raw':
      w.bytes(d.bytes);
  }
  const len = w.off - start;
  w.buf[lenAt] = len >> 8;
  w.buf[lenAt + 1] = len & 0xff;
}

export function encodeMessage(m: DnsMessage): Uint8Array {
  const w = new Writer();
  w.u16(m.id);
  w.u16(
    (m.qr ? 0x8000 : 0) |
      ((m.opcode & 0xf) << 11) |
      (m.aa ? 0x0400 : 0) |
      (m.tc ? 0x0200 : 0) |
      (m.rd ? 0x0100 : 0) |
      (m.ra ? 0x0080 : 0) |
      (m.rcode & 0xf),
  );
  w.u16(m.questions.length);
  w.u16(m.answers.length);
  w.u16(m.authorities.length);
  w.u16(m.additionals.length);
  for (const q of m.questions) {
    w.name(q.name);
    w.u16(q.type);
    w.u16(q.class);
  }
  for (const rr of [...m.answers, ...m.authorities, ...m.additionals]) encodeRecord(w, rr);
  return w.buf.slice(0, w.off);
}

/**
 * Encodes a response for UDP: if it exceeds `limit` bytes, records are dropped from the
 * end and TC is set, as RFC 1035 asks, so the client retries over TCP.
 */
export function encodeForUdp(m: DnsMessage, limit = 512): Uint8Array {
  let out = encodeMessage(m);
  if (out.length <= limit) return out;
  const trimmed = { ...m, tc: true, authorities: [], additionals: [], answers: [...m.answers] };
  do {
    trimmed.answers.pop();
    out = encodeMessage(trimmed);
  } while (out.length > limit && trimmed.answers.length > 0);
  return out;
}

/** A query message for a name and type. */
export function query(id: number, name: string, type: number, rd = true): DnsMessage {
  return {
    id,
    qr: false,
    opcode: 0,
    aa: false,
    tc: false,
    rd,
    ra: false,
    rcode: 0,
    questions: [{ name, type, class: 1 }],
    answers: [],
    authorities: [],
    additionals: [],
  };
}

/** The skeleton of a response to `q`: same id, question and RD. */
export function responseTo(q: DnsMessage, rcode: number = RCode.NoError): DnsMessage {
  return {
    ...q,
    qr: true,
    aa: false,
    tc: false,
    ra: true,
    rcode,
    answers: [],
    authorities: [],
    additionals: [],
  };
}

function parseIpv4(a: string): Uint8Array {
  const parts = a.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new DnsFormatError(`"${a}" is not an IPv4 address`);
  }
  return Uint8Array.from(parts);
}

function parseIpv6(a: string): Uint8Array {
  const [head, tail, extra] = a.split('::');
  if (extra !== undefined) throw new DnsFormatError(`"${a}" is not an IPv6 address`);
  const groups = (s: string | undefined) => (s ? s.split(':') : []);
  const h = groups(head);
  const t = groups(tail);
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const all = [...h, ...Array<string>(Math.max(0, fill)).fill('0'), ...t];
  if (all.length !== 8 || all.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) {
    throw new DnsFormatError(`"${a}" is not an IPv6 address`);
  }
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    const v = Number.parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

function formatIpv6(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // Compress the longest run of zero groups.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/**
 * FORMERR for bytes that did not decode, if at least the 12-byte header is there (its id
 * and RD are echoed); undefined when not even that arrived.
 */
export function formErrFor(buf: Uint8Array): DnsMessage | undefined {
  if (buf.length < 12) return undefined;
  const q = query((buf[0]! << 8) | buf[1]!, '', 0, (buf[2]! & 1) === 1);
  return { ...responseTo(q, RCode.FormErr), questions: [] };
}
