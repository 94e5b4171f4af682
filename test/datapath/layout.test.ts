import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { NATIVE_HTTP_PROXY } from '../../src/agent/l7.js';
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

test("the native HTTP proxy's copies of the conntrack and ipcache structs match the BTF of lxc.o", () => {
  const run = spawnSync(NATIVE_HTTP_PROXY, ['--layouts'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const native = JSON.parse(run.stdout) as Record<
    string,
    { size: number; fields: [string, number, number][] }
  >;
  using btf = Btf.fromFile(join(repoRoot, 'dist/bpf/lxc.o'));
  const problems: string[] = [];
  for (const [name, layout] of Object.entries(native)) {
    const c = btf.struct(name);
    if (c.size !== layout.size) problems.push(`${name}: size ${c.size} in C, ${layout.size} in the proxy`);
    const seen = new Set<string>();
    for (const [field, offset, size] of layout.fields) {
      seen.add(field);
      const m = c.members.find((x) => x.name === field);
      if (!m) problems.push(`${name}.${field}: not in C`);
      else if (m.offset !== offset || m.size !== size)
        problems.push(`${name}.${field}: ${m.offset}+${m.size} in C, ${offset}+${size} in the proxy`);
    }
    for (const m of c.members) if (!seen.has(m.name)) problems.push(`${name}.${m.name}: not in the proxy`);
  }
  assert.deepEqual(problems, []);
  assert.deepEqual(Object.keys(native).sort(), ['ct_entry', 'ct_key4', 'ipcache_info', 'ipcache_key4']);
});
