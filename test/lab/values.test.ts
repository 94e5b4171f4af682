/** Install values as the tutorial gives them to Helm: every key accounted for, none ignored. */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { UsageError } from '../../src/errors.js';
import { loadValues, reviewValues } from '../../src/lab/values.js';
import { repoRoot } from '../helpers/kernel.js';

test("the tutorial's values file loads unchanged and every key gets a verdict", () => {
  const v = loadValues([join(repoRoot, 'examples/cilium-values.yaml')], []);
  const review = new Map(reviewValues(v).map((r) => [r.key, r.state]));
  assert.equal(review.get('ipam.mode'), 'applied');
  assert.equal(review.get('k8sServiceHost'), 'not-applicable');
  assert.equal(review.get('operator.replicas'), 'not-applicable');
  assert.equal(review.get('bgpControlPlane.enabled'), 'applied');
  assert.equal(review.get('hubble.metrics.enabled'), 'applied');
  assert.equal(review.get('hubble.ui.enabled'), 'applied');
  assert.equal(review.get('encryption.type'), 'not-supported');
  assert.equal(reviewValues(v).length, 13, 'every leaf key is reported');
});

test('--set overrides files, with Helm scalars and lists; unknown keys are reported', () => {
  const v = loadValues(
    [],
    ['hubble.enabled=false', 'k8sServicePort=6443', 'hubble.metrics.enabled={dns,drop}', 'no.such=x'],
  );
  assert.deepEqual(v, {
    hubble: { enabled: false, metrics: { enabled: ['dns', 'drop'] } },
    k8sServicePort: 6443,
    no: { such: 'x' },
  });
  const review = reviewValues(v);
  assert.deepEqual(
    review.find((r) => r.key === 'hubble.enabled'),
    { key: 'hubble.enabled', state: 'applied', note: 'off' },
  );
  assert.equal(review.find((r) => r.key === 'no.such')?.state, 'not-supported');
});

test('bad values are usage errors naming the file or flag', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hy-values-'));
  writeFileSync(join(dir, 'list.yaml'), '- a\n- b\n');
  writeFileSync(join(dir, 'bad.yaml'), 'a: [\n');
  assert.throws(
    () => loadValues([join(dir, 'list.yaml')], []),
    (e: unknown) => e instanceof UsageError && /a values file is a mapping/.test(e.message),
  );
  assert.throws(
    () => loadValues([join(dir, 'bad.yaml')], []),
    (e: unknown) => e instanceof UsageError && /bad\.yaml/.test(e.message),
  );
  assert.throws(
    () => loadValues([], ['novalue']),
    (e: unknown) => e instanceof UsageError && /--set novalue: expected key=value/.test(e.message),
  );
});

test("the proxies' values: checked before anything starts, then applied", () => {
  const ok = reviewValues(
    loadValues([], ['httpProxy.workers=3', 'dnsProxy.minTtl=30', 'httpProxy.engine=node']),
  );
  assert.equal(ok.find((r) => r.key === 'httpProxy.workers')?.state, 'applied');
  assert.equal(ok.find((r) => r.key === 'httpProxy.engine')?.state, 'applied');
  assert.throws(
    () => reviewValues(loadValues([], ['httpProxy.engine=envoy'])),
    (e: unknown) =>
      e instanceof UsageError && /^httpProxy\.engine: envoy is not native or node/.test(e.message),
  );
  assert.equal(ok.find((r) => r.key === 'dnsProxy.minTtl')?.state, 'applied');
  for (const bad of ['httpProxy.workers=0', 'httpProxy.workers=65', 'httpProxy.workers=two'])
    assert.throws(
      () => reviewValues(loadValues([], [bad])),
      (e: unknown) =>
        e instanceof UsageError &&
        /^httpProxy\.workers: .* is not a whole number from 1 to 64/.test(e.message),
      bad,
    );
  assert.throws(
    () => reviewValues(loadValues([], ['dnsProxy.minTtl=-1'])),
    (e: unknown) =>
      e instanceof UsageError && /^dnsProxy\.minTtl: -1 is not a whole number of seconds/.test(e.message),
  );
});
