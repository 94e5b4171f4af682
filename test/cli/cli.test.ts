import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../helpers/kernel.js';

const hypha = (...args: string[]) => spawnSync(join(repoRoot, 'bin/hypha'), args, { encoding: 'utf8' });

test('hypha --help lists the commands', () => {
  const r = hypha('--help');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /Usage: hypha <command>/);
  assert.match(r.stdout, /demo packet-counter/);
});

test('runs on the pinned Node.js 24, not the machine node', () => {
  const r = spawnSync(join(repoRoot, 'node_modules/.bin/node'), ['--version'], { encoding: 'utf8' });
  assert.match(r.stdout, /^v24\./);
});

test('an unknown command exits 2 and says so', () => {
  const r = hypha('frobnicate');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});

test('a bad flag names the flag and shows the command help', () => {
  const r = hypha('demo', 'packet-counter', '--bogus');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /Unknown option '--bogus'/);
  assert.match(r.stderr, /Usage: hypha demo packet-counter/);
});

test('a bad flag value is refused before anything runs', () => {
  const r = hypha('demo', 'packet-counter', '--pings', 'lots');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--pings: must be a whole number from 1 to 10000, got "lots"/);
});

test('a group without a subcommand lists its subcommands', () => {
  const r = hypha('demo');
  assert.equal(r.status, 2);
  assert.match(r.stdout, /demo packet-counter/);
});

test('hypha agent refuses a config file with unknown keys or wrong types, naming the key', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'hy-agentconf-'));
  try {
    writeFileSync(join(dir, 'a.yaml'), 'node: n1\npodCidr: 10.0.0.0/24\n');
    const r = hypha('agent', '--config', join(dir, 'a.yaml'));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /podCidr: unknown key/);
    writeFileSync(join(dir, 'b.yaml'), 'node: n1\nmanifests: /one/path\n');
    assert.match(
      hypha('agent', '--config', join(dir, 'b.yaml')).stderr,
      /manifests: must be a list of paths/,
    );
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('hypha agent checks its Hubble TLS flags before it starts anything', () => {
  const half = hypha(
    'agent',
    '--node',
    'hytls',
    '--pod-cidr',
    '10.250.0.0/24',
    '--hubble-tls-cert-file',
    '/x.pem',
  );
  assert.equal(half.status, 2);
  assert.match(half.stderr, /--hubble-tls-cert-file and --hubble-tls-key-file: both are needed/);
  const missing = hypha(
    'agent',
    '--node',
    'hytls',
    '--pod-cidr',
    '10.250.0.0/24',
    '--hubble-tls-cert-file',
    '/nonexistent/cert.pem',
    '--hubble-tls-key-file',
    '/nonexistent/key.pem',
  );
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /--hubble-tls-cert-file: .*no such file/i);
});

test('hypha agent checks --http-proxy-workers and --http-proxy-engine before it starts anything', () => {
  const agent = (...flags: string[]) =>
    hypha('agent', '--node', 'hyworkers', '--pod-cidr', '10.250.0.0/24', ...flags);
  for (const bad of ['0', '65', '1.5', 'all']) {
    const r = agent('--http-proxy-workers', bad);
    assert.equal(r.status, 2, bad);
    assert.match(r.stderr, /--http-proxy-workers: ".*" is not a whole number (from 1 )?(up )?to 64/, bad);
  }
  const r = agent('--http-proxy-engine', 'envoy');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--http-proxy-engine: "envoy" is not native or node/);
});
