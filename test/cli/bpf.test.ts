import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadCollection, TcAct } from '../../src/bpf/index.js';
import { Datapath, defaultObjectPath } from '../../src/datapath/index.js';
import { repoRoot, skipUnlessPrivileged } from '../helpers/kernel.js';
import { packet } from '../helpers/packet.js';

const hypha = (...args: string[]) => spawnSync(join(repoRoot, 'bin/hypha'), args, { encoding: 'utf8' });

describe('hypha bpf policy/ct/ipcache/metrics on pinned maps', { skip: skipUnlessPrivileged() }, () => {
  const node = `hytestcli${process.pid}`;
  let dp: Datapath;
  before(() => {
    dp = Datapath.open({ pinDir: `/sys/fs/bpf/hypha/${node}` });
    dp.upsertIpcache('10.244.0.20/32', 4242);
    dp.upsertIpcache('203.0.113.0/24', 16777217);
    dp.endpoints.update(
      { ifindex: 1 },
      { ip4: '10.244.0.10', identity: 1234, id: 7, flags: 1, pad: 0, mac: [0, 0, 0, 0, 0, 0], pad2: [0, 0] },
    );
    dp.applyPolicy(7, {
      added: [
        {
          direction: 'ingress',
          identity: 4242,
          protocol: 6,
          port: 8080,
          portPrefixLen: 16,
          verdict: 'allow',
          cookie: 3,
        },
        {
          direction: 'ingress',
          identity: 0,
          protocol: 6,
          port: 9000,
          portPrefixLen: 12,
          verdict: 'deny',
          cookie: 4,
        },
        {
          direction: 'egress',
          identity: 2,
          protocol: 0,
          port: 0,
          portPrefixLen: 0,
          verdict: 'allow',
          cookie: 5,
        },
      ],
      removed: [],
    });
    using coll = loadCollection(defaultObjectPath(), { pinPath: `/sys/fs/bpf/hypha/${node}` });
    const r = coll.program('to_container').testRun({
      data: packet({ src: '10.244.0.20', dst: '10.244.0.10', proto: 'tcp', sport: 50000, dport: 8080 }),
    });
    assert.equal(r.retval, TcAct.Ok);
    coll.program('to_container').testRun({
      data: packet({ src: '10.244.0.21', dst: '10.244.0.10', proto: 'tcp', sport: 50000, dport: 22 }),
    });
  });
  after(() => {
    dp.destroy();
    spawnSync('rmdir', ['/sys/fs/bpf/hypha']);
  });

  test('bpf policy get shows ports, ranges, verdicts and cookies', () => {
    const r = hypha('bpf', 'policy', 'get', '7', '--node', node);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /7\s+Ingress\s+4242\s+8080\/TCP\s+allow\s+-\s+-\s+3/);
    assert.match(r.stdout, /7\s+Ingress\s+ANY\s+9000-9015\/TCP\s+deny/);
    assert.match(r.stdout, /7\s+Egress\s+2 \(world\)\s+ANY\s+allow/);
    const j = JSON.parse(
      hypha('bpf', 'policy', 'get', '--all', '--node', node, '-o', 'json').stdout,
    ) as unknown[];
    assert.equal(j.length, 3);
  });

  test('bpf ipcache list, ct list global, metrics list', () => {
    const ip = hypha('bpf', 'ipcache', 'list', '--node', node);
    assert.match(ip.stdout, /10\.244\.0\.20\/32\s+identity=4242/);
    assert.match(ip.stdout, /203\.0\.113\.0\/24\s+identity=16777217/);
    const ct = hypha('bpf', 'ct', 'list', 'global', '--node', node);
    assert.match(
      ct.stdout,
      /TCP IN 10\.244\.0\.20:50000 -> 10\.244\.0\.10:8080 .*TxPackets=1 .*SourceSecurityID=4242 DestinationSecurityID=1234/,
    );
    const m = JSON.parse(hypha('bpf', 'metrics', 'list', '--node', node, '-o', 'json').stdout) as {
      reason: number;
      packets: number;
    }[];
    assert.ok(m.some((x) => x.reason === 0 && x.packets >= 1));
    assert.ok(
      m.some((x) => x.reason === 133 && x.packets >= 1),
      'the packet to port 22 was dropped by default deny',
    );
    assert.match(
      hypha('bpf', 'metrics', 'list', '--node', node).stdout,
      /POLICY_DENIED \(133\)\s+INGRESS\s+1/,
    );
  });

  test('bad arguments are usage errors', () => {
    assert.equal(hypha('bpf', 'policy', 'get', '--node', node).status, 2);
    assert.equal(hypha('bpf', 'ct', 'list', 'local', '--node', node).status, 2);
  });
});
