/**
 * BPF objects: `ObjectSpec` is what an ELF file declares (plain data, read by libbpf
 * without touching the kernel); `loadCollection` turns a spec into live maps and
 * programs, applying load-time settings (read-only globals, pinning, map sizes, maps
 * shared with other objects) on the way. A load that fails closes everything it made.
 */
import { readFileSync } from 'node:fs';
import { Btf } from './btf.js';
import { BpfError, check, checkPtr, VerifierError } from './errors.js';
import { lib, takeLibbpfLog, view } from './ffi.js';
import { ensurePinDir } from './fs.js';
import { BpfMap, type MapCodecs, mapInfoByFd, PerCpuMap, rawCodecs } from './map.js';
import { Program } from './program.js';
import { isPerCpu, mapTypeName, progTypeName } from './types.js';

export interface MapSpec {
  name: string;
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface ProgramSpec {
  name: string;
  section: string;
  type: number;
  typeName: string;
  instructions: number;
}

export interface ObjectSpec {
  /** Where it came from, for messages. */
  source: string;
  maps: MapSpec[];
  programs: ProgramSpec[];
  /** Read-only globals (`const volatile` in C) settable before load. */
  constants: { name: string; offset: number; size: number }[];
  /** The ELF image; loading reopens it, since libbpf objects load once. */
  readonly elf: Uint8Array;
}

/** Opens an object with libbpf, runs fn on it, and closes it unless fn keeps it. */
function openObject(elf: Uint8Array, source: string): bigint {
  // libbpf names the object after the path; open_mem gives no path, so messages use `source`.
  return checkPtr(lib.bpf_object__open_mem(elf, elf.length, null), `object ${source}: open`);
}

function* eachMap(obj: bigint): Generator<bigint> {
  for (let m = lib.bpf_object__next_map(obj, null); m !== null; m = lib.bpf_object__next_map(obj, m)) yield m;
}

function* eachProgram(obj: bigint): Generator<bigint> {
  for (let p = lib.bpf_object__next_program(obj, null); p !== null; p = lib.bpf_object__next_program(obj, p))
    yield p;
}

function readSpec(obj: bigint, source: string, elf: Uint8Array): ObjectSpec {
  const maps: MapSpec[] = [];
  for (const m of eachMap(obj)) {
    const type = lib.bpf_map__type(m);
    maps.push({
      name: lib.bpf_map__name(m),
      type,
      typeName: mapTypeName(type),
      keySize: lib.bpf_map__key_size(m),
      valueSize: lib.bpf_map__value_size(m),
      maxEntries: lib.bpf_map__max_entries(m),
      flags: lib.bpf_map__map_flags(m),
    });
  }
  const programs: ProgramSpec[] = [];
  for (const p of eachProgram(obj)) {
    const type = lib.bpf_program__type(p);
    programs.push({
      name: lib.bpf_program__name(p),
      section: lib.bpf_program__section_name(p),
      type,
      typeName: progTypeName(type),
      instructions: Number(lib.bpf_program__insn_cnt(p)),
    });
  }
  const btfPtr = lib.bpf_object__btf(obj);
  const constants = btfPtr ? new Btf(btfPtr, false).datasec('.rodata') : [];
  return {
    source,
    maps,
    programs,
    constants: constants.map(({ name, offset, size }) => ({ name, offset, size })),
    elf,
  };
}

/** Reads what an object file declares, without loading anything into the kernel. */
export function loadSpec(
  source: string | Uint8Array,
  name = typeof source === 'string' ? source : 'buffer',
): ObjectSpec {
  let elf: Uint8Array;
  if (typeof source === 'string') {
    try {
      elf = readFileSync(source);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new BpfError(`object ${source}: read`, e.errno ? -e.errno : 2, undefined, { cause: err });
    }
  } else {
    elf = source;
  }
  const obj = openObject(elf, name);
  try {
    return readSpec(obj, name, elf);
  } finally {
    lib.bpf_object__close(obj);
  }
}

/** A value for a read-only global: numbers are written at the variable's size. */
export type ConstantValue = number | bigint | boolean | Uint8Array;

export interface LoadOptions {
  /** Values for `const volatile` globals, by name. */
  constants?: Record<string, ConstantValue>;
  /**
   * Pin every map with `pinning = LIBBPF_PIN_BY_NAME` (and the maps named in `pinMaps`)
   * under this bpffs directory, reusing maps already pinned there.
   */
  pinPath?: string;
  /** Maps to pin by name under `pinPath` even without the attribute in C. */
  pinMaps?: string[];
  /** Override max_entries by map name. */
  maxEntries?: Record<string, number>;
  /** Use existing maps instead of creating these (by name), e.g. maps shared between objects. */
  replaceMaps?: Record<string, BpfMap<unknown, unknown> | number>;
  /** Load only these programs (by name); the others are skipped. */
  programs?: string[];
  /** Size of the verifier log buffer kept on failure. */
  logSize?: number;
}

/** Live maps and programs of one loaded object. Closing it closes them all. */
export class Collection implements Disposable {
  readonly spec: ObjectSpec;
  #obj: bigint | null;
  readonly #maps = new Map<string, { ptr: bigint; fd: number }>();
  readonly #programs = new Map<string, Program>();
  readonly #wrapped: BpfMap<unknown, unknown>[] = [];

  /** @internal use loadCollection */
  constructor(obj: bigint, spec: ObjectSpec) {
    this.#obj = obj;
    this.spec = spec;
    for (const m of eachMap(obj)) {
      const fd = lib.bpf_map__fd(m);
      if (fd >= 0) this.#maps.set(lib.bpf_map__name(m), { ptr: m, fd });
    }
    for (const p of eachProgram(obj)) {
      const fd = lib.bpf_program__fd(p);
      const name = lib.bpf_program__name(p);
      if (fd >= 0) this.#programs.set(name, new Program(fd, { ptr: p, owned: false, name }));
    }
  }

  get mapNames(): string[] {
    return [...this.#maps.keys()];
  }

  get programNames(): string[] {
    return [...this.#programs.keys()];
  }

  /**
   * A map with codecs. The map stays owned by the collection (its fd closes with it);
   * per-CPU maps come back as PerCpuMap, with `value` the codec of one CPU's slot.
   */
  map<K, V>(name: string, codecs: MapCodecs<K, V>): BpfMap<K, V>;
  map<K, V>(name: string, codecs: MapCodecs<K, V>, perCpu: true): PerCpuMap<K, V>;
  map<K, V>(name: string, codecs: MapCodecs<K, V>): BpfMap<K, V> | PerCpuMap<K, V> {
    const m = this.#maps.get(name);
    if (!m)
      throw new BpfError(`object ${this.spec.source}: no map ${name} (has ${this.mapNames.join(', ')})`, 2);
    const info = mapInfoByFd(m.fd);
    const wrapped = isPerCpu(info.type)
      ? new PerCpuMap(m.fd, codecs, { owned: false, info })
      : new BpfMap(m.fd, codecs, { owned: false, info });
    this.#wrapped.push(wrapped as BpfMap<unknown, unknown>);
    return wrapped;
  }

  /** A map with its entries as raw bytes, whatever its layout. */
  rawMap(name: string): BpfMap<Uint8Array, Uint8Array> {
    const m = this.#maps.get(name);
    if (!m) throw new BpfError(`object ${this.spec.source}: no map ${name}`, 2);
    const info = mapInfoByFd(m.fd);
    return new BpfMap(m.fd, rawCodecs(info), { owned: false, info });
  }

  mapFd(name: string): number {
    const m = this.#maps.get(name);
    if (!m) throw new BpfError(`object ${this.spec.source}: no map ${name}`, 2);
    return m.fd;
  }

  program(name: string): Program {
    const p = this.#programs.get(name);
    if (!p)
      throw new BpfError(
        `object ${this.spec.source}: no program ${name} (has ${this.programNames.join(', ')})`,
        2,
      );
    return p;
  }

  /** The object's BTF, borrowed: valid until the collection closes. */
  btf(): Btf {
    if (this.#obj === null) throw new BpfError(`object ${this.spec.source}: used after close`, 9);
    const ptr = checkPtr(lib.bpf_object__btf(this.#obj), `object ${this.spec.source}: btf`);
    return new Btf(ptr, false);
  }

  close(): void {
    if (this.#obj === null) return;
    for (const p of this.#programs.values()) p.close();
    for (const m of this.#wrapped) m.close();
    lib.bpf_object__close(this.#obj);
    this.#obj = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function writeConstant(
  buf: Uint8Array,
  v: { name: string; offset: number; size: number },
  value: ConstantValue,
  source: string,
): void {
  const d = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const bad = (why: string) => new BpfError(`object ${source}: constant ${v.name}: ${why}`, 22);
  if (value instanceof Uint8Array) {
    if (value.length !== v.size) throw bad(`needs ${v.size} bytes, got ${value.length}`);
    buf.set(value, v.offset);
    return;
  }
  const n = typeof value === 'boolean' ? (value ? 1n : 0n) : BigInt(value);
  const max = 1n << BigInt(v.size * 8);
  if (n >= max || n < -(max >> 1n)) throw bad(`${value} does not fit in ${v.size} bytes`);
  const u = n < 0n ? n + max : n;
  switch (v.size) {
    case 1:
      d.setUint8(v.offset, Number(u));
      break;
    case 2:
      d.setUint16(v.offset, Number(u), true);
      break;
    case 4:
      d.setUint32(v.offset, Number(u), true);
      break;
    case 8:
      d.setBigUint64(v.offset, u, true);
      break;
    default:
      throw bad(`a ${v.size}-byte variable takes a Uint8Array`);
  }
}

/**
 * Loads an object: from a spec, a file path or an ELF buffer. Applies the options,
 * loads every program through the verifier, and returns the live collection. On any
 * failure nothing stays open: the error says what failed, with the verifier's log.
 */
export function loadCollection(source: ObjectSpec | string | Uint8Array, opts: LoadOptions = {}): Collection {
  const spec = typeof source === 'object' && 'elf' in source ? source : loadSpec(source);
  const what = `object ${spec.source}`;
  const obj = openObject(spec.elf, spec.source);
  try {
    // Read-only globals.
    const constants = Object.entries(opts.constants ?? {});
    if (constants.length) {
      const rodata = [...eachMap(obj)].find((m) => lib.bpf_map__name(m).endsWith('.rodata'));
      if (!rodata) throw new BpfError(`${what}: has no .rodata; no constants can be set`, 22);
      const size = new BigUint64Array(1);
      const ptr = checkPtr(lib.bpf_map__initial_value(rodata, size), `${what}: .rodata`);
      const mem = view(ptr, Number(size[0]));
      for (const [name, value] of constants) {
        const v = spec.constants.find((c) => c.name === name);
        if (!v) {
          throw new BpfError(
            `${what}: no constant ${name} (has ${spec.constants.map((c) => c.name).join(', ') || 'none'})`,
            2,
          );
        }
        writeConstant(mem, v, value, spec.source);
      }
    }
    // Maps: sizes, sharing, pinning.
    for (const m of eachMap(obj)) {
      const name = lib.bpf_map__name(m);
      const max = opts.maxEntries?.[name];
      if (max !== undefined)
        check(lib.bpf_map__set_max_entries(m, max), `${what}: map ${name}: set max_entries`);
      const replacement = opts.replaceMaps?.[name];
      if (replacement !== undefined) {
        const fd = typeof replacement === 'number' ? replacement : replacement.fd;
        check(lib.bpf_map__reuse_fd(m, fd), `${what}: map ${name}: reuse fd ${fd}`);
      }
    }
    // Maps declared with LIBBPF_PIN_BY_NAME get a default path under /sys/fs/bpf from
    // libbpf; pinned maps go under pinPath instead, and nowhere when none is given.
    if (opts.pinPath) ensurePinDir(opts.pinPath);
    for (const m of eachMap(obj)) {
      const name = lib.bpf_map__name(m);
      if (name.startsWith('.')) continue;
      const pin = opts.pinPath && (opts.pinMaps?.includes(name) || lib.bpf_map__pin_path(m) !== null);
      check(
        lib.bpf_map__set_pin_path(m, pin ? `${opts.pinPath}/${name}` : null),
        `${what}: map ${name}: set pin path`,
      );
    }
    if (opts.programs) {
      for (const p of eachProgram(obj))
        lib.bpf_program__set_autoload(p, opts.programs.includes(lib.bpf_program__name(p)));
    }
    // Verifier log: libbpf retries a failed load with logging on, into this buffer.
    const logBuf = new Uint8Array(opts.logSize ?? 1 << 20);
    for (const p of eachProgram(obj)) lib.bpf_program__set_log_buf(p, logBuf, logBuf.length);
    const ret = lib.bpf_object__load(obj);
    if (ret < 0) {
      const log = new TextDecoder().decode(logBuf.subarray(0, Math.max(0, logBuf.indexOf(0))));
      const libbpfLog = takeLibbpfLog();
      if (log.trim()) {
        const failed = /prog '([^']+)'/.exec(libbpfLog)?.[1] ?? 'unknown';
        throw new VerifierError(`${what}: load`, -ret, failed, log.trim().split('\n'));
      }
      check(ret, `${what}: load`);
    }
    return new Collection(obj, spec);
  } catch (err) {
    lib.bpf_object__close(obj);
    throw err;
  }
}
