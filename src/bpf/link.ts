/**
 * Attachments. Every attach kind is a `Link` with one interface; tc filters are managed
 * over netlink by libbpf (bpf_tc_*), the others are kernel bpf_links that libbpf creates.
 * A link detaches on close unless it was pinned, and removes only what it created.
 */
import { closeSync, existsSync, openSync } from 'node:fs';
import { NotSupportedError } from '../errors.js';
import { BpfError, check, checkPtr } from './errors.js';
import { lib } from './ffi.js';
import { withNetns } from './netns.js';
import type { Program } from './program.js';

export interface Link extends Disposable {
  /** What is attached where, e.g. `tc ingress hy123 handle 1 prio 1`. */
  readonly description: string;
  /** Atomically swaps the program, with no moment where no program runs. */
  update(program: Program): void;
  /** Keeps the attachment after this process exits (bpf_link kinds only). */
  pin(path: string): void;
  unpin(): void;
  /** Detaches (unless pinned) and releases the handle. Idempotent. */
  close(): void;
}

export type TcDirection = 'ingress' | 'egress';

export interface TcAttachOptions {
  /** Interface name or index, in `netns` or the caller's network namespace. */
  interface: string | number;
  /** Network namespace of the interface (a name from `ip netns` or a path). */
  netns?: string;
  direction: TcDirection;
  program: Program;
  /** Filter handle and priority: together they name the filter (defaults 1 and 1). */
  handle?: number;
  priority?: number;
  /**
   * Replace a filter already at this handle/priority in one netlink operation, so
   * traffic never sees a gap. Without it, an occupied slot is an error (EEXIST).
   */
  replace?: boolean;
}

const TC_INGRESS = 1;
const TC_EGRESS = 2;
const TC_F_REPLACE = 1;

export function ifindexOf(iface: string | number): number {
  if (typeof iface === 'number') return iface;
  const idx = lib.if_nametoindex(iface);
  if (!idx) throw new BpfError(`interface ${iface}`, 19, 'no such interface in this network namespace');
  return idx;
}

function tcHook(ifindex: number, point: number): Uint8Array {
  const hook = new Uint8Array(24);
  const d = new DataView(hook.buffer);
  d.setBigUint64(0, 24n, true);
  d.setInt32(8, ifindex, true);
  d.setUint32(12, point, true);
  return hook;
}

function tcOpts(o: { progFd?: number; flags?: number; handle: number; priority: number }): Uint8Array {
  const opts = new Uint8Array(32);
  const d = new DataView(opts.buffer);
  d.setBigUint64(0, 32n, true);
  d.setInt32(8, o.progFd ?? 0, true);
  d.setUint32(12, o.flags ?? 0, true);
  d.setUint32(20, o.handle, true);
  d.setUint32(24, o.priority, true);
  return opts;
}

/**
 * clsact qdiscs this process created, per ifindex, with the number of our filters on
 * them: the qdisc is removed when the last of our filters goes, and never if it was
 * there before us.
 */
const createdQdiscs = new Map<number, number>();

class TcLink implements Link {
  description: string;
  readonly #ifindex: number;
  readonly #point: number;
  readonly #handle: number;
  readonly #priority: number;
  readonly #netns: string | undefined;
  #open = true;

  constructor(o: TcAttachOptions) {
    this.#netns = o.netns;
    const r = this.#inNs(() => this.#attach(o));
    this.#ifindex = r.ifindex;
    this.#point = r.point;
    this.#handle = r.handle;
    this.#priority = r.priority;
    this.description = r.description;
  }

  #inNs<T>(fn: () => T): T {
    return this.#netns ? withNetns(this.#netns, fn) : fn();
  }

  #attach(o: TcAttachOptions) {
    const handle = o.handle ?? 1;
    const priority = o.priority ?? 1;
    const where = o.netns ? `${o.netns}/${o.interface}` : `${o.interface}`;
    this.description = `tc ${o.direction} ${where} handle ${handle} prio ${priority} (${o.program.name})`;
    const ifindex = ifindexOf(o.interface);
    const point = o.direction === 'ingress' ? TC_INGRESS : TC_EGRESS;
    const hook = tcHook(ifindex, point);
    const created = lib.bpf_tc_hook_create(hook);
    if (created < 0 && created !== -17) check(created, `${this.description}: create clsact qdisc`);
    if (created === 0) createdQdiscs.set(ifindex, 0);
    const ret = lib.bpf_tc_attach(
      hook,
      tcOpts({ progFd: o.program.fd, flags: o.replace ? TC_F_REPLACE : 0, handle, priority }),
    );
    if (ret < 0) {
      this.#releaseQdisc(ifindex);
      check(ret, `${this.description}: attach`);
    }
    const users = createdQdiscs.get(ifindex);
    if (users !== undefined) createdQdiscs.set(ifindex, users + 1);
    return { ifindex, point, handle, priority, description: this.description };
  }

  update(program: Program): void {
    this.#inNs(() =>
      check(
        lib.bpf_tc_attach(
          tcHook(this.#ifindex, this.#point),
          tcOpts({ progFd: program.fd, flags: TC_F_REPLACE, handle: this.#handle, priority: this.#priority }),
        ),
        `${this.description}: replace with ${program.name}`,
      ),
    );
  }

  pin(): void {
    throw new NotSupportedError(
      `${this.description}: tc filters outlive the process already; they cannot be pinned`,
    );
  }

  unpin(): void {}

  /** Leaves the filter in place and forgets it (the agent does this on restart handover). */
  disconnect(): void {
    this.#open = false;
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    try {
      this.#inNs(() => {
        const ret = lib.bpf_tc_detach(
          tcHook(this.#ifindex, this.#point),
          tcOpts({ handle: this.#handle, priority: this.#priority }),
        );
        // The interface may be gone already (its namespace deleted): nothing is left to detach.
        if (ret < 0 && ret !== -2 && ret !== -19 && ret !== -22) check(ret, `${this.description}: detach`);
        this.#releaseQdisc(this.#ifindex, true);
      });
    } catch (err) {
      // A deleted namespace took the filter with it.
      if (!(err instanceof BpfError && this.#netns && err.errno === 2)) throw err;
    }
  }

  #releaseQdisc(ifindex: number, wasUser = false): void {
    const users = createdQdiscs.get(ifindex);
    if (users === undefined) return;
    const left = wasUser ? users - 1 : users;
    if (left > 0) {
      createdQdiscs.set(ifindex, left);
      return;
    }
    createdQdiscs.delete(ifindex);
    lib.bpf_tc_hook_destroy(tcHook(ifindex, TC_INGRESS | TC_EGRESS));
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export function attachTc(o: TcAttachOptions): TcLink {
  return new TcLink(o);
}

/** The id of the program in a tc filter slot, or undefined when the slot is empty. */
export function queryTc(o: Omit<TcAttachOptions, 'program' | 'replace'>): number | undefined {
  const query = () => {
    const opts = tcOpts({ handle: o.handle ?? 1, priority: o.priority ?? 1 });
    const point = o.direction === 'ingress' ? TC_INGRESS : TC_EGRESS;
    const ret = lib.bpf_tc_query(tcHook(ifindexOf(o.interface), point), opts);
    if (ret === -2 || ret === -22) return undefined;
    check(ret, `tc ${o.direction} ${o.interface}: query`);
    return new DataView(opts.buffer).getUint32(16, true);
  };
  return o.netns ? withNetns(o.netns, query) : query();
}

/** A kernel bpf_link made by libbpf (XDP, cgroup, tracepoint, kprobe). */
class KernelLink implements Link {
  readonly description: string;
  #ptr: bigint | null;
  #pinned = false;

  constructor(ptr: bigint, description: string, pinned = false) {
    this.#ptr = ptr;
    this.description = description;
    this.#pinned = pinned;
  }

  get fd(): number {
    if (this.#ptr === null) throw new BpfError(`${this.description}: used after close`, 9);
    return lib.bpf_link__fd(this.#ptr);
  }

  update(program: Program): void {
    if (!program.ptr)
      throw new BpfError(`${this.description}: update needs a program loaded from an object`, 22);
    check(
      lib.bpf_link__update_program(this.#need(), program.ptr),
      `${this.description}: update to ${program.name}`,
    );
  }

  pin(path: string): void {
    check(lib.bpf_link__pin(this.#need(), path), `${this.description}: pin ${path}`);
    this.#pinned = true;
  }

  unpin(): void {
    if (!this.#pinned) return;
    check(lib.bpf_link__unpin(this.#need()), `${this.description}: unpin`);
    this.#pinned = false;
  }

  close(): void {
    if (this.#ptr === null) return;
    // A pinned link stays attached: only our handle goes.
    if (this.#pinned) lib.bpf_link__disconnect(this.#ptr);
    lib.bpf_link__destroy(this.#ptr);
    this.#ptr = null;
  }

  #need(): bigint {
    if (this.#ptr === null) throw new BpfError(`${this.description}: used after close`, 9);
    return this.#ptr;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function needPtr(program: Program, what: string): bigint {
  if (!program.ptr) throw new BpfError(`${what}: the program must come from a loaded object`, 22);
  return program.ptr;
}

export interface XdpAttachOptions {
  interface: string | number;
  /** Network namespace of the interface; the link, once made, works from anywhere. */
  netns?: string;
  program: Program;
}

export function attachXdp(o: XdpAttachOptions): Link {
  const what = `xdp ${o.netns ? `${o.netns}/` : ''}${o.interface} (${o.program.name})`;
  // The kernel resolves the ifindex in the caller's namespace when the link is made.
  const attach = () => lib.bpf_program__attach_xdp(needPtr(o.program, what), ifindexOf(o.interface));
  return new KernelLink(checkPtr(o.netns ? withNetns(o.netns, attach) : attach(), what), what);
}

export interface CgroupAttachOptions {
  /** A cgroup v2 directory, e.g. /sys/fs/cgroup/unified/hypha. */
  cgroup: string;
  /** A program whose section names the hook (cgroup/connect4, cgroup/sendmsg4, ...). */
  program: Program;
}

export function attachCgroup(o: CgroupAttachOptions): Link {
  const what = `cgroup ${o.cgroup} (${o.program.name})`;
  let fd: number;
  try {
    fd = openSync(o.cgroup, 'r');
  } catch (err) {
    throw new BpfError(`${what}: open cgroup`, (err as { errno?: number }).errno ?? 2, undefined, {
      cause: err,
    });
  }
  try {
    return new KernelLink(checkPtr(lib.bpf_program__attach_cgroup(needPtr(o.program, what), fd), what), what);
  } finally {
    closeSync(fd);
  }
}

export interface TracepointAttachOptions {
  category: string;
  name: string;
  program: Program;
}

export function attachTracepoint(o: TracepointAttachOptions): Link {
  const what = `tracepoint ${o.category}:${o.name} (${o.program.name})`;
  return new KernelLink(
    checkPtr(lib.bpf_program__attach_tracepoint(needPtr(o.program, what), o.category, o.name), what),
    what,
  );
}

export interface KprobeAttachOptions {
  /** Kernel function name. */
  function: string;
  retprobe?: boolean;
  program: Program;
}

/** Whether this kernel can attach kprobes (CONFIG_KPROBE_EVENTS). */
export function kprobesSupported(): boolean {
  return (
    existsSync('/sys/bus/event_source/devices/kprobe/type') ||
    existsSync('/sys/kernel/tracing/kprobe_events') ||
    existsSync('/sys/kernel/debug/tracing/kprobe_events')
  );
}

export function attachKprobe(o: KprobeAttachOptions): Link {
  const what = `${o.retprobe ? 'kretprobe' : 'kprobe'} ${o.function} (${o.program.name})`;
  if (!kprobesSupported()) {
    throw new NotSupportedError(`${what}: this kernel has no kprobe support (CONFIG_KPROBE_EVENTS is off)`);
  }
  return new KernelLink(
    checkPtr(lib.bpf_program__attach_kprobe(needPtr(o.program, what), o.retprobe ?? false, o.function), what),
    what,
  );
}

/** Reopens a pinned bpf_link (to update or remove it after a restart). */
export function openPinnedLink(path: string): Link {
  const what = `link ${path}`;
  return new KernelLink(checkPtr(lib.bpf_link__open(path), what), what, true);
}
