/**
 * The node's external device (bpf/host.o, maps in bpf/include/nat.h and nodeport.h):
 * NodePort, external IP and LoadBalancer frontends for traffic from other hosts, which no
 * socket hook sees. `HostDatapath` loads the object into a node's pin directory, sharing
 * the service maps `ServiceMaps` writes there, and attaches it to one device.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  array,
  attachTc,
  type BpfMap,
  be16,
  type Collection,
  ifindexOf,
  ipv4,
  loadCollection,
  loadSpec,
  openPinnedRawMap,
  type Program,
  RingBufReader,
  struct,
  type TcDirection,
  u8,
  u32,
  u64,
  unpin,
  withNetns,
} from '../bpf/index.js';
import { ValidationError } from '../errors.js';
import { LB_DEFAULT_SIZES, type LbMapSizes } from './lb.js';

type Decoded<C> = C extends { decode(d: DataView, o: number): infer T } ? T : never;

// --- codecs (test/datapath/nodeport.test.ts checks each against the BTF of host.o)

export const nat4Key = struct({
  saddr: ipv4,
  daddr: ipv4,
  sport: be16,
  dport: be16,
  proto: u8,
  dir: u8,
  pad: array(u8, 2),
});
export const nat4Entry = struct({
  expires_ns: u64,
  saddr: ipv4,
  daddr: ipv4,
  sport: be16,
  dport: be16,
  rev_nat_index: u32,
  backend_id: u32,
  flags: u8,
  pad: array(u8, 3),
});

/** Every struct of nat.h, by C name, for the layout test. */
export const HOST_LAYOUTS = { nat4_key: nat4Key, nat4_entry: nat4Entry } as const;

export type Nat4Key = Decoded<typeof nat4Key>;
export type Nat4Entry = Decoded<typeof nat4Entry>;

// --- constants (nat.h)

export const NatDir = { Fwd: 0, Rev: 1 } as const;
export const NatFlags = { Snat: 1 << 0, Closing: 1 << 1 } as const;
/** The programs and where they run on the device. */
export const HOST_PROGRAMS: Record<TcDirection, string> = { ingress: 'from_netdev', egress: 'to_netdev' };

const NAT_MAP = 'hypha_nat4';
/** The service maps host.o shares with sock.o, by ServiceMaps' size names. */
const LB_MAPS: Partial<Record<string, keyof LbMapSizes>> = {
  hypha_lb4_services: 'services',
  hypha_lb4_backends: 'backends',
  hypha_lb4_reverse_nat: 'revNat',
  hypha_lb4_maglev: 'maglev',
  hypha_lb4_affinity: 'affinity',
  hypha_lb_affinity_match: 'affinityMatch',
  hypha_lb4_sock_revnat: 'sockRevNat',
};
const PROTO_NAMES: Record<number, string> = { 6: 'TCP', 17: 'UDP' };

export interface HostDatapathOptions {
  /** The node's bpffs directory, the one its ServiceMaps use, e.g. /sys/fs/bpf/hypha/<node>. */
  pinDir: string;
  /** The external device, e.g. eth0. */
  device: string;
  /** The device's network namespace (a name from `ip netns` or a path); the caller's when absent. */
  netns?: string;
  /** The node's address on the device: the source of translated connections. */
  nodeIp: string;
  objectPath?: string;
  /** As given to ServiceMaps (default 251): the maglev tables' length. */
  maglevTableSize?: number;
  /** Node ports for translated sources; default 61000-65535, above Linux's ephemeral range. */
  natPorts?: { min: number; max: number };
  /** Entries of the NAT map (two per connection) when it is created; default 131072. */
  natEntries?: number;
  /** Sizes of service maps this load creates (ones already pinned keep theirs); as ServiceMaps'. */
  sizes?: Partial<LbMapSizes>;
}

/** A connection the device translates, from its forward entry. */
export interface NatConnection {
  protocol: string;
  client: string;
  frontend: string;
  backend: string;
  /** The node's address and port standing in for the client at the backend, when translated. */
  snat?: string;
  revNatIndex: number;
  backendId: number;
  closing: boolean;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function defaultObjectPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return join(here, '../../bpf/host.o'); // dist/src/datapath -> dist/bpf
}

function validate(o: HostDatapathOptions): void {
  const bad = (field: string, reason: string) => new ValidationError('HostDatapath', field, reason);
  if (!IPV4.test(o.nodeIp)) throw bad('nodeIp', `${o.nodeIp} is not an IPv4 address`);
  if (!o.device) throw bad('device', 'empty');
  const p = o.natPorts;
  if (
    p &&
    (!Number.isInteger(p.min) || !Number.isInteger(p.max) || p.min < 1024 || p.max > 65535 || p.min > p.max)
  )
    throw bad('natPorts', `${p.min}-${p.max}: must be a range within 1024-65535`);
  const n = o.natEntries;
  if (n !== undefined && (!Number.isInteger(n) || n < 2))
    throw bad('natEntries', 'must be an integer of at least 2');
}

/**
 * bpf/host.o of one node device: its NAT map, and tc programs on the device's ingress and
 * egress. Closing it detaches what it attached; `disconnect()` leaves the programs running
 * for a successor, which attaches with `replace`.
 */
export class HostDatapath implements Disposable {
  readonly pinDir: string;
  readonly device: string;
  readonly netns: string | undefined;
  readonly ifindex: number;
  readonly nat: BpfMap<Nat4Key, Nat4Entry>;
  readonly #coll: Collection;
  readonly #links: ReturnType<typeof attachTc>[] = [];
  #closed = false;

  private constructor(coll: Collection, o: HostDatapathOptions, ifindex: number) {
    this.#coll = coll;
    this.pinDir = o.pinDir;
    this.device = o.device;
    this.netns = o.netns;
    this.ifindex = ifindex;
    this.nat = coll.map(NAT_MAP, { key: nat4Key, value: nat4Entry });
  }

  /**
   * Loads host.o for `device`, reusing the maps pinned under pinDir (a service written by
   * ServiceMaps there is seen at once) and pinning the ones it creates.
   */
  static load(o: HostDatapathOptions): HostDatapath {
    validate(o);
    const object = o.objectPath ?? defaultObjectPath();
    if (!existsSync(object)) throw new Error(`host object ${object} is missing: run npm run build`);
    const ifindex = o.netns ? withNetns(o.netns, () => ifindexOf(o.device)) : ifindexOf(o.device);
    const spec = loadSpec(object);
    // A pinned map is reused only at its own size; one created here gets ServiceMaps' size,
    // so that a ServiceMaps opened later reuses it in turn.
    const sizes = { ...LB_DEFAULT_SIZES, ...o.sizes };
    const maxEntries: Record<string, number> = {};
    for (const m of spec.maps) {
      if (m.name.startsWith('.')) continue;
      const pin = join(o.pinDir, m.name);
      if (existsSync(pin)) {
        const pinned = openPinnedRawMap(pin);
        if (pinned) {
          maxEntries[m.name] = pinned.maxEntries;
          pinned.close();
          continue;
        }
      }
      const lb = LB_MAPS[m.name];
      if (lb) maxEntries[m.name] = sizes[lb];
      else if (m.name === NAT_MAP && o.natEntries !== undefined) maxEntries[m.name] = o.natEntries;
    }
    const coll = loadCollection(spec, {
      pinPath: o.pinDir,
      maxEntries,
      constants: {
        nodeport_ip4: Uint8Array.from(o.nodeIp.split('.').map(Number)),
        nodeport_ifindex: ifindex,
        lb_maglev_table_size: o.maglevTableSize ?? 251,
        nat_port_min: o.natPorts?.min ?? 61000,
        nat_port_max: o.natPorts?.max ?? 65535,
      },
    });
    try {
      return new HostDatapath(coll, o, ifindex);
    } catch (err) {
      coll.close();
      throw err;
    }
  }

  /**
   * Attaches from_netdev to the device's ingress and to_netdev to its egress. With
   * `replace`, programs already in the slots (a predecessor's) are swapped in place.
   */
  attach(opts: { replace?: boolean; handle?: number; priority?: number } = {}): void {
    if (this.#links.length) throw new Error(`HostDatapath ${this.device}: already attached`);
    try {
      for (const direction of ['ingress', 'egress'] as const) {
        this.#links.push(
          attachTc({
            interface: this.device,
            ...(this.netns ? { netns: this.netns } : {}),
            direction,
            program: this.#coll.program(HOST_PROGRAMS[direction]),
            ...(opts.replace ? { replace: true } : {}),
            ...(opts.handle !== undefined ? { handle: opts.handle } : {}),
            ...(opts.priority !== undefined ? { priority: opts.priority } : {}),
          }),
        );
      }
    } catch (err) {
      this.detach();
      throw err;
    }
  }

  /** Removes the programs this instance attached. */
  detach(): void {
    const links = this.#links.splice(0);
    const errors: unknown[] = [];
    for (const l of links.reverse()) {
      try {
        l.close();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `HostDatapath ${this.device}: detach`);
  }

  /** The program of one side of the device (for BPF_PROG_TEST_RUN). */
  program(direction: TcDirection): Program {
    return this.#coll.program(HOST_PROGRAMS[direction]);
  }

  get attached(): boolean {
    return this.#links.length > 0;
  }

  /** A reader of the node's shared events ring (drops with reason 158 come from here too). */
  eventReader(): RingBufReader {
    return new RingBufReader(this.#coll.rawMap('hypha_events'));
  }

  /** The translated connections, from their forward entries. */
  connections(): NatConnection[] {
    return this.nat
      .lookupBatch()
      .filter(([k]) => k.dir === NatDir.Fwd)
      .map(([k, v]) => {
        const snat = (v.flags & NatFlags.Snat) !== 0;
        return {
          protocol: PROTO_NAMES[k.proto] ?? String(k.proto),
          client: `${k.saddr}:${k.sport}`,
          frontend: `${k.daddr}:${k.dport}`,
          backend: `${v.daddr}:${v.dport}`,
          ...(snat ? { snat: `${v.saddr}:${v.sport}` } : {}),
          revNatIndex: v.rev_nat_index,
          backendId: v.backend_id,
          closing: (v.flags & NatFlags.Closing) !== 0,
        };
      });
  }

  /** Leaves the programs attached and forgets them: a successor attaches with `replace`. */
  disconnect(): void {
    for (const l of this.#links.splice(0)) l.disconnect();
    this.close();
  }

  /** Detaches, closes the object, and removes the NAT map's pin (the shared maps stay). */
  destroy(): void {
    this.close();
    unpin(join(this.pinDir, NAT_MAP));
  }

  /** Detaches what this instance attached and releases the object. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.detach();
    } finally {
      this.#coll.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
