/**
 * The tutorial's section 11 end to end, on a fresh veth pair between two network
 * namespaces: load packet_counter.bpf.o, attach it to tc ingress of one end, send
 * pings from the other, print the count each second, and remove everything.
 */
import { join } from 'node:path';
import { attachTc, loadCollection, u32, u64 } from '../../src/bpf/index.js';
import { NetScope } from '../../src/lab/net/index.js';

export interface DemoOptions {
  pings?: number;
  /** Pings per second. */
  rate?: number;
  log?: (line: string) => void;
}

const OBJECT = join(import.meta.dirname, '../../../examples/packet-counter/packet_counter.bpf.o');

/** Runs the demo and returns the final count, which equals the pings sent. */
export async function runPacketCounterDemo(o: DemoOptions = {}): Promise<bigint> {
  const pings = o.pings ?? 20;
  const rate = o.rate ?? 5;
  const log = o.log ?? ((l: string) => console.log(l));
  await using net = new NetScope();
  const [a, b] = [await net.netns({ prefix: 'pca' }), await net.netns({ prefix: 'pcb' })];
  const macA = '02:00:0a:fa:00:01';
  const macB = '02:00:0a:fa:00:02';
  await a.addVeth('hyveth0', { peer: 'hyveth1', peerNs: b, mac: macA, peerMac: macB });
  for (const [ns, dev, addr, peer, peerMac] of [
    [a, 'hyveth0', '10.250.0.1', '10.250.0.2', macB],
    [b, 'hyveth1', '10.250.0.2', '10.250.0.1', macA],
  ] as const) {
    // No IPv6 and fixed neighbours: the only packets on the wire are the pings.
    await ns.sysctl('net.ipv6.conf.all.disable_ipv6', 1);
    await ns.addAddress(dev, `${addr}/24`);
    await ns.setUp(dev);
    await ns.ip('neigh', 'replace', peer, 'lladdr', peerMac, 'dev', dev, 'nud', 'permanent');
  }

  using obj = loadCollection(OBJECT);
  const counts = obj.map('packet_count', { key: u32, value: u64 }, true);
  using _link = attachTc({
    netns: b.name!,
    interface: 'hyveth1',
    direction: 'ingress',
    program: obj.program('count_packets'),
  });
  log(`Counting packets on ${b.name}/hyveth1 (tc ingress). Sending ${pings} pings from ${a.name}.`);

  const ping = a.spawn('ping', ['-c', String(pings), '-i', String(1 / rate), '-q', '10.250.0.2'], {
    stdio: 'ignore',
  });
  const done = new Promise<number | null>((r) => ping.on('exit', r));
  const timer = setInterval(() => log(`Packets received: ${counts.sum(0)}`), 1000);
  const code = await done;
  clearInterval(timer);
  const total = counts.sum(0);
  log(`Packets received: ${total} (ping exited ${code})`);
  return total;
}
