import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ensureCa, ensureServerCert } from '../../src/lab/pki.js';
import { type RunningWorld, startWorld } from '../../src/lab/world/server.js';

describe('lab world servers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hy-pki-'));
  const hosts = [
    { name: 'api.external-partner.com', ip: '127.0.0.2' },
    { name: 'ifconfig.me', ip: '127.0.0.3' },
  ];
  const httpPort = 20000 + (process.pid % 20000);
  const httpsPort = httpPort + 1;
  let world: RunningWorld;
  let caPath: string;

  before(async () => {
    const ca = ensureCa(dir);
    caPath = ca.certPath;
    const tls = ensureServerCert(
      dir,
      ca,
      'world',
      hosts.map((h) => h.name),
    );
    world = await startWorld({ hosts, tls, httpPort, httpsPort });
  });
  after(async () => {
    await world?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Asynchronous: the servers answer from this very process.
  const curl = (host: string, ip: string, port: number, scheme: string, ...extra: string[]) =>
    run('curl', [
      '-sS',
      '--max-time',
      '3',
      '--cacert',
      caPath,
      '--resolve',
      `${host}:${port}:${ip}`,
      ...extra,
      `${scheme}://${host}:${port}/x/y`,
    ]);

  test('HTTPS with a certificate the lab CA vouches for', async () => {
    const r = await curl('api.external-partner.com', '127.0.0.2', httpsPort, 'https');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      host: 'api.external-partner.com',
      method: 'GET',
      path: '/x/y',
      client: '127.0.0.1',
    });
  });

  test('ifconfig.me answers with the caller address', async () => {
    const r = await curl('ifconfig.me', '127.0.0.3', httpsPort, 'https', '--interface', '127.0.0.9');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '127.0.0.9\n');
    const plain = await curl('ifconfig.me', '127.0.0.3', httpPort, 'http');
    assert.equal(plain.stdout, '127.0.0.1\n');
  });

  test('a client without the lab CA refuses the certificate', async () => {
    const r = await run('curl', [
      '-sS',
      '--max-time',
      '3',
      '--resolve',
      `api.external-partner.com:${httpsPort}:127.0.0.2`,
      `https://api.external-partner.com:${httpsPort}/`,
    ]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /certificate/i);
  });

  test('the CA is made once and reused', () => {
    const first = execFileSync('openssl', [
      'x509',
      '-in',
      join(dir, 'ca.crt'),
      '-noout',
      '-fingerprint',
    ]).toString();
    ensureCa(dir);
    const again = execFileSync('openssl', [
      'x509',
      '-in',
      join(dir, 'ca.crt'),
      '-noout',
      '-fingerprint',
    ]).toString();
    assert.equal(again, first);
  });
});

function run(cmd: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number) : 0;
      resolve({ status: typeof code === 'number' ? code : 1, stdout, stderr });
    });
  });
}
