/**
 * The socket load balancer: codecs against the BTF of sock.o, the maglev table, and real
 * sockets in a cgroup of their own connecting to services in a namespace of their own.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Btf, cgroup2Root, layoutDifferences, type StructCodec } from '../../src/bpf/index.js';
import {
  type BackendSpec,
  DROP_NO_SERVICE,
  decodeEvents,
  EventType,
  type Frontend,
  LB_LAYOUTS,
  maglevTable,
  ServiceMaps,
  type ServiceSpec,
  validateServiceSpec,
} from '../../src/datapath/index.js';
import { ValidationError } from '../../src/errors.js';
import { NETNS_RUN_DIR, type NetNs, NetScope, uniqueName } from '../../src/lab/net/index.js';
import { repoRoot, skipUnlessPrivileged, withoutFdLeak } from '../helpers/kernel.js';
import { CLIENT_SCRIPT, LbClient, NODE, served, startServers } from '../helpers/lb.js';

test('every load balancer codec matches its C struct in the BTF of sock.o', () => {
  using btf = Btf.fromFile(join(repoRoot, 'dist/bpf/sock.o'));
  const problems: string[] = [];
  for (const [name, codec] of Object.entries(LB_LAYOUTS))
    problems.push(...layoutDifferences(btf, name, codec as StructCodec<unknown>));
  assert.deepEqual(problems, []);
  assert.equal(Object.keys(LB_LAYOUTS).length, 10);
});

test('a maglev table is balanced, independent of order, and moves little when a backend goes', () => {
  const size = 251;
  const backends = [1, 2, 3, 4, 5].map((id) => ({ id, name: `10.0.0.${id}:80` }));
  const t = maglevTable(backends, size);
  const counts = new Map<number, number>();
  for (const id of t) counts.set(id, (counts.get(id) ?? 0) + 1);
  assert.deepEqual([...counts.keys()].sort(), [1, 2, 3, 4, 5]);
  for (const n of counts.values()) assert.ok(n >= 50 && n <= 51, `share ${n} of ${size}`);
  assert.deepEqual(maglevTable([...backends].reverse(), size), t);
  const without3 = maglevTable(
    backends.filter((b) => b.id !== 3),
    size,
  );
  let moved = 0;
  for (let i = 0; i < size; i++) if (t[i] !== 3 && t[i] !== without3[i]) moved++;
  // Only backend 3's entries must move; Maglev's guarantee is "few" of the others.
  assert.ok(moved < size * 0.15, `${moved} entries of surviving backends moved`);
  assert.ok(!without3.includes(3));
});

test('service specs are validated with the field at fault', () => {
  const ok: ServiceSpec = {
    frontend: { ip: '10.96.0.1', port: 80, protocol: 'TCP' },
    type: 'ClusterIP',
    backends: [{ ip: '10.0.0.1', port: 8080 }],
  };
  validateServiceSpec(ok);
  const fieldOf = (s: ServiceSpec) => {
    try {
      validateServiceSpec(s);
      return undefined;
    } catch (err) {
      assert.ok(err instanceof ValidationError);
      return err.field;
    }
  };
  assert.equal(fieldOf({ ...ok, frontend: { ...ok.frontend, ip: '10.96.0.256' } }), 'frontend.ip');
  assert.equal(fieldOf({ ...ok, frontend: { ...ok.frontend, port: 0 } }), 'frontend.port');
  assert.equal(fieldOf({ ...ok, backends: [...ok.backends, { ip: '10.0.0.1', port: 8080 }] }), 'backends[1]');
  assert.equal(fieldOf({ ...ok, affinityTimeoutSec: 86401 }), 'affinityTimeoutSec');
});

const SVC = '10.96.0.50';
const B = { b1: '10.200.0.1', b2: '10.200.0.2', b3: '10.200.0.3' } as const;
const TCP80: Frontend = { ip: SVC, port: 80, protocol: 'TCP' };
const UDP53: Frontend = { ip: SVC, port: 53, protocol: 'UDP' };
const tcpBackends = (states: Partial<Record<keyof typeof B, BackendSpec['state'] | 'absent'>> = {}) =>
  (Object.keys(B) as (keyof typeof B)[])
    .filter((n) => states[n] !== 'absent')
    .map((n) => ({ ip: B[n], port: 8080, state: (states[n] ?? 'active') as BackendSpec['state'] }));

describe('socket load balancing on real sockets', { skip: skipUnlessPrivileged() }, () => {
  const net = new NetScope();
  const pinDir = `/sys/fs/bpf/hypha/${uniqueName('lbt')}`;
  const cgroup = `${cgroup2Root()}/${uniqueName('lbc')}`;
  let ns: NetNs;
  let sm: ServiceMaps;
  let client: LbClient;
  let reader: ReturnType<ServiceMaps['eventReader']>;

  before(async () => {
    ns = await net.netns({ prefix: 'lb' });
    for (const ip of Object.values(B)) await ns.addAddress('lo', `${ip}/32`);
    await startServers(ns, Object.entries(B));
    mkdirSync(cgroup);
    sm = ServiceMaps.open({ pinDir });
    sm.attach(cgroup);
    reader = sm.eventReader();
    // nsenter, not `ip netns exec`: that one remounts /sys, and the cgroup tree with it.
    const child = spawn(
      'nsenter',
      [
        `--net=${NETNS_RUN_DIR}/${ns.name}`,
        'sh',
        '-c',
        'echo $$ > "$HY_CGROUP/cgroup.procs" && exec "$HY_NODE" -e "$HY_CLIENT"',
      ],
      {
        env: { ...process.env, HY_CGROUP: cgroup, HY_NODE: NODE, HY_CLIENT: CLIENT_SCRIPT },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    net.adopt(child);
    client = await LbClient.start(child);
  });

  after(async () => {
    reader?.close();
    client?.child.kill('SIGKILL');
    try {
      sm?.destroy();
    } finally {
      await net.dispose();
      rmSync(pinDir, { recursive: true, force: true });
      for (let i = 0; i < 50 && existsSync(cgroup); i++) {
        try {
          rmdirSync(cgroup);
        } catch {
          await new Promise((r) => setTimeout(r, 50)); // the killed client is leaving it
        }
      }
    }
  });

  const ask = (req: Record<string, unknown>) => client.ask(req);
  const tcp = (n = 1, extra: Record<string, unknown> = {}) =>
    ask({ op: 'tcp', host: SVC, port: 80, n, ...extra });
  const udp = (extra: Record<string, unknown> = {}) =>
    ask({ op: 'udp', host: SVC, port: 53, n: 1, ...extra });
  const drops = () => decodeEvents(reader.drain()).filter((e) => e.type === EventType.Drop);

  test('the cgroup has the four programs attached', () => {
    const r = spawnSync('bpftool', ['-j', 'cgroup', 'show', cgroup], { encoding: 'utf8' });
    if (r.error) return; // no bpftool: the traffic below shows the hooks work
    const attached = JSON.parse(r.stdout) as { attach_type: string; name: string }[];
    assert.deepEqual(attached.map((a) => a.attach_type).sort(), [
      'cgroup_inet4_connect',
      'cgroup_inet4_getpeername',
      'cgroup_udp4_recvmsg',
      'cgroup_udp4_sendmsg',
    ]);
  });

  test('TCP to the service reaches a backend, and getpeername shows the service', async () => {
    const ids = sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    assert.ok(ids.revNatIndex > 0);
    assert.equal(new Set(ids.backendIds).size, 3);
    const [r] = await tcp();
    assert.ok(r?.data && r.data in B, `served by ${r?.data ?? r?.error}`);
    assert.equal(r.peer, `${SVC}:80`);
  });

  test('random selection spreads connections over every backend', async () => {
    const seen = new Set(served(await tcp(60)));
    assert.deepEqual([...seen].sort(), ['b1', 'b2', 'b3']);
  });

  test('UDP, unconnected and connected: replies come from the service address', async () => {
    sm.upsertService({
      frontend: UDP53,
      type: 'ClusterIP',
      backends: Object.values(B).map((ip) => ({ ip, port: 5353 })),
    });
    const [plain] = await udp();
    assert.ok(plain?.data && plain.data in B, `served by ${plain?.data ?? plain?.error}`);
    assert.equal(plain.from, `${SVC}:53`, 'recvmsg shows the service as the source');
    const [connected] = await udp({ connected: true });
    assert.ok(connected?.data && connected.data in B);
    assert.equal(connected.from, `${SVC}:53`);
    assert.equal(connected.peer, `${SVC}:53`, 'getpeername shows the service');
  });

  test('maglev sends the same client tuple to the same backend every time', async () => {
    sm.upsertService({
      frontend: UDP53,
      type: 'ClusterIP',
      algorithm: 'maglev',
      backends: Object.values(B).map((ip) => ({ ip, port: 5353 })),
    });
    const byPort = new Map<number, Set<string>>();
    for (let round = 0; round < 3; round++) {
      for (let port = 41000; port < 41020; port++) {
        const [r] = await udp({ connected: true, localPort: port });
        assert.ok(r?.data, `port ${port}: ${r?.error}`);
        const s = byPort.get(port) ?? new Set();
        s.add(r.data);
        byPort.set(port, s);
      }
    }
    for (const [port, s] of byPort) assert.equal(s.size, 1, `port ${port} went to ${[...s]}`);
    const used = new Set([...byPort.values()].flatMap((s) => [...s]));
    assert.ok(used.size >= 2, `20 client ports all hashed to ${[...used]}`);
    // TCP from unbound sockets: the same (empty) tuple in the same netns, so one backend.
    sm.upsertService({ frontend: TCP80, type: 'ClusterIP', algorithm: 'maglev', backends: tcpBackends() });
    assert.equal(new Set(served(await tcp(20))).size, 1);
  });

  test('a terminating backend gets no new connections', async () => {
    sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends({ b2: 'terminating' }) });
    const seen = served(await tcp(40));
    assert.ok(!seen.includes('b2'), seen.join(' '));
    assert.deepEqual([...new Set(seen)].sort(), ['b1', 'b3']);
    const listed = sm.maps.listFrontends().find((f) => f.frontend.port === 80);
    assert.equal(listed?.backends.find((b) => b.ip === B.b2)?.state, 'terminating');
  });

  test('removing a backend is a handful of writes, and no new connection reaches it', async () => {
    sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    const before = sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    assert.equal(sm.lastWrites, 0, 'an unchanged service writes nothing');
    const after = sm.upsertService({
      frontend: TCP80,
      type: 'ClusterIP',
      backends: tcpBackends({ b1: 'absent' }),
    });
    assert.ok(sm.lastWrites > 0 && sm.lastWrites <= 4, `${sm.lastWrites} writes`);
    assert.equal(after.revNatIndex, before.revNatIndex, 'rev-NAT index is stable');
    assert.deepEqual(after.backendIds, before.backendIds.slice(1), 'backend ids are stable');
    const seen = served(await tcp(40));
    assert.ok(!seen.includes('b1'), seen.join(' '));
    assert.deepEqual([...new Set(seen)].sort(), ['b2', 'b3']);
  });

  test('a backend shared by two services has one id', () => {
    const a = sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    const other: Frontend = { ip: '10.96.0.51', port: 80, protocol: 'TCP' };
    const b = sm.upsertService({
      frontend: other,
      type: 'ClusterIP',
      backends: tcpBackends({ b1: 'absent' }),
    });
    assert.deepEqual(b.backendIds, a.backendIds.slice(1));
    assert.notEqual(b.revNatIndex, a.revNatIndex);
    assert.equal(sm.maps.listBackends().length, 6, 'three TCP backends and three UDP ones');
    sm.deleteService(other);
    assert.equal(sm.maps.listBackends().length, 6, 'still used by the first service');
  });

  test('ClientIP affinity keeps a client on one backend until the timeout', async () => {
    sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends(), affinityTimeoutSec: 2 });
    const first = served(await tcp(15));
    assert.equal(new Set(first).size, 1, first.join(' '));
    const ids = new Map(
      sm.maps
        .listBackends()
        .filter((b) => b.protocol === 'TCP')
        .map((b) => [b.ip, b.id]),
    );
    const entry = sm.maps.affinity.lookupBatch()[0];
    assert.ok(entry, 'the datapath remembered the choice');
    const [key] = entry;
    // Point the client at b3 by hand: a fresh entry is honored...
    const pin = (ageNs: bigint) =>
      sm.maps.affinity.update(key, {
        last_used_ns: process.hrtime.bigint() - ageNs,
        backend_id: ids.get(B.b3)!,
        pad: 0,
      });
    const fresh: string[] = [];
    for (let i = 0; i < 8; i++) {
      pin(0n);
      fresh.push(...served(await tcp()));
    }
    assert.deepEqual(new Set(fresh), new Set(['b3']));
    // ...an expired one is not: choices are random again (all b3 by chance: 1 in 6561).
    const expired: string[] = [];
    for (let i = 0; i < 8; i++) {
      pin(3_000_000_000n);
      expired.push(...served(await tcp()));
    }
    assert.ok(new Set(expired).size > 1, expired.join(' '));
    // A terminating backend loses its clients at once.
    const now = served(await tcp())[0] as keyof typeof B;
    sm.upsertService({
      frontend: TCP80,
      type: 'ClusterIP',
      backends: tcpBackends({ [now]: 'terminating' }),
      affinityTimeoutSec: 2,
    });
    const moved = served(await tcp(10));
    assert.ok(!moved.includes(now), moved.join(' '));
    assert.equal(new Set(moved).size, 1);
  });

  test('traffic policies: sockets are internal traffic, so only internalTrafficPolicy narrows them', async () => {
    const nodePort: Frontend = { ip: '10.96.0.60', port: 80, protocol: 'TCP' };
    const local = tcpBackends().map((b) => ({ ...b, local: b.ip === B.b1 }));
    sm.upsertService({
      frontend: nodePort,
      type: 'NodePort',
      backends: local,
      externalTrafficPolicy: 'Local',
    });
    const scopes = sm.maps.listFrontends().filter((f) => f.frontend.ip === nodePort.ip);
    assert.deepEqual(
      scopes.map((s) => [s.scope, s.backends.length]),
      [
        ['external', 1],
        ['internal', 3],
      ],
    );
    assert.ok(scopes[0]?.flags.includes('TwoScopes') && scopes[0].flags.includes('ExtLocalScope'));
    const all = served(await ask({ op: 'tcp', host: nodePort.ip, port: 80, n: 40 }));
    assert.deepEqual([...new Set(all)].sort(), ['b1', 'b2', 'b3']);
    sm.upsertService({
      frontend: nodePort,
      type: 'ClusterIP',
      backends: local,
      internalTrafficPolicy: 'Local',
    });
    assert.equal(sm.maps.listFrontends().filter((f) => f.frontend.ip === nodePort.ip).length, 1);
    const mine = served(await ask({ op: 'tcp', host: nodePort.ip, port: 80, n: 20 }));
    assert.deepEqual([...new Set(mine)], ['b1']);
    assert.ok(sm.deleteService(nodePort));
  });

  test('opening, changing and closing the maps leaves no file descriptor behind', async () => {
    const f: Frontend = { ip: '10.96.0.99', port: 81, protocol: 'TCP' };
    await withoutFdLeak(() => {
      using other = ServiceMaps.open({ pinDir });
      const ids = other.upsertService({
        frontend: f,
        type: 'ClusterIP',
        algorithm: 'maglev',
        backends: [{ ip: '10.200.0.9', port: 1 }],
      });
      assert.equal(other.maps.maglevTable(ids.revNatIndex)?.length, other.maglevTableSize);
      assert.ok(other.deleteService(f));
    });
  });

  test('more backends than the map holds: an error naming the map, the other services intact, the next change applies', () => {
    const dir = `/sys/fs/bpf/hypha/${uniqueName('lbf')}`;
    const small = ServiceMaps.open({
      pinDir: dir,
      sizes: {
        services: 64,
        backends: 4,
        revNat: 16,
        maglev: 4,
        affinity: 16,
        affinityMatch: 16,
        sockRevNat: 16,
      },
    });
    try {
      const a: Frontend = { ip: '10.96.1.1', port: 80, protocol: 'TCP' };
      const b: Frontend = { ip: '10.96.1.2', port: 80, protocol: 'TCP' };
      const three = ['10.201.0.1', '10.201.0.2', '10.201.0.3'].map((ip) => ({ ip, port: 80 }));
      small.upsertService({ frontend: a, type: 'ClusterIP', backends: three });
      assert.throws(
        () =>
          small.upsertService({
            frontend: b,
            type: 'ClusterIP',
            backends: [
              { ip: '10.201.0.8', port: 80 },
              { ip: '10.201.0.9', port: 80 },
            ],
          }),
        /lb: the backends map is full \(4 entries\)/,
      );
      const listed = () =>
        small.maps.listFrontends().map((f) => [f.frontend.ip, f.backends.map((x) => x.ip)]);
      assert.deepEqual(listed(), [[a.ip, three.map((x) => x.ip)]]);
      // Replacing a backend takes a fourth entry for a moment: the failed change left none behind.
      const moved = [...three.slice(0, 2), { ip: '10.201.0.4', port: 80 }];
      small.upsertService({ frontend: a, type: 'ClusterIP', backends: moved });
      assert.deepEqual(listed(), [[a.ip, moved.map((x) => x.ip)]]);
      assert.equal(small.maps.listBackends().length, 3);
    } finally {
      small.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a service without an active backend fails connect at once and reports drop 158', async () => {
    drops();
    sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: [] });
    const [r] = await tcp();
    assert.equal(r?.error, 'EHOSTUNREACH');
    assert.ok((r.ms ?? 9999) < 500, `failed after ${r.ms} ms`);
    sm.upsertService({
      frontend: UDP53,
      type: 'ClusterIP',
      backends: [{ ip: B.b1, port: 5353, state: 'terminating' }],
    });
    const [u] = await udp();
    assert.equal(u?.error, 'EHOSTUNREACH');
    const d = drops();
    assert.ok(
      d.filter((e) => e.subtype === DROP_NO_SERVICE).length >= 2,
      JSON.stringify(d, (_, v) => (typeof v === 'bigint' ? `${v}` : v)),
    );
    assert.ok(d.every((e) => e.cap_len === 0));
  });

  test('a restarted agent reuses the maps and swaps the programs in place', async () => {
    sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    const ids = sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    sm.close();
    sm = ServiceMaps.open({ pinDir });
    reader.close();
    reader = sm.eventReader();
    sm.attach(cgroup);
    const again = sm.upsertService({ frontend: TCP80, type: 'ClusterIP', backends: tcpBackends() });
    assert.deepEqual(again, ids);
    assert.equal(sm.lastWrites, 0, 'nothing to write after a restart');
    const r = spawnSync('bpftool', ['-j', 'cgroup', 'show', cgroup], { encoding: 'utf8' });
    if (!r.error) assert.equal((JSON.parse(r.stdout) as unknown[]).length, 4, 'replaced, not added');
    assert.deepEqual([...new Set(served(await tcp(30)))].sort(), ['b1', 'b2', 'b3']);
  });

  test('deleting the service stops translation', async () => {
    assert.ok(sm.deleteService(TCP80));
    assert.ok(sm.deleteService(UDP53));
    assert.equal(sm.deleteService(TCP80), false);
    const [r] = await tcp();
    assert.equal(r?.data, undefined);
    assert.equal(r?.error, 'ENETUNREACH', 'the service address itself has no route');
    assert.deepEqual(sm.maps.listFrontends(), []);
    assert.deepEqual(sm.maps.listBackends(), []);
    assert.deepEqual(sm.maps.listRevNat(), []);
    assert.match(readFileSync(join(cgroup, 'cgroup.procs'), 'utf8'), /\d/, 'the client ran in the cgroup');
  });
});
