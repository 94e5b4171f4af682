/**
 * The dependency rules of DESIGN §6: a file belongs where its dependencies point.
 * Checked on the sources, so a violation fails CI.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from './helpers/kernel.js';

/** folder -> folders it must not import. */
const FORBIDDEN: Record<string, string[]> = {
  'src/policy': ['src/agent', 'src/datapath', 'src/lab', 'src/hubble', 'src/cni', 'src/proxy', 'src/bpf'],
  'src/identity': ['src/agent', 'src/datapath', 'src/lab', 'src/bpf'],
  'src/k8s': ['src/agent', 'src/datapath', 'src/cni'],
  'src/datapath': ['src/agent', 'src/lab', 'src/cni'],
  'src/bpf': ['src/agent', 'src/datapath', 'src/policy', 'src/lab', 'src/cni', 'src/hubble'],
  'src/hubble': ['src/agent'],
};

function* sources(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (e.name.endsWith('.ts')) yield p;
  }
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'";]*?from\s*['"]([^'"]+)['"]/g))
    out.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  return out.filter((s) => s.startsWith('.')).map((s) => relative(repoRoot, resolve(dirname(file), s)));
}

test('no module imports the CLI, and layers import only downwards', () => {
  const violations: string[] = [];
  for (const file of sources(join(repoRoot, 'src'))) {
    const rel = relative(repoRoot, file);
    for (const target of importsOf(file)) {
      if (target.startsWith('src/cli') && !rel.startsWith('src/cli'))
        violations.push(`${rel} imports ${target}`);
      for (const [from, banned] of Object.entries(FORBIDDEN)) {
        if (!rel.startsWith(`${from}/`)) continue;
        for (const b of banned) if (target.startsWith(`${b}/`)) violations.push(`${rel} imports ${target}`);
      }
    }
  }
  assert.deepEqual(violations, []);
});

test('the checker sees imports (it would catch a violation)', () => {
  const sample = join(repoRoot, 'src/cli/main.ts');
  assert.ok(importsOf(sample).some((t) => t === 'src/cli/commands/index.js'));
});
