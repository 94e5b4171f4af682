/**
 * The proxy's transparent listeners: the agent's workers share their ports (SO_REUSEPORT);
 * a listener without it on a port in use is an error, so a by-hand `hypha proxy http`
 * never takes a share of the workers' connections. Loopback only, no traffic.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, describe, test } from 'node:test';
import { SocketOptionError, transparentListener } from '../../src/proxy/http/socket.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';

describe('transparent listeners', { skip: skipUnlessPrivileged() }, () => {
  const servers: Server[] = [];
  const listen = async (fd: number) => {
    const s = createServer();
    servers.push(s);
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen({ fd }, () => resolve());
    });
    return (s.address() as { port: number }).port;
  };
  after(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  test('workers share a port with SO_REUSEPORT; without it, a port in use is EADDRINUSE', async () => {
    const port = await listen(transparentListener('127.0.0.1', 0, true));
    assert.ok(port > 0);
    assert.equal(await listen(transparentListener('127.0.0.1', port, true)), port, 'a second worker joins');
    assert.throws(
      () => transparentListener('127.0.0.1', port),
      (e: unknown) =>
        e instanceof SocketOptionError && e.errno === 98 && /bind 127\.0\.0\.1:\d+/.test(e.message),
    );
    assert.throws(() => transparentListener('::1', port, true), TypeError);
  });
});
