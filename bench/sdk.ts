/**
 * hypha/bpf against C with libbpf, on the same map and data (bench/native/sdk_bench.c):
 * single lookups and updates, a batch update of 100,000 entries, and ring buffer drain
 * of 64-byte records decoded into JS objects. Also the bare cost of one FFI call, which
 * is what decided koffi over an N-API addon (see README).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { koffi } from '../src/bpf/ffi.js';
import { cstring, ipv4, loadCollection, RingBufReader, struct, u8, u16, u32, u64 } from '../src/bpf/index.js';
import { figure, repoRoot, writeResults } from './report.js';

const OBJ = join(repoRoot, 'dist/test/bpf/sdk_test.bpf.o');
const N = 100_000;
const LOOKUPS = 1_000_000;
const ROUNDS = 20;
const PER_ROUND = 50_000;

const key = struct({ addr: u32, port: u16, proto: u8, pad: u8 });
const value = struct({ packets: u64, bytes: u64, flags: u32, name: cstring(12) });
void ipv4;

interface CFigures {
  single_lookup_ns: number;
  single_update_ns: number;
  batch_update_per_s: number;
  ringbuf_records_per_s: number;
}

function measureTs() {
  using coll = loadCollection(OBJ);
  const hash = coll.map('sdk_hash', { key, value });
  const keys = Array.from({ length: N }, (_, i) => ({
    addr: (0x0a000000 | i) >>> 0,
    port: i & 0xffff,
    proto: 6,
    pad: 0,
  }));
  const entries = keys.map((k, i) => [k, { packets: BigInt(i), bytes: 0n, flags: i, name: '' }] as const);

  let t0 = performance.now();
  hash.updateBatch(entries);
  const batch = (performance.now() - t0) / 1000;

  let sink = 0n;
  t0 = performance.now();
  for (let i = 0; i < LOOKUPS; i++) sink += hash.lookup(keys[i % N]!)!.packets;
  const lookup = (performance.now() - t0) / 1000;

  const v = { packets: 0n, bytes: 0n, flags: 0, name: '' };
  t0 = performance.now();
  for (let i = 0; i < LOOKUPS; i++) {
    v.packets = BigInt(i);
    hash.update(keys[i % N]!, v);
  }
  const update = (performance.now() - t0) / 1000;

  // Ring buffer: records emitted by a test run, drained and decoded into objects.
  coll.map('sdk_bench_ctl', { key: u32, value: u32 }).update(0, PER_ROUND);
  const emit = coll.program('sdk_emit');
  using reader = new RingBufReader(coll.rawMap('sdk_events'), { batchBytes: 8 << 20 });
  let drained = 0;
  let drainS = 0;
  const events: { seq: number; len: number; ts: bigint; first: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    emit.testRun({ data: new Uint8Array(64) });
    t0 = performance.now();
    events.length = 0;
    const batch = reader.drain();
    batch.forEach((d, off) => {
      events.push({
        seq: d.getUint32(off, true),
        len: d.getUint32(off + 4, true),
        ts: d.getBigUint64(off + 8, true),
        first: d.getUint8(off + 16),
      });
    });
    drained += events.length;
    drainS += (performance.now() - t0) / 1000;
  }
  if (drained !== ROUNDS * PER_ROUND)
    throw new Error(`ring buffer lost records: ${drained} of ${ROUNDS * PER_ROUND}`);

  // The FFI's own cost: a call that does no work in C.
  const libc = koffi.load('libc.so.6');
  const getpagesize = libc.func('int getpagesize(void)') as () => number;
  t0 = performance.now();
  for (let i = 0; i < LOOKUPS; i++) getpagesize();
  const ffiNs = ((performance.now() - t0) / LOOKUPS) * 1e6;

  void sink;
  return {
    lookupNs: (lookup / LOOKUPS) * 1e9,
    updateNs: (update / LOOKUPS) * 1e9,
    batchPerS: N / batch,
    ringPerS: drained / drainS,
    ringLost: ROUNDS * PER_ROUND - drained,
    ffiNs,
  };
}

const c = JSON.parse(
  execFileSync(join(repoRoot, 'dist/bench/native/sdk_bench'), [OBJ]).toString(),
) as CFigures;
const ts = measureTs();
writeResults('sdk', [
  figure('single lookup (TS vs C)', ts.lookupNs, 'ns/op', c.single_lookup_ns),
  figure('single update (TS vs C)', ts.updateNs, 'ns/op', c.single_update_ns),
  figure('batch update 100k hash entries (TS vs C)', ts.batchPerS, 'entries/s', c.batch_update_per_s),
  figure(
    'ring buffer drain, 64-byte records decoded (TS vs C)',
    ts.ringPerS,
    'records/s',
    c.ringbuf_records_per_s,
  ),
  figure('ring buffer records lost', ts.ringLost, 'records'),
  figure('koffi call overhead (no-op C function)', ts.ffiNs, 'ns/call'),
]);
