import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { createTopology, destroyTopology, planTopology } from '../../src/lab/cluster/topology.js';
import { NetNs } from '../../src/lab/net/index.js';
import { privilegedSkip } from '../helpers/privileged.js';

describe('lab topology plan', () => {
  test("names nodes as kind does, with the tutorial's cluster name", () => {
    const t = planTopology({ cluster: 'cilium-demo', nodes: 3 });
    assert.deepEqual(
      t.nodes.map((n) => [n.name, n.role, n.ip, n.podCidr]),
      [
        ['cilium-demo-control-plane', 'control-plane', '10.240.0.1', '10.244.0.0/24'],
        ['cilium-demo-worker', 'worker', '10.240.0.2', '10.244.1.0/24'],
        ['cilium-demo-worker2', 'worker', '10.240.0.3', '10.244.2.0/24'],
      ],
    );
    assert.ok(
      t.world.hosts.some((h) => h.name === 'api.external-partner.com' && h.ip.startsWith('203.0.113.')),
    );
    assert.ok(t.namespaces.every((n) => n.startsWith('hy')));
    assert.ok(t.rootLink.startsWith('hy'));
  });

  test('refuses bad names and sizes with the field', () => {
    assert.throws(() => planTopology({ cluster: 'Bad_Name', nodes: 3 }), /lab: cluster: "Bad_Name"/);
    assert.throws(() => planTopology({ cluster: 'x', nodes: 0 }), /lab: nodes: 0/);
  });
});

describe('lab topology on the kernel', { skip: privilegedSkip() }, () => {
  const t = planTopology({ cluster: `hyt${process.pid % 1000}`, nodes: 3, underlayOctet: 241 });
  after(() => destroyTopology(t));

  test('nodes reach each other, the world, and the root namespace reaches them', async () => {
    await createTopology(t);
    const [n0, n1, n2] = t.nodes;
    const ping = (ns: string | undefined, to: string) =>
      spawnSync(ns ? 'ip' : 'ping', ns ? ['netns', 'exec', ns, 'ping', '-c1', '-W1', to] : ['-c1', '-W1', to])
        .status;
    assert.equal(ping(n0!.netns, n2!.ip), 0, 'node to node');
    assert.equal(ping(n1!.netns, '203.0.113.10'), 0, 'node to world host');
    assert.equal(ping(undefined, n1!.ip), 0, 'root namespace to node');
    const routes = execFileSync('ip', ['-n', n0!.netns, 'route']).toString();
    assert.match(routes, /10\.244\.1\.0\/24 via 10\.241\.0\.2/);
    assert.match(routes, /default via 10\.241\.0\.250/);
    const rootRoutes = execFileSync('ip', ['route']).toString();
    assert.doesNotMatch(rootRoutes, /10\.244\./, 'no pod route in the root namespace');
  });

  test('destroy removes every namespace and the root link', async () => {
    await destroyTopology(t);
    const left = (await NetNs.list('hylab-')).filter((n) => t.namespaces.includes(n));
    assert.deepEqual(left, []);
    assert.equal(await NetNs.root.link(t.rootLink), undefined);
    await destroyTopology(t); // twice is fine
  });
});
