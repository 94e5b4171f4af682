/**
 * The thinnest layer: libbpf (Debian's libbpf1) and the project's shim, declared for
 * koffi. Pointers are bigints; buffers are passed as Uint8Array views of JS memory, so
 * map operations copy nothing. Nothing here interprets results: callers turn return
 * codes into errors (see errors.ts).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type koffiTypes from 'koffi';

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof koffiTypes;

export { koffi };

/** An opaque C pointer; `null` for NULL. */
export type Ptr = bigint | null;
type Bytes = Uint8Array | null;
type Fn<A extends unknown[], R> = ((...args: A) => R) & {
  async(...args: [...A, (err: unknown, res: R) => void]): void;
};

function shimPath(): string {
  // dist/src/bpf/ffi.js -> dist/native/libhypha-shim.so
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    join(here, '../../native/libhypha-shim.so'),
    join(here, '../../dist/native/libhypha-shim.so'),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found)
    throw new Error(`libhypha-shim.so not found (looked in ${candidates.join(', ')}); run npm run build`);
  return found;
}

const bpf = koffi.load('libbpf.so.1');
const shim = koffi.load(shimPath());
const libc = koffi.load('libc.so.6');

const f = <A extends unknown[], R>(lib: any, proto: string): Fn<A, R> => lib.func(proto) as Fn<A, R>;

export const lib = {
  // objects
  bpf_object__open_file: f<[string, Ptr], Ptr>(
    bpf,
    'void *bpf_object__open_file(const char *path, void *opts)',
  ),
  bpf_object__open_mem: f<[Uint8Array, number, Ptr], Ptr>(
    bpf,
    'void *bpf_object__open_mem(const void *buf, size_t sz, void *opts)',
  ),
  bpf_object__load: f<[Ptr], number>(bpf, 'int bpf_object__load(void *obj)'),
  bpf_object__close: f<[Ptr], void>(bpf, 'void bpf_object__close(void *obj)'),
  bpf_object__next_map: f<[Ptr, Ptr], Ptr>(bpf, 'void *bpf_object__next_map(void *obj, void *map)'),
  bpf_object__next_program: f<[Ptr, Ptr], Ptr>(bpf, 'void *bpf_object__next_program(void *obj, void *prog)'),
  bpf_object__btf: f<[Ptr], Ptr>(bpf, 'void *bpf_object__btf(void *obj)'),

  // maps inside an object
  bpf_map__name: f<[Ptr], string>(bpf, 'const char *bpf_map__name(void *map)'),
  bpf_map__type: f<[Ptr], number>(bpf, 'int bpf_map__type(void *map)'),
  bpf_map__key_size: f<[Ptr], number>(bpf, 'uint32_t bpf_map__key_size(void *map)'),
  bpf_map__value_size: f<[Ptr], number>(bpf, 'uint32_t bpf_map__value_size(void *map)'),
  bpf_map__max_entries: f<[Ptr], number>(bpf, 'uint32_t bpf_map__max_entries(void *map)'),
  bpf_map__map_flags: f<[Ptr], number>(bpf, 'uint32_t bpf_map__map_flags(void *map)'),
  bpf_map__btf_value_type_id: f<[Ptr], number>(bpf, 'uint32_t bpf_map__btf_value_type_id(void *map)'),
  bpf_map__btf_key_type_id: f<[Ptr], number>(bpf, 'uint32_t bpf_map__btf_key_type_id(void *map)'),
  bpf_map__fd: f<[Ptr], number>(bpf, 'int bpf_map__fd(void *map)'),
  bpf_map__reuse_fd: f<[Ptr, number], number>(bpf, 'int bpf_map__reuse_fd(void *map, int fd)'),
  bpf_map__set_max_entries: f<[Ptr, number], number>(
    bpf,
    'int bpf_map__set_max_entries(void *map, uint32_t n)',
  ),
  bpf_map__set_pin_path: f<[Ptr, string | null], number>(
    bpf,
    'int bpf_map__set_pin_path(void *map, const char *path)',
  ),
  bpf_map__pin_path: f<[Ptr], string | null>(bpf, 'const char *bpf_map__pin_path(void *map)'),
  bpf_map__initial_value: f<[Ptr, BigUint64Array], Ptr>(
    bpf,
    'void *bpf_map__initial_value(void *map, size_t *psize)',
  ),
  bpf_map__set_autocreate: f<[Ptr, boolean], number>(
    bpf,
    'int bpf_map__set_autocreate(void *map, bool autocreate)',
  ),
  bpf_map__inner_map: f<[Ptr], Ptr>(bpf, 'void *bpf_map__inner_map(void *map)'),

  // programs inside an object
  bpf_program__name: f<[Ptr], string>(bpf, 'const char *bpf_program__name(void *prog)'),
  bpf_program__section_name: f<[Ptr], string>(bpf, 'const char *bpf_program__section_name(void *prog)'),
  bpf_program__type: f<[Ptr], number>(bpf, 'int bpf_program__type(void *prog)'),
  bpf_program__expected_attach_type: f<[Ptr], number>(
    bpf,
    'int bpf_program__expected_attach_type(void *prog)',
  ),
  bpf_program__fd: f<[Ptr], number>(bpf, 'int bpf_program__fd(void *prog)'),
  bpf_program__insn_cnt: f<[Ptr], number>(bpf, 'size_t bpf_program__insn_cnt(void *prog)'),
  bpf_program__set_autoload: f<[Ptr, boolean], number>(
    bpf,
    'int bpf_program__set_autoload(void *prog, bool load)',
  ),
  bpf_program__set_log_buf: f<[Ptr, Uint8Array, number], number>(
    bpf,
    'int bpf_program__set_log_buf(void *prog, void *buf, size_t size)',
  ),
  bpf_program__attach_cgroup: f<[Ptr, number], Ptr>(
    bpf,
    'void *bpf_program__attach_cgroup(void *prog, int cgfd)',
  ),
  bpf_program__attach_xdp: f<[Ptr, number], Ptr>(
    bpf,
    'void *bpf_program__attach_xdp(void *prog, int ifindex)',
  ),
  bpf_program__attach_tracepoint: f<[Ptr, string, string], Ptr>(
    bpf,
    'void *bpf_program__attach_tracepoint(void *prog, const char *cat, const char *name)',
  ),
  bpf_program__attach_kprobe: f<[Ptr, boolean, string], Ptr>(
    bpf,
    'void *bpf_program__attach_kprobe(void *prog, bool retprobe, const char *func)',
  ),

  // links
  bpf_link__fd: f<[Ptr], number>(bpf, 'int bpf_link__fd(void *link)'),
  bpf_link__pin: f<[Ptr, string], number>(bpf, 'int bpf_link__pin(void *link, const char *path)'),
  bpf_link__unpin: f<[Ptr], number>(bpf, 'int bpf_link__unpin(void *link)'),
  bpf_link__open: f<[string], Ptr>(bpf, 'void *bpf_link__open(const char *path)'),
  bpf_link__update_program: f<[Ptr, Ptr], number>(
    bpf,
    'int bpf_link__update_program(void *link, void *prog)',
  ),
  bpf_link__disconnect: f<[Ptr], void>(bpf, 'void bpf_link__disconnect(void *link)'),
  bpf_link__destroy: f<[Ptr], number>(bpf, 'int bpf_link__destroy(void *link)'),

  // tc (netlink) and xdp
  bpf_tc_hook_create: f<[Uint8Array], number>(bpf, 'int bpf_tc_hook_create(void *hook)'),
  bpf_tc_hook_destroy: f<[Uint8Array], number>(bpf, 'int bpf_tc_hook_destroy(void *hook)'),
  bpf_tc_attach: f<[Uint8Array, Uint8Array], number>(bpf, 'int bpf_tc_attach(void *hook, void *opts)'),
  bpf_tc_detach: f<[Uint8Array, Uint8Array], number>(bpf, 'int bpf_tc_detach(void *hook, void *opts)'),
  bpf_tc_query: f<[Uint8Array, Uint8Array], number>(bpf, 'int bpf_tc_query(void *hook, void *opts)'),

  // raw fd operations
  bpf_map_create: f<[number, string | null, number, number, number, Uint8Array | null], number>(
    bpf,
    'int bpf_map_create(int type, const char *name, uint32_t ksz, uint32_t vsz, uint32_t max, void *opts)',
  ),
  bpf_map_lookup_elem: f<[number, Bytes, Bytes], number>(
    bpf,
    'int bpf_map_lookup_elem(int fd, const void *key, void *value)',
  ),
  bpf_map_lookup_elem_flags: f<[number, Bytes, Bytes, bigint], number>(
    bpf,
    'int bpf_map_lookup_elem_flags(int fd, const void *key, void *value, uint64_t flags)',
  ),
  bpf_map_update_elem: f<[number, Bytes, Bytes, bigint], number>(
    bpf,
    'int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)',
  ),
  bpf_map_delete_elem: f<[number, Bytes], number>(bpf, 'int bpf_map_delete_elem(int fd, const void *key)'),
  bpf_map_lookup_and_delete_elem: f<[number, Bytes, Bytes], number>(
    bpf,
    'int bpf_map_lookup_and_delete_elem(int fd, const void *key, void *value)',
  ),
  bpf_map_get_next_key: f<[number, Bytes, Bytes], number>(
    bpf,
    'int bpf_map_get_next_key(int fd, const void *key, void *next)',
  ),
  bpf_map_lookup_batch: f<[number, Bytes, Bytes, Bytes, Bytes, Uint32Array, Uint8Array], number>(
    bpf,
    'int bpf_map_lookup_batch(int fd, void *in, void *out, void *keys, void *values, uint32_t *count, void *opts)',
  ),
  bpf_map_update_batch: f<[number, Bytes, Bytes, Uint32Array, Uint8Array], number>(
    bpf,
    'int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count, void *opts)',
  ),
  bpf_map_delete_batch: f<[number, Bytes, Uint32Array, Uint8Array], number>(
    bpf,
    'int bpf_map_delete_batch(int fd, const void *keys, uint32_t *count, void *opts)',
  ),
  bpf_obj_pin: f<[number, string], number>(bpf, 'int bpf_obj_pin(int fd, const char *path)'),
  bpf_obj_get: f<[string], number>(bpf, 'int bpf_obj_get(const char *path)'),
  bpf_obj_get_info_by_fd: f<[number, Uint8Array, Uint32Array], number>(
    bpf,
    'int bpf_obj_get_info_by_fd(int fd, void *info, uint32_t *len)',
  ),
  bpf_map_get_fd_by_id: f<[number], number>(bpf, 'int bpf_map_get_fd_by_id(uint32_t id)'),
  bpf_prog_get_fd_by_id: f<[number], number>(bpf, 'int bpf_prog_get_fd_by_id(uint32_t id)'),
  bpf_prog_test_run_opts: f<[number, Uint8Array], number>(
    bpf,
    'int bpf_prog_test_run_opts(int fd, void *opts)',
  ),
  libbpf_num_possible_cpus: f<[], number>(bpf, 'int libbpf_num_possible_cpus(void)'),
  libbpf_probe_bpf_map_type: f<[number, Ptr], number>(
    bpf,
    'int libbpf_probe_bpf_map_type(int type, void *opts)',
  ),
  libbpf_probe_bpf_prog_type: f<[number, Ptr], number>(
    bpf,
    'int libbpf_probe_bpf_prog_type(int type, void *opts)',
  ),

  // BTF
  btf__parse: f<[string, Ptr], Ptr>(bpf, 'void *btf__parse(const char *path, void *ext)'),
  btf__free: f<[Ptr], void>(bpf, 'void btf__free(void *btf)'),
  btf__type_cnt: f<[Ptr], number>(bpf, 'uint32_t btf__type_cnt(void *btf)'),
  btf__type_by_id: f<[Ptr, number], Ptr>(bpf, 'void *btf__type_by_id(void *btf, uint32_t id)'),
  btf__name_by_offset: f<[Ptr, number], string | null>(
    bpf,
    'const char *btf__name_by_offset(void *btf, uint32_t off)',
  ),
  btf__find_by_name_kind: f<[Ptr, string, number], number>(
    bpf,
    'int btf__find_by_name_kind(void *btf, const char *name, uint32_t kind)',
  ),
  btf__resolve_size: f<[Ptr, number], bigint | number>(
    bpf,
    'int64_t btf__resolve_size(void *btf, uint32_t id)',
  ),

  // shim
  hy_log_init: f<[number], void>(shim, 'void hy_log_init(int echo_level)'),
  hy_log_take: f<[Uint8Array, number], number>(shim, 'size_t hy_log_take(void *out, size_t cap)'),
  hy_ringbuf_new: f<[number], Ptr>(shim, 'void *hy_ringbuf_new(int map_fd)'),
  hy_ringbuf_drain: f<[Ptr, Uint8Array, number], number>(
    shim,
    'long hy_ringbuf_drain(void *h, void *out, size_t cap)',
  ),
  hy_ringbuf_wait: f<[Ptr, number], number>(shim, 'int hy_ringbuf_wait(void *h, int timeout_ms)'),
  hy_ringbuf_wake: f<[Ptr], void>(shim, 'void hy_ringbuf_wake(void *h)'),
  hy_ringbuf_free: f<[Ptr], void>(shim, 'void hy_ringbuf_free(void *h)'),

  // libc
  close: f<[number], number>(libc, 'int close(int fd)'),
  strerror: f<[number], string>(libc, 'const char *strerror(int errnum)'),
  if_nametoindex: f<[string], number>(libc, 'unsigned int if_nametoindex(const char *name)'),
  open: f<[string, number], number>(libc, 'int open(const char *path, int flags)'),
  dup: f<[number], number>(libc, 'int dup(int fd)'),
};

/** errno of the last failed call on this thread. */
export function errno(): number {
  return koffi.errno();
}

/** A view of C memory as bytes (no copy). The memory must outlive the view. */
export function view(ptr: bigint, length: number): Uint8Array {
  return new Uint8Array(koffi.view(ptr, length));
}

/** Reads `count` u32s at ptr. */
export function readU32s(ptr: bigint, count: number): Uint32Array {
  return new Uint32Array(koffi.view(ptr, count * 4));
}

const debugLevel = Number(process.env.HYPHA_LIBBPF_LOG ?? '-1');
lib.hy_log_init(Number.isFinite(debugLevel) ? debugLevel : -1);

/** Takes libbpf's messages printed since the last call (they explain most failures). */
export function takeLibbpfLog(): string {
  const buf = new Uint8Array(64 * 1024);
  const n = lib.hy_log_take(buf, buf.length);
  return new TextDecoder().decode(buf.subarray(0, n));
}
