/** Where the CLI finds a node's agent: the standard path, or a running lab's data directory. */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultSocket } from '../../src/agent/client.js';
import { skipUnlessPrivileged } from '../helpers/kernel.js';

test("a lab node's agent socket is found from its node name", {
  skip: skipUnlessPrivileged(),
}, () => {
  const saved = process.env.HYPHA_AGENT_SOCKET;
  delete process.env.HYPHA_AGENT_SOCKET;
  const lab = join('/var/lib/hypha/lab', `hyclient${process.pid}`);
  const node = `hyclient${process.pid}-worker`;
  try {
    assert.equal(
      defaultSocket(node),
      `/var/run/hypha/${node}/agent.sock`,
      'no such node anywhere: the standard path',
    );
    mkdirSync(join(lab, 'nodes', node), { recursive: true });
    writeFileSync(join(lab, 'nodes', node, 'agent.sock'), '');
    assert.equal(defaultSocket(node), join(lab, 'nodes', node, 'agent.sock'));
    process.env.HYPHA_AGENT_SOCKET = '/tmp/elsewhere.sock';
    assert.equal(defaultSocket(node), '/tmp/elsewhere.sock', 'HYPHA_AGENT_SOCKET wins');
  } finally {
    if (saved === undefined) delete process.env.HYPHA_AGENT_SOCKET;
    else process.env.HYPHA_AGENT_SOCKET = saved;
    rmSync(lab, { recursive: true, force: true });
  }
});
