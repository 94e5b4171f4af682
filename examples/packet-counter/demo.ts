/**
 * The tutorial's section 11 end to end, on a fresh veth pair between two network
 * namespaces: load packet_counter.bpf.o, attach it to tc ingress of one end, send
 * pings from the other, print the count each second, and remove everything.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { attachTc, loadCollection, u32, u64 } from '../../src/bpf/index.js';

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
  const id = `${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
  const [nsA, nsB] = [`hypcA${id}`, `hypcB${id}`];
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    ip('netns', 'add', nsA);
    ip('netns', 'add', nsB);
    ip('-n', nsA, 'link', 'add', 'hyveth0', 'type', 'veth', 'peer', 'name', 'hyveth1', 'netns', nsB);
    for (const [ns, dev, addr] of [
      [nsA, 'hyveth0', '10.250.0.1'],
      [nsB, 'hyveth1', '10.250.0.2'],
    ] as const) {
      // No IPv6 and fixed neighbours: the only packets on the wire are the pings.
      ip('netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.all.disable_ipv6=1`);
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
    const macOf = (ns: string, dev: string) =>
      (
        JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show', dev]).toString()) as {
          address: string;
        }[]
      )[0]!.address;
    ip(
      '-n',
      nsA,
      'neigh',
      'replace',
      '10.250.0.2',
      'lladdr',
      macOf(nsB, 'hyveth1'),
      'dev',
      'hyveth0',
      'nud',
      'permanent',
    );
    ip(
      '-n',
      nsB,
      'neigh',
      'replace',
      '10.250.0.1',
      'lladdr',
      macOf(nsA, 'hyveth0'),
      'dev',
      'hyveth1',
      'nud',
      'permanent',
    );

    using obj = loadCollection(OBJECT);
    const counts = obj.map('packet_count', { key: u32, value: u64 }, true);
    using _link = attachTc({
      netns: nsB,
      interface: 'hyveth1',
      direction: 'ingress',
      program: obj.program('count_packets'),
    });
    log(`Counting packets on ${nsB}/hyveth1 (tc ingress). Sending ${pings} pings from ${nsA}.`);

    const ping = spawn(
      'ip',
      ['netns', 'exec', nsA, 'ping', '-c', String(pings), '-i', String(1 / rate), '-q', '10.250.0.2'],
      {
        stdio: 'ignore',
      },
    );
    const done = new Promise<number | null>((r) => ping.on('exit', r));
    const timer = setInterval(() => log(`Packets received: ${counts.sum(0)}`), 1000);
    const code = await done;
    clearInterval(timer);
    const total = counts.sum(0);
    log(`Packets received: ${total} (ping exited ${code})`);
    return total;
  } finally {
    for (const ns of [nsA, nsB]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}
