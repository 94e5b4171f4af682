import { readFileSync } from 'node:fs';
import { KeyNotFoundError } from '../errors.js';
import { bytes, type Codec, u32 } from './codec.js';
import { BpfError, check, checkFd } from './errors.js';
import { lib } from './ffi.js';
import { isPerCpu, MapType, mapTypeName, type UpdateFlag, UpdateFlags } from './types.js';

/** What the kernel says about a map (BPF_OBJ_GET_INFO_BY_FD). */
export interface MapInfo {
  type: number;
  id: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export function mapInfoByFd(fd: number): MapInfo {
  const info = new Uint8Array(88);
  const len = new Uint32Array([info.length]);
  check(lib.bpf_obj_get_info_by_fd(fd, info, len), `map fd ${fd}: get info`);
  const d = new DataView(info.buffer);
  const nameBytes = info.subarray(24, 40);
  const end = nameBytes.indexOf(0);
  return {
    type: d.getUint32(0, true),
    id: d.getUint32(4, true),
    keySize: d.getUint32(8, true),
    valueSize: d.getUint32(12, true),
    maxEntries: d.getUint32(16, true),
    flags: d.getUint32(20, true),
    name: new TextDecoder().decode(nameBytes.subarray(0, end < 0 ? 16 : end)),
  };
}

let possibleCpus = 0;
/** The number of possible CPUs: per-CPU maps hold one value slot for each. */
export function numPossibleCpus(): number {
  if (!possibleCpus) possibleCpus = check(lib.libbpf_num_possible_cpus(), 'libbpf_num_possible_cpus');
  return possibleCpus;
}

export interface MapCodecs<K, V> {
  key: Codec<K>;
  value: Codec<V>;
}

export interface BatchResult {
  /** How many entries the kernel processed. */
  count: number;
}

/**
 * A live map with typed keys and values. One owner closes it; closing twice is a no-op.
 * For per-CPU maps use `PerCpuMap`, whose values are one per possible CPU.
 */
export class BpfMap<K, V> implements Disposable {
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  readonly id: number;
  #fd: number;
  readonly #owned: boolean;
  readonly #key: Codec<K>;
  readonly #value: Codec<V>;
  // Reused for single-element operations: JS is single-threaded and libbpf copies.
  readonly #kbuf: Uint8Array;
  readonly #kview: DataView;
  readonly #vbuf: Uint8Array;
  readonly #vview: DataView;
  readonly #stride: number;

  /** Wraps an fd; `owned` maps close it. Codec sizes are checked against the kernel's. */
  constructor(fd: number, codecs: MapCodecs<K, V>, opts: { owned?: boolean; info?: MapInfo } = {}) {
    const info = opts.info ?? mapInfoByFd(fd);
    this.#fd = fd;
    this.#owned = opts.owned ?? true;
    this.name = info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.id = info.id;
    this.#key = codecs.key;
    this.#value = codecs.value;
    this.#stride = this.valueStride();
    if (codecs.key.size !== info.keySize && !(info.keySize === 0 && codecs.key.size === 0)) {
      throw new BpfError(
        `map ${info.name}: key codec is ${codecs.key.size} bytes but the map's key is ${info.keySize}`,
        22,
      );
    }
    if (codecs.value.size !== this.#stride * this.slots()) {
      throw new BpfError(
        `map ${info.name}: value codec is ${codecs.value.size} bytes but the map's value is ${info.valueSize}` +
          (this.slots() > 1 ? ` x ${this.slots()} CPUs` : ''),
        22,
      );
    }
    this.#kbuf = new Uint8Array(Math.max(1, info.keySize));
    this.#kview = new DataView(this.#kbuf.buffer);
    this.#vbuf = new Uint8Array(Math.max(1, codecs.value.size));
    this.#vview = new DataView(this.#vbuf.buffer);
  }

  get fd(): number {
    if (this.#fd < 0) throw new BpfError(`map ${this.name}: used after close`, 9);
    return this.#fd;
  }

  get typeName(): string {
    return mapTypeName(this.type);
  }

  /** Value slots per key: the possible CPUs for per-CPU maps, else one. */
  protected slots(): number {
    return isPerCpu(this.type) ? numPossibleCpus() : 1;
  }

  /** Per-CPU values are padded to 8 bytes each. */
  protected valueStride(): number {
    return isPerCpu(this.type) ? Math.ceil(this.valueSize / 8) * 8 : this.valueSize;
  }

  #encodeKey(key: K): Uint8Array {
    this.#key.encode(key, this.#kview, 0);
    return this.#kbuf;
  }

  lookup(key: K): V | undefined {
    const ret = lib.bpf_map_lookup_elem(this.fd, this.#encodeKey(key), this.#vbuf);
    if (ret === -2) return undefined; // ENOENT
    check(ret, `map ${this.name}: lookup`);
    return this.#value.decode(this.#vview, 0);
  }

  /** Like lookup, but a missing key is a KeyNotFoundError. */
  get(key: K): V {
    const v = this.lookup(key);
    if (v === undefined)
      throw new KeyNotFoundError(`map ${this.name}: no entry for key ${JSON.stringify(key, jsonBig)}`);
    return v;
  }

  update(key: K, value: V, flags: UpdateFlag = UpdateFlags.Any): void {
    this.#value.encode(value, this.#vview, 0);
    check(
      lib.bpf_map_update_elem(this.fd, this.#encodeKey(key), this.#vbuf, flags),
      `map ${this.name}: update`,
    );
  }

  /** Returns false when the key was not there. */
  delete(key: K): boolean {
    const ret = lib.bpf_map_delete_elem(this.fd, this.#encodeKey(key));
    if (ret === -2) return false;
    check(ret, `map ${this.name}: delete`);
    return true;
  }

  /** Removes and returns an entry in one step (hash maps, queues). */
  lookupAndDelete(key: K): V | undefined {
    const ret = lib.bpf_map_lookup_and_delete_elem(this.fd, this.#encodeKey(key), this.#vbuf);
    if (ret === -2) return undefined;
    check(ret, `map ${this.name}: lookup and delete`);
    return this.#value.decode(this.#vview, 0);
  }

  /** Iterates keys with BPF_MAP_GET_NEXT_KEY. Entries deleted meanwhile may restart the walk (kernel semantics). */
  *keys(): IterableIterator<K> {
    const cur = new Uint8Array(Math.max(1, this.keySize));
    const next = new Uint8Array(Math.max(1, this.keySize));
    const view = new DataView(next.buffer);
    let first = true;
    for (;;) {
      const ret = lib.bpf_map_get_next_key(this.fd, first ? null : cur, next);
      if (ret === -2) return;
      check(ret, `map ${this.name}: get next key`);
      first = false;
      const key = this.#key.decode(view, 0);
      cur.set(next);
      yield key;
    }
  }

  *entries(): IterableIterator<[K, V]> {
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v !== undefined) yield [k, v];
    }
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries();
  }

  /** Counts entries by walking the keys (the kernel keeps no count for hash maps). */
  count(): number {
    if (this.type === MapType.Array || this.type === MapType.PerCpuArray) return this.maxEntries;
    let n = 0;
    for (const _ of this.keys()) n++;
    return n;
  }

  /** Writes many entries in one syscall (BPF_MAP_UPDATE_BATCH). */
  updateBatch(entries: readonly (readonly [K, V])[], flags: UpdateFlag = UpdateFlags.Any): BatchResult {
    if (entries.length === 0) return { count: 0 };
    const ks = this.#key.size;
    const vs = this.#value.size;
    const keys = new Uint8Array(ks * entries.length);
    const vals = new Uint8Array(vs * entries.length);
    const kv = new DataView(keys.buffer);
    const vv = new DataView(vals.buffer);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      this.#key.encode(e[0], kv, i * ks);
      this.#value.encode(e[1], vv, i * vs);
    }
    return this.updateBatchRaw(keys, vals, entries.length, flags);
  }

  /** Batch update from already-encoded keys and values (packed, codec sizes). */
  updateBatchRaw(
    keys: Uint8Array,
    values: Uint8Array,
    n: number,
    flags: UpdateFlag = UpdateFlags.Any,
  ): BatchResult {
    const count = new Uint32Array([n]);
    const ret = lib.bpf_map_update_batch(this.fd, keys, values, count, batchOpts(flags));
    if (ret < 0) {
      throw new BpfError(`map ${this.name}: update batch (${count[0]} of ${n} written)`, -ret);
    }
    return { count: count[0]! };
  }

  /** Deletes many keys in one syscall; missing keys are an error (ENOENT) as in the kernel. */
  deleteBatch(keys: readonly K[]): BatchResult {
    if (keys.length === 0) return { count: 0 };
    const ks = this.#key.size;
    const buf = new Uint8Array(ks * keys.length);
    const view = new DataView(buf.buffer);
    for (let i = 0; i < keys.length; i++) this.#key.encode(keys[i] as K, view, i * ks);
    const count = new Uint32Array([keys.length]);
    const ret = lib.bpf_map_delete_batch(this.fd, buf, count, batchOpts(UpdateFlags.Any));
    if (ret < 0)
      throw new BpfError(`map ${this.name}: delete batch (${count[0]} of ${keys.length} deleted)`, -ret);
    return { count: count[0]! };
  }

  /**
   * Reads every entry with BPF_MAP_LOOKUP_BATCH, `chunk` at a time. Much faster than
   * `entries()` on large maps; not supported on LPM tries (falls back to iteration).
   */
  lookupBatch(chunk = 4096): [K, V][] {
    const out: [K, V][] = [];
    const ks = this.#key.size;
    const vs = this.#value.size;
    const keys = new Uint8Array(ks * chunk);
    const vals = new Uint8Array(vs * chunk);
    const kv = new DataView(keys.buffer);
    const vv = new DataView(vals.buffer);
    const tokenSize = Math.max(ks, 8);
    let inTok: Uint8Array | null = null;
    const outTok = new Uint8Array(tokenSize);
    for (;;) {
      const count = new Uint32Array([chunk]);
      const ret = lib.bpf_map_lookup_batch(
        this.fd,
        inTok,
        outTok,
        keys,
        vals,
        count,
        batchOpts(UpdateFlags.Any),
      );
      if (ret < 0 && ret !== -2) {
        if ((ret === -22 || ret === -95 || ret === -524) && out.length === 0) return [...this.entries()];
        check(ret, `map ${this.name}: lookup batch`);
      }
      for (let i = 0; i < count[0]!; i++)
        out.push([this.#key.decode(kv, i * ks), this.#value.decode(vv, i * vs)]);
      if (ret === -2) return out;
      inTok = new Uint8Array(outTok);
    }
  }

  /** Pins the map at a bpffs path (the parent directory must exist on bpffs). */
  pin(path: string): void {
    check(lib.bpf_obj_pin(this.fd, path), `map ${this.name}: pin ${path}`);
  }

  close(): void {
    if (this.#fd >= 0 && this.#owned) lib.close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A per-CPU map: values come back one per possible CPU. */
export class PerCpuMap<K, V> extends BpfMap<K, V[]> {
  constructor(fd: number, codecs: MapCodecs<K, V>, opts: { owned?: boolean; info?: MapInfo } = {}) {
    const info = opts.info ?? mapInfoByFd(fd);
    if (!isPerCpu(info.type)) {
      throw new BpfError(`map ${info.name}: ${mapTypeName(info.type)} is not a per-CPU map`, 22);
    }
    super(fd, { key: codecs.key, value: perCpu(codecs.value, info.valueSize) }, { ...opts, info });
  }

  /** The per-CPU values of a numeric map added up. */
  sum(key: K): V extends bigint ? bigint : number {
    const values = this.lookup(key) ?? [];
    return sumValues(values as unknown[]) as V extends bigint ? bigint : number;
  }
}

function sumValues(values: readonly unknown[]): number | bigint {
  if (values.length && typeof values[0] === 'bigint') return (values as bigint[]).reduce((a, b) => a + b, 0n);
  return (values as number[]).reduce((a, b) => a + b, 0);
}

/** The codec of a per-CPU value: one element per possible CPU, each padded to 8 bytes. */
export function perCpu<V>(of: Codec<V>, valueSize = of.size): Codec<V[]> {
  const n = numPossibleCpus();
  const stride = Math.ceil(valueSize / 8) * 8;
  return {
    size: stride * n,
    align: 8,
    encode(v, d, o) {
      if (v.length !== n) throw new RangeError(`per-CPU value needs ${n} elements, got ${v.length}`);
      for (let i = 0; i < n; i++) of.encode(v[i] as V, d, o + i * stride);
    },
    decode(d, o) {
      const out: V[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = of.decode(d, o + i * stride);
      return out;
    },
  };
}

function batchOpts(flags: bigint): Uint8Array {
  const opts = new Uint8Array(24);
  const d = new DataView(opts.buffer);
  d.setBigUint64(0, 24n, true);
  d.setBigUint64(8, flags, true); // elem_flags
  return opts;
}

/** LPM trie key: prefix length followed by the data. */
export function lpmKey<T>(data: Codec<T>): Codec<{ prefixLen: number; data: T }> {
  return {
    size: 4 + data.size,
    align: 4,
    encode(v, d, o) {
      d.setUint32(o, v.prefixLen, true);
      data.encode(v.data, d, o + 4);
    },
    decode: (d, o) => ({ prefixLen: d.getUint32(o, true), data: data.decode(d, o + 4) }),
  };
}

/** Options for creating a map at run time (inner maps, tests, the SDK's users). */
export interface CreateMapOptions {
  type: number;
  name?: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  /** A template for the inner maps of array/hash-of-maps. */
  innerMapFd?: number;
}

export function createMapFd(o: CreateMapOptions): number {
  const opts = new Uint8Array(48);
  const d = new DataView(opts.buffer);
  d.setBigUint64(0, 48n, true);
  d.setUint32(24, o.innerMapFd ?? 0, true);
  d.setUint32(28, o.flags ?? 0, true);
  const fd = lib.bpf_map_create(o.type, o.name ?? null, o.keySize, o.valueSize, o.maxEntries, opts);
  return checkFd(fd, `map ${o.name ?? '(unnamed)'}: create ${mapTypeName(o.type)}`);
}

/** Creates a map and wraps it with codecs (per-CPU types give a PerCpuMap). */
export function createMap<K, V>(
  o: Omit<CreateMapOptions, 'keySize' | 'valueSize'> & MapCodecs<K, V>,
): BpfMap<K, V> {
  const fd = createMapFd({ ...o, keySize: o.key.size, valueSize: o.value.size });
  try {
    return isPerCpu(o.type)
      ? (new PerCpuMap(fd, o) as unknown as BpfMap<K, V>)
      : new BpfMap(fd, { key: o.key, value: o.value });
  } catch (err) {
    lib.close(fd);
    throw err;
  }
}

/** Opens a map pinned on bpffs. */
export function openPinnedMap<K, V>(path: string, codecs: MapCodecs<K, V>): BpfMap<K, V> {
  const fd = checkFd(lib.bpf_obj_get(path), `map ${path}: open pinned`);
  try {
    const info = mapInfoByFd(fd);
    return isPerCpu(info.type)
      ? (new PerCpuMap(fd, codecs, { info }) as unknown as BpfMap<K, V>)
      : new BpfMap(fd, codecs, { info });
  } catch (err) {
    lib.close(fd);
    throw err;
  }
}

/** Opens a map by kernel id (inner maps are looked up by id). */
export function openMapById<K, V>(id: number, codecs: MapCodecs<K, V>): BpfMap<K, V> {
  const fd = checkFd(lib.bpf_map_get_fd_by_id(id), `map id ${id}: open`);
  try {
    return new BpfMap(fd, codecs);
  } catch (err) {
    lib.close(fd);
    throw err;
  }
}

/** Codecs for maps whose entries are opaque bytes (bpftool-style dumps of any map). */
export function rawCodecs(
  info: Pick<MapInfo, 'keySize' | 'valueSize' | 'type'>,
): MapCodecs<Uint8Array, Uint8Array> {
  const slots = isPerCpu(info.type) ? numPossibleCpus() : 1;
  const stride = slots > 1 ? Math.ceil(info.valueSize / 8) * 8 : info.valueSize;
  return { key: bytes(info.keySize), value: bytes(stride * slots) };
}

/** Values of prog arrays and map-in-maps are fds on update and ids on lookup. */
export const fdValue = u32;

function jsonBig(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/**
 * Opens whatever is pinned at path if it is a map, with raw codecs (for tools that list
 * maps of any layout); undefined for pinned programs and links.
 */
export function openPinnedRawMap(path: string): BpfMap<Uint8Array, Uint8Array> | undefined {
  const fd = checkFd(lib.bpf_obj_get(path), `pinned object ${path}: open`);
  try {
    // fdinfo names the object's kind without guessing from info layouts.
    if (!/^map_type:/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))) {
      lib.close(fd);
      return undefined;
    }
    const info = mapInfoByFd(fd);
    return new BpfMap(fd, rawCodecs(info), { info });
  } catch (err) {
    lib.close(fd);
    throw err;
  }
}
