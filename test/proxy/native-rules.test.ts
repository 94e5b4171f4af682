import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The repository root (this test runs from dist/test/proxy). */
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const RULES_TEST = join(repoRoot, 'dist/test/native/rules_test');

test('native redirect table and HTTP rule matcher pass their C unit tests', () => {
  const run = spawnSync(RULES_TEST, [], { encoding: 'utf8', timeout: 60_000 });
  assert.ifError(run.error);
  // On failure, show the FAIL lines: they name the check that broke.
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
  assert.match(run.stdout, /rules_test: \d+ checks, 0 failed/);
});
