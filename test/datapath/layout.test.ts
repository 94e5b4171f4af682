import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Btf, layoutDifferences, type StructCodec } from '../../src/bpf/index.js';
import { LAYOUTS } from '../../src/datapath/index.js';
import { repoRoot } from '../helpers/kernel.js';

test('every datapath codec matches its C struct in the BTF of lxc.o', () => {
  using btf = Btf.fromFile(join(repoRoot, 'dist/bpf/lxc.o'));
  const problems: string[] = [];
  for (const [name, codec] of Object.entries(LAYOUTS)) {
    problems.push(...layoutDifferences(btf, name, codec as StructCodec<unknown>));
  }
  assert.deepEqual(problems, []);
  assert.ok(Object.keys(LAYOUTS).length >= 12);
});
