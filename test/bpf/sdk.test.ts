import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  attachCgroup,
  attachKprobe,
  attachTc,
  attachTracepoint,
  attachXdp,
  type BpfError,
  Btf,
  cgroup2Root,
  createMap,
  cstring,
  ipv4,
  kprobesSupported,
  layoutDifferences,
  loadCollection,
  loadSpec,
  lpmKey,
  MapType,
  NotSupportedError,
  openMapById,
  openPinnedMap,
  openPinnedProgram,
  queryTc,
  RingBufReader,
  struct,
  UpdateFlags,
  u8,
  u16,
  u32,
  u64,
  unpin,
  VerifierError,
} from '../../src/bpf/index.js';
import { numPossibleCpus } from '../../src/bpf/map.js';
import { skipUnlessPrivileged, testObject, withoutFdLeak } from '../helpers/kernel.js';

const OBJ = testObject('sdk_test');
const BAD = testObject('bad');

const sdkKey = struct({ addr: ipv4, port: u16, proto: u8, pad: u8 });
const sdkValue = struct({ packets: u64, bytes: u64, flags: u32, name: cstring(12) });

describe('object specs (no privileges needed)', () => {
  test('lists maps, programs and read-only globals', () => {
    const spec = loadSpec(OBJ);
    const hash = spec.maps.find((m) => m.name === 'sdk_hash');
    assert.deepEqual(
      { type: hash?.typeName, key: hash?.keySize, value: hash?.valueSize, max: hash?.maxEntries },
      { type: 'hash', key: 8, value: 32, max: 200000 },
    );
    assert.equal(spec.maps.find((m) => m.name === 'sdk_events')?.type, MapType.RingBuf);
    const tc = spec.programs.find((p) => p.name === 'sdk_tc');
    assert.equal(tc?.section, 'tc');
    assert.equal(tc?.typeName, 'sched_cls');
    assert.ok((tc?.instructions ?? 0) > 10);
    assert.deepEqual(spec.constants.map((c) => [c.name, c.size]).sort(), [
      ['enabled', 1],
      ['magic', 8],
      ['verdict', 4],
    ]);
  });

  test('a missing object file is a clear error', () => {
    assert.throws(
      () => loadSpec('/nonexistent/x.o'),
      (err: BpfError) => {
        assert.match(err.message, /object \/nonexistent\/x\.o: read: ENOENT/);
        return true;
      },
    );
  });

  test('a file that is not ELF is a clear error', () => {
    assert.throws(
      () => loadSpec(new TextEncoder().encode('not an elf file at all'), 'junk'),
      /object junk: open/,
    );
  });

  test('codecs match the C layout in BTF', () => {
    const spec = loadSpec(OBJ);
    using coll = loadOnlyBtf(spec.elf);
    assert.deepEqual(layoutDifferences(coll, 'sdk_key', sdkKey), []);
    assert.deepEqual(layoutDifferences(coll, 'sdk_value', sdkValue), []);
    const wrong = struct({ addr: ipv4, port: u32, proto: u8, pad: u8 });
    assert.ok(
      layoutDifferences(coll, 'sdk_key', wrong).some((d) => /port: size 2 in C, 4 in the codec/.test(d)),
    );
  });
});

function loadOnlyBtf(elf: Uint8Array): Btf {
  const path = `/tmp/hy-btf-${process.pid}.o`;
  writeFileSync(path, elf);
  try {
    return Btf.fromFile(path);
  } finally {
    rmSync(path);
  }
}

const skip = skipUnlessPrivileged();

describe('loading and maps', { skip }, () => {
  test('read-only globals are set before load', async () => {
    await withoutFdLeak(() => {
      using coll = loadCollection(OBJ, { constants: { magic: 1234567n } });
      assert.equal(coll.program('sdk_return_magic').testRun({ data: new Uint8Array(64) }).retval, 1234567);
    });
  });

  test('unknown or oversized constants are refused', () => {
    assert.throws(() => loadCollection(OBJ, { constants: { nope: 1 } }), /no constant nope \(has .*magic/);
    assert.throws(
      () => loadCollection(OBJ, { constants: { enabled: 300 } }),
      /constant enabled: 300 does not fit in 1 bytes/,
    );
  });

  test('the verifier log comes with a rejected program, and nothing leaks', async () => {
    await withoutFdLeak(() => {
      assert.throws(
        () => loadCollection(BAD),
        (err: unknown) => {
          assert.ok(err instanceof VerifierError, String(err));
          assert.equal(err.program, 'unchecked_read');
          assert.ok(
            err.log.some((l) => /invalid access to packet|R\d+ .*access/.test(l)),
            err.log.join('\n'),
          );
          assert.match(err.message, /EACCES|EINVAL/);
          return true;
        },
      );
    });
  });

  test('hash map: update, lookup, delete, iterate, flags and errors', async () => {
    await withoutFdLeak(() => {
      using coll = loadCollection(OBJ);
      const m = coll.map('sdk_hash', { key: sdkKey, value: sdkValue });
      const k = { addr: '10.0.0.1', port: 8080, proto: 6, pad: 0 };
      assert.equal(m.lookup(k), undefined);
      m.update(k, { packets: 1n, bytes: 100n, flags: 3, name: 'frontend' });
      assert.deepEqual(m.lookup(k), { packets: 1n, bytes: 100n, flags: 3, name: 'frontend' });
      assert.throws(
        () => m.update(k, { packets: 2n, bytes: 0n, flags: 0, name: '' }, UpdateFlags.NoExist),
        /map sdk_hash: update: EEXIST/,
      );
      m.update({ ...k, port: 9090 }, { packets: 5n, bytes: 0n, flags: 0, name: 'x' });
      assert.deepEqual([...m.keys()].map((x) => x.port).sort(), [8080, 9090]);
      assert.equal(m.count(), 2);
      assert.equal(m.delete(k), true);
      assert.equal(m.delete(k), false);
      assert.throws(() => m.get(k), /no entry for key/);
      assert.throws(
        () => coll.map('sdk_hash', { key: u32, value: sdkValue }),
        /key codec is 4 bytes but the map's key is 8/,
      );
    });
  });

  test('a full map says so', () => {
    using coll = loadCollection(OBJ);
    const m = coll.map('sdk_pinned', { key: u32, value: u32 });
    for (let i = 0; i < 4; i++) m.update(i, i);
    assert.throws(() => m.update(99, 1), /map sdk_pinned: update: E2BIG/);
  });

  test('batch update, lookup and delete', () => {
    using coll = loadCollection(OBJ);
    const m = coll.map('sdk_hash', { key: sdkKey, value: sdkValue });
    const entries = Array.from(
      { length: 5000 },
      (_, i) =>
        [
          { addr: `10.1.${i >> 8}.${i & 255}`, port: i, proto: 17, pad: 0 },
          { packets: BigInt(i), bytes: 0n, flags: i, name: `n${i}` },
        ] as const,
    );
    assert.equal(m.updateBatch(entries).count, 5000);
    const all = m.lookupBatch(1000);
    assert.equal(all.length, 5000);
    assert.equal(all.find(([k]) => k.port === 4321)?.[1].name, 'n4321');
    assert.equal(m.deleteBatch(entries.slice(0, 1000).map(([k]) => k)).count, 1000);
    assert.equal(m.count(), 4000);
  });

  test('LRU, array, per-CPU hash and array', () => {
    using coll = loadCollection(OBJ);
    const lru = coll.map('sdk_lru', { key: u32, value: u64 });
    for (let i = 0; i < 1000; i++) lru.update(i, BigInt(i));
    assert.ok(lru.count() <= 128, 'LRU evicts');
    assert.equal(lru.lookup(999), 999n, 'the newest stays');

    const arr = coll.map('sdk_array', { key: u32, value: u64 });
    assert.equal(arr.lookup(3), 0n);
    arr.update(3, 77n);
    assert.equal(arr.lookup(3), 77n);
    assert.throws(() => arr.update(16, 1n), /E2BIG|EINVAL/);

    const cpus = numPossibleCpus();
    const ph = coll.map('sdk_percpu_hash', { key: u32, value: u64 }, true);
    ph.update(
      1,
      Array.from({ length: cpus }, (_, i) => BigInt(i + 1)),
    );
    assert.equal(ph.lookup(1)?.length, cpus);
    assert.equal(ph.sum(1), BigInt((cpus * (cpus + 1)) / 2));
    const pa = coll.map('sdk_percpu_array', { key: u32, value: u32 }, true);
    pa.update(
      2,
      Array.from({ length: cpus }, () => 5),
    );
    assert.equal(pa.sum(2), 5 * cpus);
  });

  test('LPM trie: longest prefix wins', () => {
    using coll = loadCollection(OBJ);
    const lpm = coll.map('sdk_lpm', { key: lpmKey(ipv4), value: u32 });
    lpm.update({ prefixLen: 8, data: '10.0.0.0' }, 1);
    lpm.update({ prefixLen: 24, data: '10.1.2.0' }, 2);
    lpm.update({ prefixLen: 32, data: '10.1.2.3' }, 3);
    assert.equal(lpm.lookup({ prefixLen: 32, data: '10.9.9.9' }), 1);
    assert.equal(lpm.lookup({ prefixLen: 32, data: '10.1.2.200' }), 2);
    assert.equal(lpm.lookup({ prefixLen: 32, data: '10.1.2.3' }), 3);
    assert.equal(lpm.lookup({ prefixLen: 32, data: '192.168.0.1' }), undefined);
    assert.equal(lpm.count(), 3);
  });

  test('prog array: tail calls follow the map', () => {
    using coll = loadCollection(OBJ);
    const progs = coll.map('sdk_progs', { key: u32, value: u32 });
    const caller = coll.program('sdk_tail_caller');
    const pkt = new Uint8Array(64);
    assert.equal(caller.testRun({ data: pkt }).retval, 7);
    progs.update(0, coll.program('sdk_tail_target').fd);
    assert.equal(caller.testRun({ data: pkt }).retval, 42);
    assert.equal(progs.lookup(0), coll.program('sdk_tail_target').id, 'lookups return program ids');
  });

  test('array and hash of maps hold inner maps', async () => {
    await withoutFdLeak(() => {
      using coll = loadCollection(OBJ);
      using inner = createMap({ type: MapType.Array, name: 'hy_inner', key: u32, value: u32, maxEntries: 1 });
      inner.update(0, 4242);
      for (const name of ['sdk_array_of_maps', 'sdk_hash_of_maps']) {
        const outer = coll.map(name, { key: u32, value: u32 });
        outer.update(1, inner.fd);
        const id = outer.get(1);
        assert.equal(id, inner.id);
        using again = openMapById(id, { key: u32, value: u32 });
        assert.equal(again.lookup(0), 4242);
      }
    });
  });

  test('pinning: maps are pinned by name, reopened and reused across loads', async () => {
    const dir = `/sys/fs/bpf/hypha-test-${process.pid}`;
    try {
      await withoutFdLeak(() => {
        {
          using coll = loadCollection(OBJ, { pinPath: dir, pinMaps: ['sdk_hash'] });
          coll.map('sdk_pinned', { key: u32, value: u32 }).update(1, 11);
          coll
            .map('sdk_hash', { key: sdkKey, value: sdkValue })
            .update(
              { addr: '1.2.3.4', port: 1, proto: 6, pad: 0 },
              { packets: 9n, bytes: 0n, flags: 0, name: '' },
            );
        }
        assert.ok(existsSync(`${dir}/sdk_pinned`) && existsSync(`${dir}/sdk_hash`));
        {
          using pinned = openPinnedMap(`${dir}/sdk_pinned`, { key: u32, value: u32 });
          assert.equal(pinned.lookup(1), 11);
          assert.throws(
            () => openPinnedMap(`${dir}/sdk_pinned`, { key: u64, value: u32 }),
            /key codec is 8 bytes/,
          );
        }
        using again = loadCollection(OBJ, { pinPath: dir, pinMaps: ['sdk_hash'] });
        assert.equal(
          again.map('sdk_pinned', { key: u32, value: u32 }).lookup(1),
          11,
          'state survives a reload',
        );
        assert.equal(
          again
            .map('sdk_hash', { key: sdkKey, value: sdkValue })
            .lookup({ addr: '1.2.3.4', port: 1, proto: 6, pad: 0 })?.packets,
          9n,
        );
      });
      assert.throws(() => openPinnedMap(`${dir}/nope`, { key: u32, value: u32 }), /open pinned: ENOENT/);
    } finally {
      execFileSync('rm', ['-rf', dir]);
    }
  });

  test('a pin directory off bpffs is refused before anything loads', async () => {
    await withoutFdLeak(() => {
      assert.throws(
        () => loadCollection(OBJ, { pinPath: `/tmp/hy-not-bpffs-${process.pid}` }),
        (err: unknown) => err instanceof NotSupportedError && /is not on bpffs/.test(err.message),
      );
    });
    assert.equal(existsSync(`/tmp/hy-not-bpffs-${process.pid}`), false);
  });

  test('programs pin, reopen from the pin, and unpin', () => {
    const path = `/sys/fs/bpf/hypha-test-prog-${process.pid}`;
    try {
      {
        using coll = loadCollection(OBJ);
        coll.program('sdk_return_magic').pin(path);
      }
      using prog = openPinnedProgram(path);
      assert.equal(prog.name, 'sdk_return_magi', 'the kernel keeps 15 characters of a name');
      assert.equal(prog.typeName, 'sched_cls');
      assert.equal(prog.testRun({ data: new Uint8Array(64) }).retval, 0);
    } finally {
      unpin(path);
    }
    assert.equal(existsSync(path), false);
    assert.throws(() => openPinnedProgram(path), /open pinned: ENOENT/);
  });

  test('ring buffer: every record arrives, in order, in batches', async () => {
    using coll = loadCollection(OBJ);
    const ctl = coll.map('sdk_bench_ctl', { key: u32, value: u32 });
    using reader = new RingBufReader(coll.rawMap('sdk_events'), { batchBytes: 64 * 1024 });
    ctl.update(0, 10000);
    const ret = coll.program('sdk_emit').testRun({ data: new Uint8Array(64) });
    assert.equal(ret.retval, 10000);
    const seqs: number[] = [];
    const ac = new AbortController();
    for await (const batch of reader.batches(ac.signal)) {
      batch.forEach((d, off, len) => {
        assert.equal(len, 64);
        seqs.push(d.getUint32(off, true));
      });
      if (seqs.length >= 10000) ac.abort();
    }
    assert.equal(seqs.length, 10000);
    assert.ok(seqs.every((s, i) => s === i));
  });

  test('ring buffer: waiting does not block the event loop, and close wakes it', async () => {
    const coll = loadCollection(OBJ);
    const reader = new RingBufReader(coll.rawMap('sdk_events'));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const waited = reader.wait(300);
    await new Promise((r) => setTimeout(r, 150));
    reader.close();
    assert.equal(await waited, false);
    clearInterval(timer);
    assert.ok(ticks >= 5, `event loop ran ${ticks} times while waiting`);
    await new Promise((r) => setTimeout(r, 20));
    coll.close();
  });
});

describe('attachments', { skip }, () => {
  const ns = `hysdk${process.pid % 100000}`;
  before(() => {
    execFileSync('ip', ['netns', 'add', `${ns}a`]);
    execFileSync('ip', ['netns', 'add', `${ns}b`]);
    const ipa = (...a: string[]) => execFileSync('ip', ['-n', `${ns}a`, ...a]);
    const ipb = (...a: string[]) => execFileSync('ip', ['-n', `${ns}b`, ...a]);
    ipa('link', 'add', 'hya0', 'type', 'veth', 'peer', 'name', 'hyb0', 'netns', `${ns}b`);
    ipa('addr', 'add', '10.200.0.1/24', 'dev', 'hya0');
    ipb('addr', 'add', '10.200.0.2/24', 'dev', 'hyb0');
    ipa('link', 'set', 'hya0', 'up');
    ipb('link', 'set', 'hyb0', 'up');
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', `${ns}a`]);
    spawnSync('ip', ['netns', 'del', `${ns}b`]);
  });

  const nsb = `${ns}b`;

  test('tc: counts real packets, replaces in place, detaches cleanly', async () => {
    await withoutFdLeak(() => {
      using coll = loadCollection(OBJ);
      const counter = coll.map('sdk_array', { key: u32, value: u64 });
      const link = attachTc({
        netns: nsb,
        interface: 'hyb0',
        direction: 'ingress',
        program: coll.program('sdk_tc'),
      });
      try {
        ping(`${ns}a`, '10.200.0.2', 5);
        assert.ok((counter.lookup(0) ?? 0n) >= 5n);
        const byProto = coll.map('sdk_hash', { key: sdkKey, value: sdkValue });
        const icmp = byProto.lookup({ addr: '10.200.0.1', port: 0, proto: 1, pad: 0 });
        assert.ok((icmp?.packets ?? 0n) >= 5n, 'ICMP from the peer was counted');
        // Replace with a program that returns the magic verdict: still the same filter slot.
        link.update(coll.program('sdk_return_magic'));
        assert.equal(
          queryTc({ netns: nsb, interface: 'hyb0', direction: 'ingress' }),
          coll.program('sdk_return_magic').id,
        );
        assert.throws(
          () =>
            attachTc({
              netns: nsb,
              interface: 'hyb0',
              direction: 'ingress',
              program: coll.program('sdk_tc'),
            }),
          /EEXIST/,
        );
      } finally {
        link.close();
      }
      assert.equal(queryTc({ netns: nsb, interface: 'hyb0', direction: 'ingress' }), undefined);
      assert.doesNotMatch(
        execFileSync('tc', ['-n', nsb, 'qdisc', 'show', 'dev', 'hyb0']).toString(),
        /clsact/,
      );
    });
  });

  test('tc: replacing the program under traffic loses no packet', async () => {
    using coll = loadCollection(OBJ);
    using link = attachTc({
      netns: nsb,
      interface: 'hyb0',
      direction: 'ingress',
      program: coll.program('sdk_tc'),
    });
    const flood = spawn(
      'ip',
      ['netns', 'exec', `${ns}a`, 'ping', '-c', '300', '-i', '0.002', '-W', '1', '10.200.0.2'],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    let out = '';
    flood.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => flood.on('exit', r));
    const programs = [coll.program('sdk_return_magic'), coll.program('sdk_tc')];
    for (let i = 0; !flood.exitCode && i < 400; i++) {
      link.update(programs[i % 2]!);
      await new Promise((r) => setTimeout(r, 2));
    }
    await exited;
    assert.match(out, /300 packets transmitted, 300 received, 0% packet loss/);
  });

  test('tc: a wrong interface name fails and leaves nothing attached', () => {
    using coll = loadCollection(OBJ);
    assert.throws(
      () =>
        attachTc({ netns: nsb, interface: 'hynope0', direction: 'egress', program: coll.program('sdk_tc') }),
      /interface hynope0: ENODEV/,
    );
    assert.doesNotMatch(execFileSync('tc', ['-n', nsb, 'qdisc', 'show']).toString(), /clsact/);
  });

  test('xdp: attach, count, detach', () => {
    using coll = loadCollection(OBJ);
    const counter = coll.map('sdk_array', { key: u32, value: u64 });
    {
      using _xdp = attachXdp({ netns: nsb, interface: 'hyb0', program: coll.program('sdk_xdp') });
      assert.match(execFileSync('ip', ['-n', nsb, 'link', 'show', 'hyb0']).toString(), /xdp/);
      ping(`${ns}a`, '10.200.0.2', 3);
      assert.ok((counter.lookup(1) ?? 0n) >= 3n);
    }
    assert.doesNotMatch(execFileSync('ip', ['-n', nsb, 'link', 'show', 'hyb0']).toString(), /xdp/);
  });

  test('cgroup connect4: sees connects from processes in the cgroup only', async () => {
    const cg = `${cgroup2Root()}/hysdk-${process.pid}`;
    mkdirSync(cg);
    const server = createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      using coll = loadCollection(OBJ);
      const counter = coll.map('sdk_array', { key: u32, value: u64 });
      {
        using _link = attachCgroup({ cgroup: cg, program: coll.program('sdk_connect4') });
        const connect = `echo $$ > ${cg}/cgroup.procs && exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port}'`;
        await new Promise<void>((resolve, reject) => {
          spawn('sh', ['-c', connect], { stdio: 'ignore' }).on('exit', (c) =>
            c === 0 ? resolve() : reject(new Error(`exit ${c}`)),
          );
        });
        assert.equal(counter.lookup(2), 1n);
      }
    } finally {
      server.close();
      rmdirSync(cg);
    }
  });

  test('tracepoint', () => {
    using coll = loadCollection(OBJ);
    const counter = coll.map('sdk_array', { key: u32, value: u64 });
    {
      using _tp = attachTracepoint({
        category: 'syscalls',
        name: 'sys_enter_getppid',
        program: coll.program('sdk_tracepoint'),
      });
      void process.ppid; // getppid(2)
    }
    assert.ok((counter.lookup(3) ?? 0n) >= 1n, 'tracepoint fired');
    void process.ppid;
    const after = counter.lookup(3);
    void process.ppid;
    assert.equal(counter.lookup(3), after, 'detached on close');
    assert.throws(
      () =>
        attachTracepoint({ category: 'syscalls', name: 'hy_nope', program: coll.program('sdk_tracepoint') }),
      /tracepoint syscalls:hy_nope \(sdk_tracepoint\): ENOENT/,
    );
  });

  test('kprobe, or NotSupportedError where the kernel has no kprobes', () => {
    using coll = loadCollection(OBJ);
    const counter = coll.map('sdk_array', { key: u32, value: u64 });
    const attach = () => attachKprobe({ function: '__x64_sys_getppid', program: coll.program('sdk_kprobe') });
    if (!kprobesSupported()) {
      assert.throws(
        attach,
        (err: unknown) => err instanceof NotSupportedError && /CONFIG_KPROBE_EVENTS/.test(err.message),
      );
      return;
    }
    {
      using _kp = attach();
      void process.ppid;
    }
    assert.ok((counter.lookup(4) ?? 0n) >= 1n, 'kprobe fired');
    assert.throws(
      () => attachKprobe({ function: 'hy_no_such_function', program: coll.program('sdk_kprobe') }),
      /kprobe hy_no_such_function/,
    );
  });
});

function ping(fromNs: string, addr: string, count: number): void {
  execFileSync('ip', [
    'netns',
    'exec',
    fromNs,
    'ping',
    '-c',
    String(count),
    '-i',
    '0.05',
    '-W',
    '1',
    '-q',
    addr,
  ]);
}
