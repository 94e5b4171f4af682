import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The repository root (this test runs from dist/test/proxy). */
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const H1_TEST = join(repoRoot, 'dist/test/native/h1_test');

test('native HTTP/1.x parser passes its C unit tests', () => {
  const run = spawnSync(H1_TEST, [], { encoding: 'utf8', timeout: 60_000 });
  assert.ifError(run.error);
  // On failure, show the FAIL lines: they name the check that broke.
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
  assert.match(run.stdout, /h1_test: \d+ checks, 0 failed/);
});
