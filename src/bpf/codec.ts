/**
 * Codecs turn typed values into the bytes a map stores and back, in native byte order
 * (network order only where the C side keeps it, as `be16`/`ipv4` do). A codec's `size`
 * must equal the C type's; `fields` lets a test check a struct codec against the BTF
 * of the compiled object (see btf.ts), so the two layouts cannot drift.
 */

export interface Codec<T> {
  readonly size: number;
  /** Alignment in C, for laying out structs. */
  readonly align: number;
  encode(value: T, view: DataView, offset: number): void;
  decode(view: DataView, offset: number): T;
}

export interface FieldLayout {
  name: string;
  offset: number;
  size: number;
}

export interface StructCodec<T> extends Codec<T> {
  readonly fields: readonly FieldLayout[];
}

const LE = true; // x86_64 and arm64 are little-endian; BPF uses the host's order.

export const u8: Codec<number> = {
  size: 1,
  align: 1,
  encode: (v, d, o) => d.setUint8(o, v),
  decode: (d, o) => d.getUint8(o),
};
export const u16: Codec<number> = {
  size: 2,
  align: 2,
  encode: (v, d, o) => d.setUint16(o, v, LE),
  decode: (d, o) => d.getUint16(o, LE),
};
export const u32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, d, o) => d.setUint32(o, v, LE),
  decode: (d, o) => d.getUint32(o, LE),
};
export const i32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, d, o) => d.setInt32(o, v, LE),
  decode: (d, o) => d.getInt32(o, LE),
};
export const u64: Codec<bigint> = {
  size: 8,
  align: 8,
  encode: (v, d, o) => d.setBigUint64(o, v, LE),
  decode: (d, o) => d.getBigUint64(o, LE),
};
/** A u64 read as a JS number: exact below 2^53, which counters and timestamps stay under. */
export const u64n: Codec<number> = {
  size: 8,
  align: 8,
  encode: (v, d, o) => d.setBigUint64(o, BigInt(v), LE),
  decode: (d, o) => Number(d.getBigUint64(o, LE)),
};
/** A u16 kept in network byte order (ports). */
export const be16: Codec<number> = {
  size: 2,
  align: 2,
  encode: (v, d, o) => d.setUint16(o, v, false),
  decode: (d, o) => d.getUint16(o, false),
};
/** A u32 kept in network byte order. */
export const be32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, d, o) => d.setUint32(o, v, false),
  decode: (d, o) => d.getUint32(o, false),
};

/** An IPv4 address in dotted form, stored as a __be32. */
export const ipv4: Codec<string> = {
  size: 4,
  align: 4,
  encode(v, d, o) {
    const parts = v.split('.');
    if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${v}`);
    for (let i = 0; i < 4; i++) {
      const n = Number(parts[i]);
      if (!Number.isInteger(n) || n < 0 || n > 255) throw new RangeError(`not an IPv4 address: ${v}`);
      d.setUint8(o + i, n);
    }
  },
  decode: (d, o) => `${d.getUint8(o)}.${d.getUint8(o + 1)}.${d.getUint8(o + 2)}.${d.getUint8(o + 3)}`,
};

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Raw bytes of a fixed length. */
export function bytes(size: number, align = 1): Codec<Uint8Array> {
  return {
    size,
    align,
    encode(v, d, o) {
      if (v.length > size) throw new RangeError(`value of ${v.length} bytes does not fit ${size}`);
      const dst = new Uint8Array(d.buffer, d.byteOffset + o, size);
      dst.set(v);
      dst.fill(0, v.length);
    },
    decode: (d, o) => new Uint8Array(d.buffer.slice(d.byteOffset + o, d.byteOffset + o + size)),
  };
}

/** A NUL-padded string in a char[size]. */
export function cstring(size: number): Codec<string> {
  return {
    size,
    align: 1,
    encode(v, d, o) {
      let i = 0;
      // ASCII goes byte by byte; anything else through the UTF-8 encoder.
      for (; i < v.length; i++) {
        const c = v.charCodeAt(i);
        if (c >= 0x80) break;
        if (i >= size - 1) throw new RangeError(`string "${v}" longer than ${size - 1} bytes`);
        d.setUint8(o + i, c);
      }
      if (i < v.length) {
        const dst = new Uint8Array(d.buffer, d.byteOffset + o, size);
        const { written } = utf8Encoder.encodeInto(v, dst.subarray(0, size - 1));
        if (written < utf8Encoder.encode(v).length)
          throw new RangeError(`string "${v}" longer than ${size - 1} bytes`);
        i = written;
      }
      for (; i < size; i++) d.setUint8(o + i, 0);
    },
    decode(d, o) {
      let s = '';
      for (let i = 0; i < size; i++) {
        const c = d.getUint8(o + i);
        if (c === 0) return s;
        if (c >= 0x80) {
          const src = new Uint8Array(d.buffer, d.byteOffset + o, size);
          const end = src.indexOf(0);
          return utf8Decoder.decode(src.subarray(0, end < 0 ? size : end));
        }
        s += String.fromCharCode(c);
      }
      return s;
    },
  };
}

export function array<T>(of: Codec<T>, length: number): Codec<T[]> {
  return {
    size: of.size * length,
    align: of.align,
    encode(v, d, o) {
      if (v.length !== length) throw new RangeError(`expected ${length} elements, got ${v.length}`);
      for (let i = 0; i < length; i++) of.encode(v[i] as T, d, o + i * of.size);
    },
    decode(d, o) {
      const out: T[] = new Array(length);
      for (let i = 0; i < length; i++) out[i] = of.decode(d, o + i * of.size);
      return out;
    },
  };
}

type FieldCodecs = Record<string, Codec<unknown>>;
type Decoded<F extends FieldCodecs> = { [K in keyof F]: F[K] extends Codec<infer T> ? T : never };

/**
 * A C struct laid out with the C rules (each field at its alignment, the size rounded
 * to the largest alignment). Padding is written as zeros: hash maps compare whole keys.
 */
export function struct<F extends FieldCodecs>(fields: F): StructCodec<Decoded<F>> {
  const layout: (FieldLayout & { codec: Codec<unknown> })[] = [];
  let offset = 0;
  let align = 1;
  for (const [name, codec] of Object.entries(fields)) {
    offset = Math.ceil(offset / codec.align) * codec.align;
    layout.push({ name, offset, size: codec.size, codec });
    offset += codec.size;
    align = Math.max(align, codec.align);
  }
  const size = Math.ceil(offset / align) * align;
  // Bytes no field covers: zeroed on encode, since hash maps compare whole keys.
  const padding: number[] = [];
  const covered = new Uint8Array(size);
  for (const f of layout) covered.fill(1, f.offset, f.offset + f.size);
  for (let i = 0; i < size; i++) if (!covered[i]) padding.push(i);
  const n = layout.length;
  return {
    size,
    align,
    fields: layout.map(({ name, offset, size }) => ({ name, offset, size })),
    encode(v, d, o) {
      const rec = v as Record<string, unknown>;
      for (let i = 0; i < n; i++) {
        const f = layout[i]!;
        f.codec.encode(rec[f.name], d, o + f.offset);
      }
      for (let i = 0; i < padding.length; i++) d.setUint8(o + padding[i]!, 0);
    },
    decode(d, o) {
      const out: Record<string, unknown> = {};
      for (let i = 0; i < n; i++) {
        const f = layout[i]!;
        out[f.name] = f.codec.decode(d, o + f.offset);
      }
      return out as Decoded<F>;
    },
  };
}

/** Encodes one value into a fresh buffer (for tests and one-off calls). */
export function encode<T>(codec: Codec<T>, value: T): Uint8Array {
  const buf = new Uint8Array(codec.size);
  codec.encode(value, new DataView(buf.buffer), 0);
  return buf;
}

export function decode<T>(codec: Codec<T>, buf: Uint8Array, offset = 0): T {
  return codec.decode(new DataView(buf.buffer, buf.byteOffset, buf.byteLength), offset);
}
