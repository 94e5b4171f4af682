/**
 * Ring buffer consumption. Records are drained in batches into one reused buffer (see
 * the shim), and waiting happens on a worker thread, so Node's event loop is never
 * blocked. A batch's records are views into that buffer: valid until the next batch.
 */
import { BpfError, check, checkPtr } from './errors.js';
import { lib } from './ffi.js';
import type { BpfMap } from './map.js';
import { MapType } from './types.js';

/** The records of one drain; iterate it, or walk `records()` by offset. */
export class RecordBatch implements Iterable<Uint8Array> {
  /** @internal */
  constructor(
    readonly buffer: Uint8Array,
    readonly length: number,
  ) {}

  /** Calls fn with each record's view and offset into `buffer` (no allocation per record beyond the view). */
  *[Symbol.iterator](): IterableIterator<Uint8Array> {
    const d = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.length);
    for (let off = 0; off < this.length; ) {
      const len = d.getUint32(off, true);
      yield this.buffer.subarray(off + 8, off + 8 + len);
      off += 8 + ((len + 7) & ~7);
    }
  }

  /** Visits records without creating views: fn gets the DataView, the record's offset and length. */
  forEach(fn: (view: DataView, offset: number, length: number) => void): number {
    const d = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.length);
    let n = 0;
    for (let off = 0; off < this.length; n++) {
      const len = d.getUint32(off, true);
      fn(d, off + 8, len);
      off += 8 + ((len + 7) & ~7);
    }
    return n;
  }
}

export interface RingBufReaderOptions {
  /** Bytes per batch; at least the largest record plus 8. Default 1 MiB. */
  batchBytes?: number;
  /** How long one wait on the worker thread lasts before checking for abort (ms). */
  pollMs?: number;
}

export class RingBufReader implements Disposable {
  readonly name: string;
  #h: bigint | null;
  readonly #buf: Uint8Array;
  readonly #pollMs: number;
  #waiting = false;

  constructor(
    map: BpfMap<unknown, unknown> | { fd: number; name: string; type: number },
    o: RingBufReaderOptions = {},
  ) {
    if (map.type !== MapType.RingBuf) throw new BpfError(`map ${map.name}: not a ring buffer`, 22);
    this.name = map.name;
    this.#h = checkPtr(lib.hy_ringbuf_new(map.fd), `ringbuf ${map.name}: open`);
    this.#buf = new Uint8Array(o.batchBytes ?? 1 << 20);
    this.#pollMs = o.pollMs ?? 200;
  }

  #need(): bigint {
    if (this.#h === null) throw new BpfError(`ringbuf ${this.name}: used after close`, 9);
    return this.#h;
  }

  /** Takes what is ready now, without waiting. The batch may be empty. */
  drain(): RecordBatch {
    const n = lib.hy_ringbuf_drain(this.#need(), this.#buf, this.#buf.length);
    check(n, `ringbuf ${this.name}: drain`);
    return new RecordBatch(this.#buf, n);
  }

  /** Waits (off the event loop) until records are ready: true, or until timeout/close: false. */
  wait(timeoutMs = this.#pollMs): Promise<boolean> {
    const h = this.#need();
    if (this.#waiting) return Promise.reject(new BpfError(`ringbuf ${this.name}: one wait at a time`, 16));
    this.#waiting = true;
    return new Promise((resolve, reject) => {
      lib.hy_ringbuf_wait.async(h, timeoutMs, (err: unknown, res: number) => {
        this.#waiting = false;
        if (err) reject(err);
        else if (res < 0) reject(new BpfError(`ringbuf ${this.name}: wait`, -res));
        else resolve(res === 1);
      });
    });
  }

  /**
   * Batches as they arrive, until the signal aborts or the reader closes. Each batch is
   * drained completely before the next wait, so a busy ring never waits.
   */
  async *batches(signal?: AbortSignal): AsyncGenerator<RecordBatch> {
    const onAbort = () => this.#wake();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      while (this.#h !== null && !signal?.aborted) {
        const batch = this.drain();
        if (batch.length > 0) {
          yield batch;
          continue;
        }
        await this.wait();
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  #wake(): void {
    if (this.#h !== null) lib.hy_ringbuf_wake(this.#h);
  }

  /** Closes the reader; a pending wait returns first (it is woken). */
  close(): void {
    const h = this.#h;
    if (h === null) return;
    this.#h = null;
    if (!this.#waiting) {
      lib.hy_ringbuf_free(h);
      return;
    }
    // The worker thread still polls h: wake it and free once it has returned.
    lib.hy_ringbuf_wake(h);
    const free = () => (this.#waiting ? setTimeout(free, 5) : lib.hy_ringbuf_free(h));
    setTimeout(free, 0);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
