import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { runPacketCounterDemo } from '../../examples/packet-counter/demo.js';
import { skipUnlessPrivileged, withoutFdLeak } from '../helpers/kernel.js';

describe("the tutorial's packet counter (section 11)", { skip: skipUnlessPrivileged() }, () => {
  test('counts exactly the 20 pings sent across a veth, then cleans up', async () => {
    const before = execFileSync('ip', ['netns', 'list']).toString();
    const lines: string[] = [];
    const total = await withoutFdLeak(() =>
      runPacketCounterDemo({ pings: 20, rate: 50, log: (l) => lines.push(l) }),
    );
    assert.equal(total, 20n);
    assert.match(lines.at(-1) ?? '', /Packets received: 20 \(ping exited 0\)/);
    assert.equal(execFileSync('ip', ['netns', 'list']).toString(), before, 'no namespace left behind');
  });
});
