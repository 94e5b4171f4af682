// `sudo ./loader eth0` from the tutorial: count packets arriving on an interface until Ctrl+C.
//   node dist/examples/packet-counter/main.js <iface>
import { join } from 'node:path';
import { countPackets } from './loader.js';

const iface = process.argv[2] ?? 'eth0';
const ac = new AbortController();
process.once('SIGINT', () => ac.abort());
await countPackets(
  iface,
  join(import.meta.dirname, '../../../examples/packet-counter/packet_counter.bpf.o'),
  (n) => console.log(`Packets received: ${n}`),
  ac.signal,
);
