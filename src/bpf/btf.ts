import { NotSupportedError } from '../errors.js';
import type { StructCodec } from './codec.js';
import { BpfError, checkPtr } from './errors.js';
import { lib, readU32s } from './ffi.js';

export const BtfKind = {
  Int: 1,
  Ptr: 2,
  Array: 3,
  Struct: 4,
  Union: 5,
  Enum: 6,
  Fwd: 7,
  Typedef: 8,
  Volatile: 9,
  Const: 10,
  Restrict: 11,
  Func: 12,
  FuncProto: 13,
  Var: 14,
  Datasec: 15,
  Float: 16,
  DeclTag: 17,
  TypeTag: 18,
  Enum64: 19,
} as const;

export interface BtfMember {
  name: string;
  /** Byte offset; for bitfields, of the byte holding the first bit. */
  offset: number;
  bitOffset: number;
  /** Bitfield width in bits, 0 for ordinary members. */
  bitSize: number;
  size: number;
  typeId: number;
}

export interface BtfStruct {
  name: string;
  kind: 'struct' | 'union';
  size: number;
  members: BtfMember[];
}

export interface BtfVar {
  name: string;
  offset: number;
  size: number;
  typeId: number;
}

interface RawType {
  nameOff: number;
  kind: number;
  vlen: number;
  kindFlag: boolean;
  sizeOrType: number;
  ptr: bigint;
}

/**
 * Read access to BTF through libbpf: struct layouts (for checking codecs against the C
 * side) and data sections (for setting globals by name). Either borrowed from an open
 * object, or parsed from an ELF file and owned.
 */
export class Btf implements Disposable {
  #ptr: bigint | null;
  readonly #owned: boolean;

  constructor(ptr: bigint, owned: boolean) {
    this.#ptr = ptr;
    this.#owned = owned;
  }

  /** Parses the BTF of an ELF object file (compiled with -g). */
  static fromFile(path: string): Btf {
    const ptr = lib.btf__parse(path, null);
    if (ptr === null) throw new NotSupportedError(`${path}: no BTF (compile with clang -g)`);
    return new Btf(ptr, true);
  }

  get #p(): bigint {
    if (this.#ptr === null) throw new BpfError('btf: used after close', 9);
    return this.#ptr;
  }

  #type(id: number): RawType {
    const ptr = checkPtr(lib.btf__type_by_id(this.#p, id), `btf: type ${id}`);
    const [nameOff = 0, info = 0, sizeOrType = 0] = readU32s(ptr, 3);
    return {
      nameOff,
      kind: (info >>> 24) & 0x1f,
      vlen: info & 0xffff,
      kindFlag: info >>> 31 === 1,
      sizeOrType,
      ptr,
    };
  }

  #name(off: number): string {
    return lib.btf__name_by_offset(this.#p, off) ?? '';
  }

  #size(id: number): number {
    const n = Number(lib.btf__resolve_size(this.#p, id));
    if (n < 0) throw new BpfError(`btf: size of type ${id}`, -n);
    return n;
  }

  /** Type id of a named type of the given kind, or undefined. */
  find(name: string, kind: number): number | undefined {
    const id = lib.btf__find_by_name_kind(this.#p, name, kind);
    return id > 0 ? id : undefined;
  }

  /** The layout of `struct name` (or union), as the compiler laid it out. */
  struct(name: string): BtfStruct {
    const id = this.find(name, BtfKind.Struct) ?? this.find(name, BtfKind.Union);
    if (id === undefined) throw new BpfError(`btf: no struct ${name}`, 2);
    const t = this.#type(id);
    const raw = readU32s(t.ptr + 12n, t.vlen * 3);
    const members: BtfMember[] = [];
    for (let i = 0; i < t.vlen; i++) {
      const nameOff = raw[i * 3]!;
      const typeId = raw[i * 3 + 1]!;
      const off = raw[i * 3 + 2]!;
      const bitOffset = t.kindFlag ? off & 0xffffff : off;
      const bitSize = t.kindFlag ? off >>> 24 : 0;
      members.push({
        name: this.#name(nameOff),
        offset: Math.floor(bitOffset / 8),
        bitOffset,
        bitSize,
        size: bitSize ? Math.ceil(bitSize / 8) : this.#size(typeId),
        typeId,
      });
    }
    return { name, kind: t.kind === BtfKind.Union ? 'union' : 'struct', size: t.sizeOrType, members };
  }

  /** Variables of a data section (`.rodata`, `.data`, `.bss`) with their offsets. */
  datasec(name: string): BtfVar[] {
    const id = this.find(name, BtfKind.Datasec);
    if (id === undefined) return [];
    const t = this.#type(id);
    const raw = readU32s(t.ptr + 12n, t.vlen * 3);
    const vars: BtfVar[] = [];
    for (let i = 0; i < t.vlen; i++) {
      const typeId = raw[i * 3]!;
      const v = this.#type(typeId);
      vars.push({
        name: this.#name(v.nameOff),
        offset: raw[i * 3 + 1]!,
        size: raw[i * 3 + 2]!,
        typeId: v.sizeOrType,
      });
    }
    return vars;
  }

  /** Value of a named enumerator (enums and #define-free constants the C side exports). */
  enumValues(name: string): Map<string, number> {
    const id = this.find(name, BtfKind.Enum);
    if (id === undefined) throw new BpfError(`btf: no enum ${name}`, 2);
    const t = this.#type(id);
    const raw = readU32s(t.ptr + 12n, t.vlen * 2);
    const out = new Map<string, number>();
    for (let i = 0; i < t.vlen; i++) out.set(this.#name(raw[i * 2]!), raw[i * 2 + 1]! | 0);
    return out;
  }

  close(): void {
    if (this.#ptr !== null && this.#owned) lib.btf__free(this.#ptr);
    this.#ptr = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Differences between a struct codec and the C struct of the same layout: size, and
 * each field's offset and size by name. Empty when they agree.
 */
export function layoutDifferences(btf: Btf, structName: string, codec: StructCodec<unknown>): string[] {
  const c = btf.struct(structName);
  const diffs: string[] = [];
  if (c.size !== codec.size)
    diffs.push(`struct ${structName}: size ${c.size} in C, ${codec.size} in the codec`);
  const byName = new Map(c.members.map((m) => [m.name, m]));
  for (const f of codec.fields) {
    const m = byName.get(f.name);
    if (!m) {
      diffs.push(`struct ${structName}: codec field ${f.name} is not in C`);
      continue;
    }
    if (m.offset !== f.offset)
      diffs.push(`struct ${structName}.${f.name}: offset ${m.offset} in C, ${f.offset} in the codec`);
    if (m.size !== f.size)
      diffs.push(`struct ${structName}.${f.name}: size ${m.size} in C, ${f.size} in the codec`);
    byName.delete(f.name);
  }
  for (const name of byName.keys()) diffs.push(`struct ${structName}: C field ${name} has no codec field`);
  return diffs;
}
