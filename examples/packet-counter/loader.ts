// The tutorial's loader.c (section 11.4), with the hypha/bpf SDK.
import { setTimeout as sleep } from 'node:timers/promises';
import { attachTc, loadCollection, u32, u64 } from '../../src/bpf/index.js';

export async function countPackets(
  iface: string,
  object: string,
  onTick: (n: bigint) => void,
  signal: AbortSignal,
) {
  using obj = loadCollection(object);
  const counts = obj.map('packet_count', { key: u32, value: u64 }, true);
  using _link = attachTc({ interface: iface, direction: 'ingress', program: obj.program('count_packets') });
  console.log(`Counting packets on ${iface}. Press Ctrl+C to stop.`);
  while (await sleep(1000, true, { signal }).catch(() => false)) onTick(counts.sum(0));
  onTick(counts.sum(0));
}
