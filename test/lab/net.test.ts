import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ValidationError } from '../../src/errors.js';
import { NetBatch, NetError, NetNs, NetScope, uniqueName } from '../../src/lab/net/index.js';
import { repoRoot } from '../helpers/kernel.js';
import { privilegedSuite } from '../helpers/privileged.js';

/** Which of `names` still show up in `ip netns list` or the root namespace's `ip link`. */
function leftovers(names: readonly string[]): string[] {
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  const present = new Set(
    [...netns.matchAll(/^(\S+)/gm), ...links.matchAll(/^\d+: ([^:@\s]+)/gm)].map((m) => m[1]),
  );
  return names.filter((n) => present.has(n));
}

async function ping(from: NetNs, to: string): Promise<void> {
  const r = await from.exec('ping', ['-c', '2', '-i', '0.2', '-W', '1', to]);
  assert.equal(r.code, 0, `ping ${to} from ${from} failed: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /2 received/);
}

describe('names and validation (no privileges needed)', () => {
  test('uniqueName gives distinct hy names that fit an interface name', () => {
    const names = Array.from({ length: 1000 }, () => uniqueName('ab'));
    assert.equal(new Set(names).size, names.length);
    for (const n of names) {
      assert.match(n, /^hyab[a-z0-9]+$/);
      assert.ok(n.length <= 15, n);
    }
  });

  test('uniqueName refuses prefixes that cannot fit or are not plain', () => {
    assert.throws(() => uniqueName('waytoolongprefix'), /too long: .* exceeds 15 characters/);
    assert.throws(() => uniqueName('A/b'), ValidationError);
  });

  test('bad names are refused before any command runs', async () => {
    const ns = NetNs.of('hyneverexists');
    await assert.rejects(ns.addVeth('bad/name', { peer: 'x' }), /link: name: "bad\/name" may contain only/);
    await assert.rejects(
      ns.addVeth('hy0123456789abcdef', { peer: 'x' }),
      /must be 1 to 15 characters \(IFNAMSIZ\), has 18/,
    );
    await assert.rejects(ns.addVeth('', { peer: 'x' }), ValidationError);
    assert.throws(() => NetNs.of('notours'), /netns: name: "notours" must start with "hy"/);
    await assert.rejects(NetNs.create('hy bad'), /may contain only/);
    await assert.rejects(ns.addAddress('eth0', '10.0.0.1'), /needs a prefix length/);
    await assert.rejects(ns.addAddress('eth0', '10.0.0.300/24'), /is not an IP address/);
    await assert.rejects(ns.addRoute({ to: 'default', via: 'nope' }), /"nope" is not an IP address/);
    await assert.rejects(ns.setLink('eth0', { mtu: 20 }), /not an MTU/);
  });

  test("the root namespace's own links, default route and sysctls are off limits", async () => {
    await assert.rejects(NetNs.root.setDown('eth0'), /not "hy"-prefixed; refusing/);
    await assert.rejects(NetNs.root.addVeth('hyok', { peer: 'veth9' }), /peer: "veth9" .* refusing/);
    await assert.rejects(NetNs.root.addRoute({ to: 'default', dev: 'hyx' }), /refusing a default route/);
    await assert.rejects(NetNs.root.addRoute({ to: '10.0.0.0/8', via: '10.0.0.1' }), /needs a hy dev/);
    await assert.rejects(
      NetNs.root.sysctl('net.ipv4.ip_forward', 1),
      /refusing to change a root-namespace sysctl/,
    );
    assert.throws(() => new NetBatch().sysctl(undefined, 'net.ipv4.ip_forward', 1), /only inside namespaces/);
  });
});

privilegedSuite('namespaces and links', () => {
  test('two namespaces joined by a veth reach each other over IPv4 and IPv6', async () => {
    await using net = new NetScope();
    const [a, b] = await net.namespaces(2);
    assert.ok(a && b);
    await a.addVeth('eth0', { peer: 'eth1', peerNs: b, mtu: 1400, mac: '02:00:00:00:00:0a' });
    await a.addAddress('eth0', '10.99.0.1/24');
    await a.addAddress('eth0', '2001:db8:99::1/64');
    await b.addAddress('eth1', '10.99.0.2/24');
    await b.addAddress('eth1', '2001:db8:99::2/64');
    await a.setUp('eth0');
    await b.setUp('eth1');

    await ping(a, '10.99.0.2');
    await ping(b, '2001:db8:99::1');

    const link = await a.link('eth0');
    assert.equal(link?.kind, 'veth');
    assert.equal(link?.mtu, 1400);
    assert.equal(link?.mac, '02:00:00:00:00:0a');
    assert.equal(link?.up, true);
    assert.equal(link?.peerIfindex, await b.ifindex('eth1'));
    assert.equal(await a.link('nothere'), undefined);
    await assert.rejects(a.ifindex('nothere'), /no link nothere in hy/);
    const addrs = (await a.addresses('eth0')).map((x) => `${x.address}/${x.prefixlen}`);
    assert.ok(addrs.includes('10.99.0.1/24') && addrs.includes('2001:db8:99::1/64'), addrs.join());
    assert.deepEqual(await NetNs.list(a.name), [a.name]);
    assert.equal(await NetNs.exists(a.name ?? ''), true);
  });

  test('a third namespace routes between two subnets', async () => {
    await using net = new NetScope();
    const [a, r, b] = await net.namespaces(3);
    assert.ok(a && r && b);
    await r.addVeth('ra', { peer: 'eth0', peerNs: a });
    await r.addVeth('rb', { peer: 'eth0', peerNs: b });
    const batch = net.batch();
    batch
      .addAddress(r, 'ra', '10.98.1.1/24')
      .addAddress(r, 'rb', '10.98.2.1/24')
      .setUp(r, 'ra')
      .setUp(r, 'rb')
      .sysctl(r, 'net.ipv4.ip_forward', 1)
      .sysctl(r, 'net.ipv4.conf.all.rp_filter', 0);
    for (const [ns, ip] of [
      [a, '10.98.1.2/24'],
      [b, '10.98.2.2/24'],
    ] as const) {
      batch.addAddress(ns, 'eth0', ip).setUp(ns, 'eth0');
    }
    await batch.run();
    assert.equal(await r.readSysctl('net.ipv4.ip_forward'), '1');

    // Without routes the other subnet is unreachable: the assertion below can fail.
    assert.notEqual((await a.exec('ping', ['-c', '1', '-W', '1', '10.98.2.2'])).code, 0);

    await a.addRoute({ to: 'default', via: '10.98.1.1' });
    // onlink: a gateway outside any connected subnet, as a lab pod's route to its host.
    await b.addRoute({ to: '10.98.1.0/24', via: '10.98.2.1', dev: 'eth0', onlink: true });
    await ping(a, '10.98.2.2');
    const tr = await a.exec('ping', ['-c', '1', '-t', '1', '10.98.2.2']);
    assert.notEqual(tr.code, 0, 'TTL 1 must die at the router');

    const routes = await b.routes();
    const r1 = routes.find((x) => x.dst === '10.98.1.0/24');
    assert.equal(r1?.via, '10.98.2.1');
    assert.ok(r1?.flags.includes('onlink'));
    assert.equal((await a.routes()).find((x) => x.dst === 'default')?.via, '10.98.1.1');
  });

  test('links move between namespaces, bridges enslave them, exec reports exit codes', async () => {
    await using net = new NetScope();
    const [a, b] = await net.namespaces(2);
    assert.ok(a && b);
    await a.addVeth('x0', { peer: 'x1' });
    await a.moveLink('x1', b, 'eth0');
    assert.equal(await a.link('x1'), undefined);
    assert.equal((await b.link('eth0'))?.kind, 'veth');
    await a.addBridge('br0');
    await a.setLink('x0', { master: 'br0', up: true });
    assert.equal((await a.link('x0'))?.master, 'br0');
    await a.setLink('x0', { master: null });
    assert.equal((await a.link('x0'))?.master, undefined);

    const ok = await a.exec('sh', ['-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual(
      { code: ok.code, stdout: ok.stdout, stderr: ok.stderr },
      { code: 3, stdout: 'out\n', stderr: 'err\n' },
    );
    await assert.rejects(a.exec('false', [], { check: true }), NetError);
  });

  test('duplicates and missing objects give errors naming the command and its stderr', async () => {
    await using net = new NetScope();
    const a = await net.netns();
    const name = a.name ?? '';
    const dup = await NetNs.create(name).then(
      () => assert.fail('duplicate namespace created'),
      (e: unknown) => e,
    );
    assert.ok(dup instanceof NetError);
    assert.match(
      dup.message,
      new RegExp(`create netns ${name}: \`ip netns add ${name}\` exited with 1: .*File exists`),
    );
    assert.deepEqual(dup.command, ['ip', 'netns', 'add', name]);

    await a.addVeth('v0', { peer: 'v1' });
    await assert.rejects(a.addVeth('v0', { peer: 'v2' }), /create veth v0 .*File exists/);
    await assert.rejects(
      a.addAddress('nodev', '10.97.0.1/24'),
      /add address 10.97.0.1\/24 on nodev .*Cannot find device/,
    );
    await assert.rejects(NetNs.delete(uniqueName('zz')), /no such namespace/);

    const batch = net.batch().setUp(a, 'v0').addAddress(a, 'nodev', '10.97.0.1/24').setUp(a, 'v1');
    const err = await batch.run().then(
      () => assert.fail('batch succeeded'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NetError);
    assert.equal(err.line, 2);
    assert.match(err.message, /line 2 "addr add 10.97.0.1\/24 dev nodev"/);
  });

  test('disposing removes namespaces, root-side veth peers and processes; nothing is left', async () => {
    const net = new NetScope();
    const ns = await net.netns();
    const host = uniqueName('h');
    const stray = uniqueName('s');
    await net.root.addVeth(host, { peer: 'eth0', peerNs: ns });
    // Made behind the scope's back: found through its peer's namespace.
    await ns.ip(
      'link',
      'add',
      'eth9',
      'type',
      'veth',
      'peer',
      'name',
      stray,
      'netns',
      `/proc/${process.pid}/ns/net`,
    );
    const server = ns.spawn('sleep', ['600']);
    await once(server, 'spawn');
    const names = [ns.name ?? '', host, stray];
    assert.deepEqual(leftovers(names), names);
    await net.dispose();
    assert.notEqual(server.exitCode ?? server.signalCode, null);
    assert.deepEqual(leftovers(names), []);
    await assert.rejects(net.netns(), /already disposed/);
  });

  test('a failing test body still cleans up', async () => {
    const names: string[] = [];
    await assert.rejects(async () => {
      await using net = new NetScope();
      const ns = await net.netns();
      const host = net.name('h');
      await net.root.addVeth(host, { peer: 'eth0', peerNs: ns });
      names.push(ns.name ?? '', host);
      assert.deepEqual(leftovers(names), names);
      throw new Error('test body failed');
    }, /test body failed/);
    assert.equal(names.length, 2);
    assert.deepEqual(leftovers(names), []);
  });

  for (const ending of ['SIGTERM', 'exit'] as const) {
    test(`a process that ends by ${ending} without disposing still cleans up`, async () => {
      const lib = join(repoRoot, 'dist/src/lab/net/index.js');
      const script = `
        import { NetScope } from ${JSON.stringify(lib)};
        const net = new NetScope();
        const ns = await net.netns();
        const host = net.name('h');
        await net.root.addVeth(host, { peer: 'eth0', peerNs: ns });
        console.log(JSON.stringify([ns.name, host]));
        ${ending === 'exit' ? 'process.exit(0);' : 'setInterval(() => {}, 1000);'}`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const names = JSON.parse(line.toString()) as string[];
      assert.equal(names.length, 2);
      if (ending === 'SIGTERM') {
        assert.deepEqual(leftovers(names), names);
        child.kill('SIGTERM');
      }
      const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
      assert.equal(ending === 'exit' ? code : signal, ending === 'exit' ? 0 : 'SIGTERM');
      assert.deepEqual(leftovers(names), []);
    });
  }

  test('a batch makes 100 namespaces, each with a veth to the root and an address', async () => {
    await using net = new NetScope();
    const batch = net.batch();
    const pods = Array.from({ length: 100 }, (_, i) => ({
      ns: uniqueName('p'),
      host: uniqueName('h'),
      ip: `10.96.${i}.2/24`,
    }));
    for (const p of pods) batch.addNetns(p.ns);
    for (const p of pods) {
      batch
        .addVeth({ name: p.host, peer: 'eth0', peerNs: p.ns })
        .setUp(undefined, p.host)
        .addAddress(p.ns, 'eth0', p.ip)
        .setUp(p.ns, 'eth0');
    }
    await batch.run();
    const last = pods[99];
    assert.ok(last);
    assert.deepEqual(
      (await NetNs.of(last.ns).addresses('eth0'))
        .filter((a) => a.family === 4)
        .map((a) => `${a.address}/${a.prefixlen}`),
      [last.ip],
    );
    assert.equal(
      (await NetNs.list(pods[0]?.ns.slice(0, 3))).filter((n) => pods.some((p) => p.ns === n)).length,
      100,
    );
    await net.dispose();
    assert.deepEqual(leftovers(pods.flatMap((p) => [p.ns, p.host])), []);
  });
});
