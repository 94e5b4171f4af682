import { check, checkFd } from './errors.js';
import { koffi, lib } from './ffi.js';
import { progTypeName } from './types.js';

export interface ProgInfo {
  type: number;
  id: number;
  name: string;
}

export function progInfoByFd(fd: number): ProgInfo {
  const info = new Uint8Array(232);
  const len = new Uint32Array([info.length]);
  check(lib.bpf_obj_get_info_by_fd(fd, info, len), `program fd ${fd}: get info`);
  const d = new DataView(info.buffer);
  const nameBytes = info.subarray(64, 80);
  const end = nameBytes.indexOf(0);
  return {
    type: d.getUint32(0, true),
    id: d.getUint32(4, true),
    name: new TextDecoder().decode(nameBytes.subarray(0, end < 0 ? 16 : end)),
  };
}

export interface TestRunOptions {
  /** Packet (or other input) handed to the program. */
  data?: Uint8Array;
  /** Context (e.g. a struct __sk_buff) handed in and read back. */
  ctx?: Uint8Array;
  /** Room for the output packet; defaults to the input size plus 256. */
  dataOutSize?: number;
  repeat?: number;
}

export interface TestRunResult {
  retval: number;
  /** The packet as the program left it. */
  data: Uint8Array;
  ctx?: Uint8Array;
  /** Average run time in nanoseconds. */
  durationNs: number;
}

/**
 * A loaded program. Programs from an object are owned by their Collection (`ptr` set);
 * ones opened from a pin or by id own their fd.
 */
export class Program implements Disposable {
  readonly name: string;
  readonly type: number;
  readonly id: number;
  /** libbpf's `struct bpf_program *` when the program came from an object. */
  readonly ptr: bigint | null;
  #fd: number;
  readonly #owned: boolean;

  constructor(fd: number, opts: { ptr?: bigint; owned: boolean; name?: string }) {
    const info = progInfoByFd(fd);
    this.#fd = fd;
    this.#owned = opts.owned;
    this.ptr = opts.ptr ?? null;
    this.name = opts.name ?? info.name;
    this.type = info.type;
    this.id = info.id;
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`program ${this.name}: used after close`);
    return this.#fd;
  }

  get typeName(): string {
    return progTypeName(this.type);
  }

  /** Runs the program once (or `repeat` times) on crafted input: BPF_PROG_TEST_RUN. */
  testRun(o: TestRunOptions = {}): TestRunResult {
    const data = o.data ?? new Uint8Array(0);
    const out = new Uint8Array(o.dataOutSize ?? data.length + 256);
    const ctxOut = o.ctx ? new Uint8Array(o.ctx.length) : undefined;
    const opts = new Uint8Array(80);
    const d = new DataView(opts.buffer);
    d.setBigUint64(0, 80n, true);
    d.setBigUint64(8, addressOf(data), true);
    d.setBigUint64(16, addressOf(out), true);
    d.setUint32(24, data.length, true);
    d.setUint32(28, out.length, true);
    if (o.ctx && ctxOut) {
      d.setBigUint64(32, addressOf(o.ctx), true);
      d.setBigUint64(40, addressOf(ctxOut), true);
      d.setUint32(48, o.ctx.length, true);
      d.setUint32(52, ctxOut.length, true);
    }
    d.setInt32(60, o.repeat ?? 1, true);
    check(lib.bpf_prog_test_run_opts(this.fd, opts), `program ${this.name}: test run`);
    const result: TestRunResult = {
      retval: d.getUint32(56, true) | 0,
      data: out.subarray(0, d.getUint32(28, true)),
      durationNs: d.getUint32(64, true),
    };
    if (ctxOut) result.ctx = ctxOut.subarray(0, d.getUint32(52, true));
    return result;
  }

  pin(path: string): void {
    check(lib.bpf_obj_pin(this.fd, path), `program ${this.name}: pin ${path}`);
  }

  close(): void {
    if (this.#fd >= 0 && this.#owned) lib.close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export function openPinnedProgram(path: string): Program {
  const fd = checkFd(lib.bpf_obj_get(path), `program ${path}: open pinned`);
  try {
    return new Program(fd, { owned: true });
  } catch (err) {
    lib.close(fd);
    throw err;
  }
}

/** The address of a JS buffer's memory. Touching `.buffer` moves a small typed array
 * off V8's heap, so the address stays valid while the buffer lives. */
function addressOf(buf: Uint8Array): bigint {
  if (buf.length === 0) return 0n;
  void buf.buffer;
  return koffi.address(buf) as bigint;
}
