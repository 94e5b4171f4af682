/** The agent's own metrics in Cilium's names: endpoints by state, identities, map pressure, regeneration time. */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { test } from 'node:test';
import { createMap, MapType, u32, unpin } from '../../src/bpf/index.js';
import { AgentMetrics, pinnedMapUsage } from '../../src/hubble/agent-metrics.js';
import { privilegedTest } from '../helpers/privileged.js';

test('endpoints by state, identities by kind, map pressure and regeneration times', () => {
  const m = new AgentMetrics();
  m.observeRegeneration(0.0007);
  m.observeRegeneration(0.03);
  const text = m.render({
    endpointStates: ['ready', 'ready', 'not-ready'],
    policies: 4,
    identities: [1, 2, 256, 300, (1 << 24) | 1],
    serviceFrontends: 7,
    datapathEvents: 123,
    flowBuildErrors: 1,
    l7Errors: 2,
    maps: [
      { name: 'hypha_ct4', entries: 512, maxEntries: 65536 },
      { name: 'hypha_ipcache4', entries: 0, maxEntries: 0 },
    ],
  });
  assert.match(text, /^cilium_endpoint 3$/m);
  assert.match(text, /^cilium_endpoint_state\{endpoint_state="ready"\} 2$/m);
  assert.match(text, /^cilium_endpoint_state\{endpoint_state="not-ready"\} 1$/m);
  assert.match(text, /^cilium_endpoint_state\{endpoint_state="regenerating"\} 0$/m);
  assert.match(text, /^cilium_policy 4$/m);
  assert.match(text, /^cilium_identity\{type="cluster_local"\} 2$/m);
  assert.match(text, /^cilium_identity\{type="node_local"\} 1$/m);
  assert.match(text, /^cilium_identity\{type="reserved"\} 2$/m);
  assert.match(text, /^cilium_bpf_map_pressure\{map_name="hypha_ct4"\} 0.0078125$/m);
  assert.doesNotMatch(text, /map_name="hypha_ipcache4"/, 'no capacity, no pressure');
  assert.match(text, /^cilium_policy_regeneration_total 2$/m);
  assert.match(text, /^cilium_policy_regeneration_time_stats_seconds_bucket\{scope="total",le="0.001"\} 1$/m);
  assert.match(text, /^cilium_policy_regeneration_time_stats_seconds_bucket\{scope="total",le="0.05"\} 2$/m);
  assert.match(text, /^cilium_policy_regeneration_time_stats_seconds_count\{scope="total"\} 2$/m);
  assert.match(text, /^hypha_flow_build_errors_total\{source="proxy"\} 2$/m);
  assert.match(text, /^# TYPE cilium_bpf_map_pressure gauge$/m);
});

privilegedTest('map pressure counts the entries of pinned maps', () => {
  const dir = `/sys/fs/bpf/hyhb-${process.pid}`;
  mkdirSync(dir, { recursive: true });
  try {
    {
      using hash = createMap({ type: MapType.Hash, name: 'hyhb_hash', key: u32, value: u32, maxEntries: 8 });
      for (let i = 0; i < 3; i++) hash.update(i, i);
      hash.pin(`${dir}/hyhb_hash`);
      using arr = createMap({ type: MapType.Array, name: 'hyhb_arr', key: u32, value: u32, maxEntries: 4 });
      arr.pin(`${dir}/hyhb_arr`);
    }
    assert.deepEqual(pinnedMapUsage(dir), [{ name: 'hyhb_hash', entries: 3, maxEntries: 8 }]);
    assert.deepEqual(pinnedMapUsage(`${dir}/missing`), []);
  } finally {
    unpin(dir);
  }
});
