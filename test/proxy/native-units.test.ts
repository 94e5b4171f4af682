/**
 * The native HTTP proxy's C unit tests (test/proxy/native/*.c, built by make): the strict
 * HTTP/1.x parser and the redirect table with its PCRE2 rule matcher.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../helpers/kernel.js';

for (const [name, what] of [
  ['h1_test', 'HTTP/1.x parser'],
  ['rules_test', 'redirect table and HTTP rule matcher'],
] as const) {
  test(`native ${what} passes its C unit tests`, () => {
    const run = spawnSync(join(repoRoot, 'dist/test/native', name), [], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.ifError(run.error);
    // On failure, show the FAIL lines: they name the check that broke.
    assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
    assert.match(run.stdout, new RegExp(`${name}: \\d+ checks, 0 failed`));
  });
}
