import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadCollection } from '../../src/bpf/index.js';
import { repoRoot, skipUnlessPrivileged, testObject } from '../helpers/kernel.js';

const hypha = (...args: string[]) => spawnSync(join(repoRoot, 'bin/hypha'), args, { encoding: 'utf8' });

describe('hypha bpf map list', { skip: skipUnlessPrivileged() }, () => {
  const node = `hytest${process.pid}`;
  const dir = `/sys/fs/bpf/hypha/${node}`;
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    spawnSync('rmdir', ['/sys/fs/bpf/hypha']);
  });

  test('shows entries, capacity and pressure of pinned maps', () => {
    {
      using coll = loadCollection(testObject('sdk_test'), {
        pinPath: dir,
        pinMaps: ['sdk_lru', 'sdk_events'],
      });
      const lru = coll.rawMap('sdk_lru');
      for (let i = 0; i < 32; i++) lru.update(new Uint8Array([i, 0, 0, 0]), new Uint8Array(8));
    }
    const r = hypha('bpf', 'map', 'list', '--node', node, '-o', 'json');
    assert.equal(r.status, 0, r.stderr);
    const maps = JSON.parse(r.stdout) as {
      name: string;
      type: string;
      entries: number;
      maxEntries: number;
      pressure: number;
    }[];
    const lru = maps.find((m) => m.name === 'sdk_lru');
    assert.deepEqual(
      lru && { type: lru.type, entries: lru.entries, max: lru.maxEntries, pressure: lru.pressure },
      {
        type: 'lru_hash',
        entries: 32,
        max: 128,
        pressure: 25,
      },
    );
    assert.equal(maps.find((m) => m.name === 'sdk_events')?.type, 'ringbuf');
    const table = hypha('bpf', 'map', 'list', '--node', node);
    assert.match(table.stdout, /sdk_lru\s+lru_hash\s+4\s+8\s+32\s+128\s+25%/);
  });

  test('an unknown node is a clear error', () => {
    const r = hypha('bpf', 'map', 'list', '--node', 'hy-no-such-node');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /hy-no-such-node/);
  });
});
