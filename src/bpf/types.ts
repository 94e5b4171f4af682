/** Kernel enums (linux/bpf.h), by the names libbpf and bpftool print. */

export const MapType = {
  Hash: 1,
  Array: 2,
  ProgArray: 3,
  PerfEventArray: 4,
  PerCpuHash: 5,
  PerCpuArray: 6,
  LruHash: 9,
  LruPerCpuHash: 10,
  LpmTrie: 11,
  ArrayOfMaps: 12,
  HashOfMaps: 13,
  RingBuf: 27,
} as const;

const MAP_TYPE_NAMES: Record<number, string> = {
  0: 'unspec',
  1: 'hash',
  2: 'array',
  3: 'prog_array',
  4: 'perf_event_array',
  5: 'percpu_hash',
  6: 'percpu_array',
  7: 'stack_trace',
  8: 'cgroup_array',
  9: 'lru_hash',
  10: 'lru_percpu_hash',
  11: 'lpm_trie',
  12: 'array_of_maps',
  13: 'hash_of_maps',
  14: 'devmap',
  15: 'sockmap',
  16: 'cpumap',
  17: 'xskmap',
  18: 'sockhash',
  19: 'cgroup_storage',
  20: 'reuseport_sockarray',
  21: 'percpu_cgroup_storage',
  22: 'queue',
  23: 'stack',
  24: 'sk_storage',
  25: 'devmap_hash',
  26: 'struct_ops',
  27: 'ringbuf',
  28: 'inode_storage',
  29: 'task_storage',
  30: 'bloom_filter',
  31: 'user_ringbuf',
  32: 'cgrp_storage',
};

export function mapTypeName(t: number): string {
  return MAP_TYPE_NAMES[t] ?? `type ${t}`;
}

export function isPerCpu(t: number): boolean {
  return t === MapType.PerCpuHash || t === MapType.PerCpuArray || t === MapType.LruPerCpuHash || t === 21;
}

export const ProgType = {
  SocketFilter: 1,
  Kprobe: 2,
  SchedCls: 3,
  SchedAct: 4,
  Tracepoint: 5,
  Xdp: 6,
  CgroupSkb: 8,
  CgroupSock: 9,
  SockOps: 13,
  SkMsg: 16,
  CgroupSockAddr: 18,
} as const;

const PROG_TYPE_NAMES: Record<number, string> = {
  1: 'socket_filter',
  2: 'kprobe',
  3: 'sched_cls',
  4: 'sched_act',
  5: 'tracepoint',
  6: 'xdp',
  7: 'perf_event',
  8: 'cgroup_skb',
  9: 'cgroup_sock',
  13: 'sock_ops',
  14: 'sk_skb',
  16: 'sk_msg',
  17: 'raw_tracepoint',
  18: 'cgroup_sock_addr',
  26: 'tracing',
};

export function progTypeName(t: number): string {
  return PROG_TYPE_NAMES[t] ?? `type ${t}`;
}

/** Flags for map updates (BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK). */
export const UpdateFlags = { Any: 0n, NoExist: 1n, Exist: 2n, Lock: 4n } as const;
export type UpdateFlag = (typeof UpdateFlags)[keyof typeof UpdateFlags];

/** Map creation flags used by the SDK. */
export const MapFlags = { NoPrealloc: 1, RdOnlyProg: 1 << 7 } as const;

/** tc return codes (linux/pkt_cls.h). */
export const TcAct = { Unspec: -1, Ok: 0, Shot: 2, Redirect: 7 } as const;

/** XDP return codes. */
export const XdpAct = { Aborted: 0, Drop: 1, Pass: 2, Tx: 3, Redirect: 4 } as const;
