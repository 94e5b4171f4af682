/**
 * Kubernetes Services in the socket load balancer (bpf/sock.o, maps in bpf/include/lb.h):
 * codecs for its maps, `ServiceMaps` to load and attach it and to apply service changes as
 * differences, and list functions for `hypha bpf lb list`.
 *
 * The maps are the state: a restarted agent opens the same pin directory, rebuilds its
 * view (ids, slots) from them, and the next upsert of an unchanged service writes nothing.
 */
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  array,
  attachCgroup,
  BpfError,
  type BpfMap,
  be16,
  type Collection,
  createMap,
  fdValue,
  ipv4,
  loadCollection,
  MapType,
  openMapById,
  openPinnedLink,
  openPinnedMap,
  RingBufReader,
  struct,
  u8,
  u16,
  u32,
  u64,
  unpin,
} from '../bpf/index.js';
import { ValidationError } from '../errors.js';

type Decoded<C> = C extends { decode(d: DataView, o: number): infer T } ? T : never;

// --- codecs (test/datapath/lb.test.ts checks each against the BTF of sock.o)

export const lb4Key = struct({
  address: ipv4,
  dport: be16,
  backend_slot: u16,
  proto: u8,
  scope: u8,
  pad: array(u8, 2),
});
export const lb4Service = struct({
  backend_id: u32,
  affinity_timeout: u32,
  count: u16,
  qcount: u16,
  rev_nat_index: u32,
  flags: u8,
  flags2: u8,
  algorithm: u8,
  pad: u8,
});
export const lb4BackendId = u32;
export const lb4Backend = struct({ address: ipv4, port: be16, proto: u8, state: u8 });
export const lb4RevNatIndex = u32;
export const lb4ReverseNat = struct({ address: ipv4, port: be16, pad: u16 });
export const lb4MaglevKey = struct({ rev_nat_index: u32, scope: u8, pad: array(u8, 3) });
export const lb4AffinityKey = struct({
  client_cookie: u64,
  rev_nat_index: u32,
  netns_cookie: u8,
  pad: array(u8, 3),
});
export const lbAffinityVal = struct({ last_used_ns: u64, backend_id: u32, pad: u32 });
export const lbAffinityMatch = struct({ backend_id: u32, rev_nat_index: u32 });
export const lb4RevnatKey = struct({ cookie: u64, address: ipv4, port: be16, pad: u16 });
export const lb4RevnatEntry = struct({ address: ipv4, port: be16, pad: u16, rev_nat_index: u32 });

/** Every struct of lb.h, by C name, for the layout test. */
export const LB_LAYOUTS = {
  lb4_key: lb4Key,
  lb4_service: lb4Service,
  lb4_backend: lb4Backend,
  lb4_reverse_nat: lb4ReverseNat,
  lb4_maglev_key: lb4MaglevKey,
  lb4_affinity_key: lb4AffinityKey,
  lb_affinity_val: lbAffinityVal,
  lb_affinity_match: lbAffinityMatch,
  lb4_revnat_key: lb4RevnatKey,
  lb4_revnat_entry: lb4RevnatEntry,
} as const;

export type Lb4Key = Decoded<typeof lb4Key>;
export type Lb4Service = Decoded<typeof lb4Service>;
export type Lb4Backend = Decoded<typeof lb4Backend>;

// --- constants (lb.h)

export const LB_SCOPE_EXT = 0;
export const LB_SCOPE_INT = 1;
export const SvcFlags = {
  ExternalIp: 1 << 0,
  NodePort: 1 << 1,
  ExtLocalScope: 1 << 2,
  Affinity: 1 << 4,
  LoadBalancer: 1 << 5,
  Routable: 1 << 6,
} as const;
export const SvcFlags2 = { IntLocalScope: 1 << 4, TwoScopes: 1 << 5 } as const;
export const LbAlgorithmCode = { random: 1, maglev: 2 } as const;
export const BackendStateCode = { active: 0, terminating: 1, quarantined: 2 } as const;
/** Cilium's drop reason for a service without backends (SERVICE_BACKEND_NOT_FOUND). */
export const DROP_NO_SERVICE = 158;

const BPF_F_INNER_MAP = 1 << 12;
/** SCTP frontends are kept in the maps for the per-packet path; the socket hooks translate TCP and UDP. */
const PROTO = { TCP: 6, UDP: 17, SCTP: 132 } as const;

// --- the service model

export type Protocol = keyof typeof PROTO;
export type ServiceType = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';
export type BackendState = keyof typeof BackendStateCode;
export type LbAlgorithm = keyof typeof LbAlgorithmCode;
export type TrafficPolicy = 'Cluster' | 'Local';

export interface Frontend {
  ip: string;
  port: number;
  protocol: Protocol;
}

export interface BackendSpec {
  ip: string;
  port: number;
  /** Default active. Terminating and quarantined backends get no new connections. */
  state?: BackendState;
  /** On this node: the backends a Local traffic policy keeps. */
  local?: boolean;
}

export interface ServiceSpec {
  frontend: Frontend;
  type: ServiceType;
  backends: readonly BackendSpec[];
  /** Default random. */
  algorithm?: LbAlgorithm;
  /** sessionAffinity ClientIP with this timeout; none when absent or 0. */
  affinityTimeoutSec?: number;
  externalTrafficPolicy?: TrafficPolicy;
  internalTrafficPolicy?: TrafficPolicy;
}

/** What an upsert allocated (or found): the frontend's rev-NAT index and each backend's id, in spec order. */
export interface ServiceIds {
  revNatIndex: number;
  backendIds: number[];
}

/** A frontend as the maps hold it (for `hypha bpf lb list --frontends`). */
export interface FrontendListing {
  frontend: Frontend;
  scope: 'external' | 'internal';
  revNatIndex: number;
  type: ServiceType;
  algorithm: LbAlgorithm;
  affinityTimeoutSec: number;
  flags: string[];
  backends: { slot: number; id: number; ip?: string; port?: number; state?: BackendState }[];
}

export interface BackendListing {
  id: number;
  ip: string;
  port: number;
  protocol: Protocol | number;
  state: BackendState;
}

export interface RevNatListing {
  index: number;
  ip: string;
  port: number;
}

export interface LbMapSizes {
  /** Masters and backend slots: 100,000 services with 1,000,000 backends fit the default. */
  services: number;
  backends: number;
  revNat: number;
  /** Maglev tables (one per maglev service and scope). */
  maglev: number;
  affinity: number;
  affinityMatch: number;
  sockRevNat: number;
}

export const LB_DEFAULT_SIZES: LbMapSizes = {
  services: 1_200_000,
  // 2^20: a million backends plus room for changes, which write a new backend before the
  // old one goes (at exactly 1,000,000 every change of a full map failed). Same buckets.
  backends: 1_048_576,
  revNat: 131_072,
  maglev: 65_536,
  affinity: 65_536,
  affinityMatch: 262_144,
  sockRevNat: 262_144,
};

const MAP_NAMES: Record<keyof LbMapSizes, string> = {
  services: 'hypha_lb4_services',
  backends: 'hypha_lb4_backends',
  revNat: 'hypha_lb4_reverse_nat',
  maglev: 'hypha_lb4_maglev',
  affinity: 'hypha_lb4_affinity',
  affinityMatch: 'hypha_lb_affinity_match',
  sockRevNat: 'hypha_lb4_sock_revnat',
};

export const SOCK_PROGRAMS = [
  'sock4_connect',
  'sock4_sendmsg',
  'sock4_recvmsg',
  'sock4_getpeername',
] as const;

const PROTO_NAMES = new Map<number, Protocol>(Object.entries(PROTO).map(([n, p]) => [p, n as Protocol]));
const protoName = (p: number): Protocol | number => PROTO_NAMES.get(p) ?? p;
const stateName = (s: number): BackendState =>
  s === BackendStateCode.terminating
    ? 'terminating'
    : s === BackendStateCode.quarantined
      ? 'quarantined'
      : 'active';
const frontendId = (f: Frontend): string => `${f.ip}:${f.port}/${f.protocol}`;
const backendAddrId = (ip: string, port: number, proto: number): string => `${ip}:${port}/${proto}`;

function typeOfFlags(flags: number): ServiceType {
  if (flags & SvcFlags.LoadBalancer) return 'LoadBalancer';
  if (flags & SvcFlags.NodePort) return 'NodePort';
  if (flags & SvcFlags.ExternalIp) return 'ExternalIP';
  return 'ClusterIP';
}

function flagNames(flags: number, flags2: number): string[] {
  const out: string[] = [];
  for (const [name, bit] of Object.entries(SvcFlags)) if (flags & bit) out.push(name);
  for (const [name, bit] of Object.entries(SvcFlags2)) if (flags2 & bit) out.push(name);
  return out;
}

/** The slot-0 key of a frontend in a scope; slot keys differ in backend_slot only. */
function lbKey(f: Frontend, slot: number, scope: number): Lb4Key {
  return {
    address: f.ip,
    dport: f.port,
    backend_slot: slot,
    proto: PROTO[f.protocol],
    scope,
    pad: [0, 0],
  };
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Checks a spec at the ServiceMaps edge; the reconciler past it trusts the types. */
export function validateServiceSpec(s: ServiceSpec): void {
  const obj = `service ${s.frontend?.ip}:${s.frontend?.port}/${s.frontend?.protocol}`;
  const bad = (field: string, reason: string) => new ValidationError(obj, field, reason);
  if (!IPV4.test(s.frontend.ip)) throw bad('frontend.ip', 'not an IPv4 address');
  if (!Number.isInteger(s.frontend.port) || s.frontend.port < 1 || s.frontend.port > 65535)
    throw bad('frontend.port', 'must be 1..65535');
  if (!(s.frontend.protocol in PROTO)) throw bad('frontend.protocol', 'must be TCP, UDP or SCTP');
  if (!['ClusterIP', 'NodePort', 'ExternalIP', 'LoadBalancer'].includes(s.type)) throw bad('type', 'unknown');
  if (s.algorithm !== undefined && !(s.algorithm in LbAlgorithmCode))
    throw bad('algorithm', 'random or maglev');
  const t = s.affinityTimeoutSec;
  if (t !== undefined && (!Number.isInteger(t) || t < 0 || t > 86400))
    throw bad('affinityTimeoutSec', 'must be 0..86400 seconds');
  if (s.backends.length > 65535) throw bad('backends', 'more than 65535');
  const seen = new Set<string>();
  s.backends.forEach((b, i) => {
    if (!IPV4.test(b.ip)) throw bad(`backends[${i}].ip`, 'not an IPv4 address');
    if (!Number.isInteger(b.port) || b.port < 1 || b.port > 65535)
      throw bad(`backends[${i}].port`, 'must be 1..65535');
    if (b.state !== undefined && !(b.state in BackendStateCode)) throw bad(`backends[${i}].state`, 'unknown');
    const id = `${b.ip}:${b.port}`;
    if (seen.has(id)) throw bad(`backends[${i}]`, `${id} is listed twice`);
    seen.add(id);
  });
}

// --- maglev

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/** 32-bit FNV-1a with a murmur3 finalizer, seeded: the two maglev permutation hashes. */
function hash32(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The Maglev lookup table (Eisenbud et al., NSDI 2016) of `size` (a prime) entries over
 * backends named by address: each backend fills entries along its own permutation in turn,
 * so the table is balanced and one backend coming or going moves few entries. Backends are
 * ordered by name first: the table depends on the set, not on the order given.
 */
export function maglevTable(backends: readonly { id: number; name: string }[], size: number): Uint32Array {
  const table = new Uint32Array(size);
  const n = backends.length;
  if (n === 0) return table;
  const sorted = [...backends].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const offset = sorted.map((b) => hash32(b.name, 0x9e3779b9) % size);
  const skip = sorted.map((b) => (hash32(b.name, 0x7f4a7c15) % (size - 1)) + 1);
  const next = new Uint32Array(n);
  const filled = new Uint8Array(size);
  for (let done = 0; ; ) {
    for (let i = 0; i < n; i++) {
      let c = (offset[i]! + next[i]! * skip[i]!) % size;
      while (filled[c]) {
        next[i]!++;
        c = (offset[i]! + next[i]! * skip[i]!) % size;
      }
      filled[c] = 1;
      table[c] = sorted[i]!.id;
      next[i]!++;
      if (++done === size) return table;
    }
  }
}

// --- the maps

function defaultObjectPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return join(here, '../../bpf/sock.o'); // dist/src/datapath -> dist/bpf
}

/**
 * The load balancer's maps with codecs, from a loaded object or from pins (for the CLI),
 * and what `hypha bpf lb list` prints, as plain objects read from the maps.
 */
export class LbMaps implements Disposable {
  constructor(
    readonly services: BpfMap<Lb4Key, Lb4Service>,
    readonly backends: BpfMap<number, Lb4Backend>,
    readonly revNat: BpfMap<number, Decoded<typeof lb4ReverseNat>>,
    readonly maglev: BpfMap<Decoded<typeof lb4MaglevKey>, number>,
    readonly affinity: BpfMap<Decoded<typeof lb4AffinityKey>, Decoded<typeof lbAffinityVal>>,
    readonly affinityMatch: BpfMap<Decoded<typeof lbAffinityMatch>, number>,
    readonly sockRevNat: BpfMap<Decoded<typeof lb4RevnatKey>, Decoded<typeof lb4RevnatEntry>>,
    private readonly owned: boolean,
  ) {}

  static fromCollection(c: Collection): LbMaps {
    return new LbMaps(
      c.map(MAP_NAMES.services, { key: lb4Key, value: lb4Service }),
      c.map(MAP_NAMES.backends, { key: lb4BackendId, value: lb4Backend }),
      c.map(MAP_NAMES.revNat, { key: lb4RevNatIndex, value: lb4ReverseNat }),
      c.map(MAP_NAMES.maglev, { key: lb4MaglevKey, value: fdValue }),
      c.map(MAP_NAMES.affinity, { key: lb4AffinityKey, value: lbAffinityVal }),
      c.map(MAP_NAMES.affinityMatch, { key: lbAffinityMatch, value: u8 }),
      c.map(MAP_NAMES.sockRevNat, { key: lb4RevnatKey, value: lb4RevnatEntry }),
      false,
    );
  }

  /** The pinned maps of a node's pin directory, read-write, without loading programs. */
  static openPinned(pinDir: string): LbMaps {
    const opened: BpfMap<unknown, unknown>[] = [];
    const open = <K, V>(name: string, key: { size: number }, value: { size: number }) => {
      const m = openPinnedMap(join(pinDir, name), { key, value } as never) as BpfMap<K, V>;
      opened.push(m as BpfMap<unknown, unknown>);
      return m;
    };
    try {
      return new LbMaps(
        open(MAP_NAMES.services, lb4Key, lb4Service),
        open(MAP_NAMES.backends, lb4BackendId, lb4Backend),
        open(MAP_NAMES.revNat, lb4RevNatIndex, lb4ReverseNat),
        open(MAP_NAMES.maglev, lb4MaglevKey, fdValue),
        open(MAP_NAMES.affinity, lb4AffinityKey, lbAffinityVal),
        open(MAP_NAMES.affinityMatch, lbAffinityMatch, u8),
        open(MAP_NAMES.sockRevNat, lb4RevnatKey, lb4RevnatEntry),
        true,
      );
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  listBackends(): BackendListing[] {
    return this.backends
      .lookupBatch()
      .map(([id, b]) => ({
        id,
        ip: b.address,
        port: b.port,
        protocol: protoName(b.proto),
        state: stateName(b.state),
      }))
      .sort((a, b) => a.id - b.id);
  }

  listRevNat(): RevNatListing[] {
    return this.revNat
      .lookupBatch()
      .map(([index, r]) => ({ index, ip: r.address, port: r.port }))
      .sort((a, b) => a.index - b.index);
  }

  listFrontends(): FrontendListing[] {
    const backends = new Map(this.backends.lookupBatch());
    const masters = new Map<string, FrontendListing>();
    const slots: [Lb4Key, Lb4Service][] = [];
    const keyOf = (k: Lb4Key) => `${k.address}:${k.dport}/${k.proto}/${k.scope}`;
    for (const [k, v] of this.services.lookupBatch()) {
      if (k.backend_slot !== 0) {
        slots.push([k, v]);
        continue;
      }
      masters.set(keyOf(k), {
        frontend: { ip: k.address, port: k.dport, protocol: protoName(k.proto) as Protocol },
        scope: k.scope === LB_SCOPE_INT ? 'internal' : 'external',
        revNatIndex: v.rev_nat_index,
        type: typeOfFlags(v.flags),
        algorithm: v.algorithm === LbAlgorithmCode.maglev ? 'maglev' : 'random',
        affinityTimeoutSec: v.flags & SvcFlags.Affinity ? v.affinity_timeout : 0,
        flags: flagNames(v.flags, v.flags2),
        backends: [],
      });
    }
    for (const [k, v] of slots) {
      const m = masters.get(keyOf(k));
      if (!m) continue; // a slot left by an interrupted delete; the next reconcile removes it
      const b = backends.get(v.backend_id);
      m.backends.push({
        slot: k.backend_slot,
        id: v.backend_id,
        ...(b ? { ip: b.address, port: b.port, state: stateName(b.state) } : {}),
      });
    }
    const out = [...masters.values()];
    for (const m of out) m.backends.sort((a, b) => a.slot - b.slot);
    return out.sort((a, b) =>
      a.revNatIndex !== b.revNatIndex ? a.revNatIndex - b.revNatIndex : a.scope.localeCompare(b.scope),
    );
  }

  /** The maglev table of a frontend's scope (backend ids), or undefined when it has none. */
  maglevTable(revNatIndex: number, scope = LB_SCOPE_EXT): number[] | undefined {
    const id = this.maglev.lookup({ rev_nat_index: revNatIndex, scope, pad: [0, 0, 0] });
    if (id === undefined) return undefined;
    using inner = openMapById(id, { key: u32, value: u32 });
    return inner
      .lookupBatch()
      .sort((a, b) => a[0] - b[0])
      .map(([, v]) => v);
  }

  close(): void {
    if (!this.owned) return;
    for (const m of [
      this.services,
      this.backends,
      this.revNat,
      this.maglev,
      this.affinity,
      this.affinityMatch,
      this.sockRevNat,
    ])
      m.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// --- the reconciler

interface ScopeState {
  scope: number;
  master: Lb4Service;
  /** Backend ids by slot: index 0 is slot 1. */
  slots: number[];
  /** The active ids (sorted, joined) the maglev table was built from; undefined: none written. */
  maglevOf?: string;
}

interface ServiceState {
  frontend: Frontend;
  revNat: number;
  scopes: ScopeState[];
  /** Every backend id the service references (for backend reference counts). */
  backends: Set<number>;
  /** Backend ids written to the affinity match map. */
  affinity: Set<number>;
}

interface BackendState_ {
  value: Lb4Backend;
  refs: number;
}

/** Ids from 1 upwards; freed ones are reused oldest first, so a fresh id is rarely a recent one. */
class IdAllocator {
  #next = 1;
  readonly #free: number[] = [];
  readonly #used = new Set<number>();
  constructor(readonly max: number) {}

  take(): number {
    let id = this.#free.shift();
    while (id !== undefined && this.#used.has(id)) id = this.#free.shift();
    if (id === undefined) {
      while (this.#used.has(this.#next)) this.#next++;
      if (this.#next > this.max) throw new BpfError(`lb: out of ids (max ${this.max})`, 28);
      id = this.#next++;
    }
    this.#used.add(id);
    return id;
  }

  /** Marks an id found in the maps as in use. */
  claim(id: number): void {
    this.#used.add(id);
  }

  release(id: number): void {
    if (this.#used.delete(id)) this.#free.push(id);
  }
}

/** One change set across services, written in the order lb.h's API comment gives. */
class Plan {
  backendWrites = new Map<number, Lb4Backend>();
  revNatWrites: [number, Decoded<typeof lb4ReverseNat>][] = [];
  matchAdds: Decoded<typeof lbAffinityMatch>[] = [];
  activeSlotWrites: [Lb4Key, Lb4Service][] = [];
  maglevSwaps: { key: Decoded<typeof lb4MaglevKey>; table: Uint32Array }[] = [];
  /** Internal-scope masters go first: a TwoScopes flag on the external one must find them. */
  masterWrites: [Lb4Key, Lb4Service][] = [];
  masterDeletes: Lb4Key[] = [];
  restSlotWrites: [Lb4Key, Lb4Service][] = [];
  slotDeletes: Lb4Key[] = [];
  maglevDeletes: Decoded<typeof lb4MaglevKey>[] = [];
  matchDeletes: Decoded<typeof lbAffinityMatch>[] = [];
  revNatDeletes: number[] = [];
  backendDeletes: number[] = [];
  /** Ids freed by this plan, reusable once it is applied (not by a later service in it). */
  releasedBackendIds: number[] = [];
  releasedRevNats: number[] = [];
}

export interface ServiceMapsOptions {
  /** The node's bpffs directory (the endpoint object's too), e.g. /sys/fs/bpf/hypha/<node>. */
  pinDir: string;
  objectPath?: string;
  /** Entries of every maglev table: a prime. Default 251 (Cilium's is 16381). */
  maglevTableSize?: number;
  sizes?: Partial<LbMapSizes>;
}

/** Entries per batch syscall: big enough to amortize, small enough to keep each call short. */
const BATCH = 65_536;

function batched<T>(items: readonly T[], fn: (chunk: readonly T[]) => void): void {
  for (let i = 0; i < items.length; i += BATCH) fn(items.slice(i, i + BATCH));
}

/**
 * The socket load balancer of a node: bpf/sock.o loaded with its maps pinned under the
 * node's pin directory, its programs attached to cgroups through pinned links (so a
 * restart swaps them in place), and services applied as differences.
 */
export class ServiceMaps implements Disposable {
  readonly pinDir: string;
  readonly maps: LbMaps;
  readonly maglevTableSize: number;
  readonly #coll: Collection;
  readonly #services = new Map<string, ServiceState>();
  readonly #backends = new Map<number, BackendState_>();
  readonly #backendIds = new Map<string, number>();
  #backendIdAlloc: IdAllocator;
  #revNatAlloc: IdAllocator;
  readonly #revNatMax: number;
  readonly #sizes: LbMapSizes;
  #lastWrites = 0;

  private constructor(coll: Collection, o: ServiceMapsOptions, sizes: LbMapSizes, tableSize: number) {
    this.#coll = coll;
    this.pinDir = o.pinDir;
    this.maglevTableSize = tableSize;
    this.maps = LbMaps.fromCollection(coll);
    this.#sizes = sizes;
    this.#revNatMax = Math.max(sizes.revNat, 1);
    this.#backendIdAlloc = new IdAllocator(0xffffffff);
    this.#revNatAlloc = new IdAllocator(this.#revNatMax);
    this.#restore();
  }

  /** Loads sock.o, reusing the maps already pinned under pinDir (and their services). */
  static open(o: ServiceMapsOptions): ServiceMaps {
    const object = o.objectPath ?? defaultObjectPath();
    if (!existsSync(object)) throw new Error(`socket LB object ${object} is missing: run npm run build`);
    const tableSize = o.maglevTableSize ?? 251;
    if (!isPrime(tableSize) || tableSize > 131071)
      throw new ValidationError('ServiceMaps', 'maglevTableSize', `${tableSize} is not a prime up to 131071`);
    const sizes = { ...LB_DEFAULT_SIZES, ...o.sizes };
    const maxEntries: Record<string, number> = {};
    for (const [k, name] of Object.entries(MAP_NAMES)) maxEntries[name] = sizes[k as keyof LbMapSizes];
    const coll = loadCollection(object, {
      pinPath: o.pinDir,
      maxEntries,
      constants: { lb_maglev_table_size: tableSize },
    });
    try {
      return new ServiceMaps(coll, o, sizes, tableSize);
    } catch (err) {
      coll.close();
      throw err;
    }
  }

  // --- attachment

  #linkDir(cgroup: string): string {
    // bpffs takes no dots in names (they are reserved): keep letters, digits, '-' and '_'.
    return join(this.pinDir, 'sock-links', cgroup.replace(/[^A-Za-z0-9_-]/g, '_'));
  }

  /**
   * Attaches the four programs to a cgroup v2 directory; links are pinned, so the programs
   * outlive the agent, and a restarted agent's attach swaps its programs in atomically.
   */
  attach(cgroupPath: string): void {
    const dir = this.#linkDir(cgroupPath);
    mkdirSync(dir, { recursive: true });
    for (const name of SOCK_PROGRAMS) {
      const program = this.#coll.program(name);
      const path = join(dir, name);
      if (existsSync(path)) {
        using link = openPinnedLink(path);
        link.update(program);
        continue;
      }
      const link = attachCgroup({ cgroup: cgroupPath, program });
      try {
        link.pin(path);
      } finally {
        link.close(); // pinned: stays attached
      }
    }
  }

  /** Detaches from one cgroup, or from every cgroup this pin directory has links for. */
  detach(cgroupPath?: string): void {
    const root = join(this.pinDir, 'sock-links');
    const dirs = cgroupPath
      ? [this.#linkDir(cgroupPath)]
      : existsSync(root)
        ? readdirSync(root).map((d) => join(root, d))
        : [];
    for (const dir of dirs) {
      if (!existsSync(dir)) continue;
      for (const name of readdirSync(dir)) {
        const link = openPinnedLink(join(dir, name));
        link.unpin();
        link.close();
      }
      rmdirSync(dir);
    }
  }

  // --- services

  /** Throws the ValidationError upsertServices would throw for this spec. */
  validate(spec: ServiceSpec): void {
    validateServiceSpec(spec);
  }

  upsertService(spec: ServiceSpec): ServiceIds {
    return this.upsertServices([spec])[0]!;
  }

  /**
   * Applies services as differences from what the maps hold: unchanged ones write nothing,
   * a changed backend a handful of entries; all services' writes go out in batches.
   */
  upsertServices(specs: readonly ServiceSpec[]): ServiceIds[] {
    for (const s of specs) validateServiceSpec(s);
    return this.#change((plan) => specs.map((s) => this.#planUpsert(s, plan)));
  }

  /** Removes a frontend; false when it was not there. */
  deleteService(frontend: Frontend): boolean {
    return this.deleteServices([frontend]) === 1;
  }

  deleteServices(frontends: readonly Frontend[]): number {
    return this.#change((plan) => {
      let n = 0;
      for (const f of frontends) {
        const st = this.#services.get(frontendId(f));
        if (!st) continue;
        n++;
        this.#planDelete(st, plan);
      }
      return n;
    });
  }

  /**
   * Plans a change against the in-memory view and writes it. A failure on the way (a map
   * full, an id space exhausted) leaves the view ahead of the maps: it is rebuilt from them,
   * so the next change is planned against what the kernel really holds.
   */
  #change<T>(fn: (plan: Plan) => T): T {
    const plan = new Plan();
    try {
      const out = fn(plan);
      this.#apply(plan);
      return out;
    } catch (err) {
      this.#services.clear();
      this.#backends.clear();
      this.#backendIds.clear();
      this.#backendIdAlloc = new IdAllocator(0xffffffff);
      this.#revNatAlloc = new IdAllocator(this.#revNatMax);
      this.#restore();
      throw err;
    }
  }

  /** Map entries written or deleted by the last change (a maglev table swap counts as one). */
  get lastWrites(): number {
    return this.#lastWrites;
  }

  /** The frontends this instance manages (from its view of the maps). */
  frontends(): Frontend[] {
    return [...this.#services.values()].map((s) => ({ ...s.frontend }));
  }

  /** A reader of the shared events ring (drops with reason 158 come from here too). */
  eventReader(): RingBufReader {
    return new RingBufReader(this.#coll.rawMap('hypha_events'));
  }

  #backendId(ip: string, port: number, proto: number): number {
    const k = backendAddrId(ip, port, proto);
    let id = this.#backendIds.get(k);
    if (id === undefined) {
      id = this.#backendIdAlloc.take();
      this.#backendIds.set(k, id);
    }
    return id;
  }

  #planUpsert(spec: ServiceSpec, plan: Plan): ServiceIds {
    const f = spec.frontend;
    const proto = PROTO[f.protocol];
    const fid = frontendId(f);
    let st = this.#services.get(fid);
    if (!st) {
      const revNat = this.#revNatAlloc.take();
      st = { frontend: { ...f }, revNat, scopes: [], backends: new Set(), affinity: new Set() };
      this.#services.set(fid, st);
      plan.revNatWrites.push([revNat, { address: f.ip, port: f.port, pad: 0 }]);
    }

    // Backends: ids, and their entries when new or changed.
    const ids = spec.backends.map((b) => this.#backendId(b.ip, b.port, proto));
    const wanted = new Set(ids);
    spec.backends.forEach((b, i) => {
      const id = ids[i]!;
      const value = { address: b.ip, port: b.port, proto, state: BackendStateCode[b.state ?? 'active'] };
      const cur = this.#backends.get(id);
      if (!cur) this.#backends.set(id, { value, refs: 0 });
      else if (cur.value.state === value.state) return;
      else cur.value = value;
      plan.backendWrites.set(id, value);
    });
    for (const id of wanted) if (!st.backends.has(id)) this.#backends.get(id)!.refs++;
    for (const id of st.backends) if (!wanted.has(id)) this.#unref(id, plan);
    st.backends = wanted;

    // Flags, and which backends each scope holds.
    const isClusterIp = spec.type === 'ClusterIP';
    const etp = spec.externalTrafficPolicy ?? 'Cluster';
    const itp = spec.internalTrafficPolicy ?? 'Cluster';
    const twoScopes = !isClusterIp && etp !== itp;
    const affinity = (spec.affinityTimeoutSec ?? 0) > 0;
    const flags =
      SvcFlags.Routable |
      (spec.type === 'NodePort' ? SvcFlags.NodePort : 0) |
      (spec.type === 'ExternalIP' ? SvcFlags.ExternalIp : 0) |
      (spec.type === 'LoadBalancer' ? SvcFlags.LoadBalancer : 0) |
      (!isClusterIp && etp === 'Local' ? SvcFlags.ExtLocalScope : 0) |
      (affinity ? SvcFlags.Affinity : 0);
    const flags2 = (itp === 'Local' ? SvcFlags2.IntLocalScope : 0) | (twoScopes ? SvcFlags2.TwoScopes : 0);
    const algorithm = LbAlgorithmCode[spec.algorithm ?? 'random'];
    const members = (policy: TrafficPolicy) =>
      spec.backends.map((b, i) => ({ b, id: ids[i]! })).filter(({ b }) => policy === 'Cluster' || b.local);
    const scopeMembers = isClusterIp
      ? [members(itp)]
      : twoScopes
        ? [members(etp), members(itp)]
        : [members(etp)];

    const next: ScopeState[] = [];
    scopeMembers.forEach((m, scope) => {
      const active = m.filter(({ b }) => (b.state ?? 'active') === 'active').map(({ id }) => id);
      const inactive = m.filter(({ b }) => (b.state ?? 'active') !== 'active').map(({ id }) => id);
      const master: Lb4Service = {
        backend_id: 0,
        affinity_timeout: affinity ? spec.affinityTimeoutSec! : 0,
        count: active.length,
        qcount: inactive.length,
        rev_nat_index: st.revNat,
        flags,
        flags2,
        algorithm,
        pad: 0,
      };
      const cur = st.scopes.find((s) => s.scope === scope);
      const state: ScopeState = { scope, master, slots: [] };
      if (cur?.maglevOf !== undefined) state.maglevOf = cur.maglevOf;
      this.#planScope(st, cur, state, active, inactive, plan);
      if (algorithm === LbAlgorithmCode.maglev) {
        const of = [...active].sort((a, b) => a - b).join(',');
        if (state.maglevOf !== of) {
          const named = active.map((id) => {
            const v = this.#backends.get(id)!.value;
            return { id, name: `${v.address}:${v.port}` };
          });
          plan.maglevSwaps.push({
            key: { rev_nat_index: st.revNat, scope, pad: [0, 0, 0] },
            table: maglevTable(named, this.maglevTableSize),
          });
          state.maglevOf = of;
        }
      } else if (state.maglevOf !== undefined) {
        plan.maglevDeletes.push({ rev_nat_index: st.revNat, scope, pad: [0, 0, 0] });
        delete state.maglevOf;
      }
      next.push(state);
    });
    for (const old of st.scopes) {
      if (next.some((s) => s.scope === old.scope)) continue;
      // After the remaining master is rewritten without TwoScopes: never a master pointing nowhere.
      plan.slotDeletes.push(lbKey(f, 0, old.scope));
      for (let i = 0; i < old.slots.length; i++) plan.slotDeletes.push(lbKey(f, i + 1, old.scope));
      if (old.maglevOf !== undefined)
        plan.maglevDeletes.push({ rev_nat_index: st.revNat, scope: old.scope, pad: [0, 0, 0] });
    }
    st.scopes = next;

    // Affinity: the backends a remembered choice may still go to.
    const match = new Set(affinity ? next.flatMap((s) => s.slots.slice(0, s.master.count)) : []);
    for (const id of match)
      if (!st.affinity.has(id)) plan.matchAdds.push({ backend_id: id, rev_nat_index: st.revNat });
    for (const id of st.affinity)
      if (!match.has(id)) plan.matchDeletes.push({ backend_id: id, rev_nat_index: st.revNat });
    st.affinity = match;
    return { revNatIndex: st.revNat, backendIds: ids };
  }

  /**
   * Places the scope's backends in slots, moving as few as possible: an active backend keeps
   * its slot, a leaving one's slot takes a newcomer or the last active one.
   */
  #planScope(
    st: ServiceState,
    cur: ScopeState | undefined,
    next: ScopeState,
    active: number[],
    inactive: number[],
    plan: Plan,
  ): void {
    const f = st.frontend;
    const oldSlots = cur?.slots ?? [];
    const oldCount = cur?.master.count ?? 0;
    const activeSet = new Set(active);
    const arr = oldSlots.slice(0, oldCount).map((id) => (activeSet.has(id) ? id : 0));
    const placed = new Set(arr.filter((id) => id !== 0));
    const newcomers = active.filter((id) => !placed.has(id));
    for (let i = 0; i < arr.length && newcomers.length; i++) if (arr[i] === 0) arr[i] = newcomers.shift()!;
    for (;;) {
      while (arr.length && arr[arr.length - 1] === 0) arr.pop();
      const hole = arr.indexOf(0);
      if (hole < 0) break;
      arr[hole] = arr.pop()!;
    }
    arr.push(...newcomers);
    const inactiveSet = new Set(inactive);
    const rest = oldSlots.slice(oldCount).filter((id) => inactiveSet.has(id));
    const restPlaced = new Set(rest);
    rest.push(...inactive.filter((id) => !restPlaced.has(id)));
    next.slots = [...arr, ...rest];

    for (let i = 0; i < next.slots.length; i++) {
      const id = next.slots[i]!;
      if (oldSlots[i] === id) continue;
      const entry: [Lb4Key, Lb4Service] = [lbKey(f, i + 1, next.scope), slotValue(id, st.revNat)];
      (i < arr.length ? plan.activeSlotWrites : plan.restSlotWrites).push(entry);
    }
    for (let i = next.slots.length; i < oldSlots.length; i++)
      plan.slotDeletes.push(lbKey(f, i + 1, next.scope));
    if (!cur || !sameService(cur.master, next.master)) {
      const entry: [Lb4Key, Lb4Service] = [lbKey(f, 0, next.scope), next.master];
      if (next.scope === LB_SCOPE_INT) plan.masterWrites.unshift(entry);
      else plan.masterWrites.push(entry);
    }
  }

  #planDelete(st: ServiceState, plan: Plan): void {
    const f = st.frontend;
    // The external master first: from then on no program finds the service.
    for (const s of [...st.scopes].sort((a, b) => a.scope - b.scope)) {
      plan.masterDeletes.push(lbKey(f, 0, s.scope));
      for (let i = 0; i < s.slots.length; i++) plan.slotDeletes.push(lbKey(f, i + 1, s.scope));
      if (s.maglevOf !== undefined)
        plan.maglevDeletes.push({ rev_nat_index: st.revNat, scope: s.scope, pad: [0, 0, 0] });
    }
    for (const id of st.affinity) plan.matchDeletes.push({ backend_id: id, rev_nat_index: st.revNat });
    for (const id of st.backends) this.#unref(id, plan);
    plan.revNatDeletes.push(st.revNat);
    this.#services.delete(frontendId(f));
    plan.releasedRevNats.push(st.revNat);
  }

  #unref(id: number, plan: Plan): void {
    const b = this.#backends.get(id);
    if (!b) return;
    if (--b.refs > 0) return;
    this.#backends.delete(id);
    this.#backendIds.delete(backendAddrId(b.value.address, b.value.port, b.value.proto));
    plan.releasedBackendIds.push(id);
    plan.backendWrites.delete(id);
    plan.backendDeletes.push(id);
  }

  #apply(p: Plan): void {
    try {
      this.#write(p);
    } catch (err) {
      // A full hash map answers E2BIG: say which one, and how big it is.
      if (!(err instanceof BpfError && err.errno === 7)) throw err;
      const full = (Object.keys(MAP_NAMES) as (keyof LbMapSizes)[]).find((k) =>
        err.message.includes(MAP_NAMES[k].slice(0, 15)),
      );
      if (!full) throw err;
      throw new BpfError(`lb: the ${full} map is full (${this.#sizes[full]} entries)`, 7, undefined, {
        cause: err,
      });
    }
  }

  #write(p: Plan): void {
    const m = this.maps;
    this.#lastWrites =
      p.backendWrites.size +
      p.revNatWrites.length +
      p.matchAdds.length +
      p.activeSlotWrites.length +
      p.maglevSwaps.length +
      p.masterDeletes.length +
      p.masterWrites.length +
      p.restSlotWrites.length +
      p.slotDeletes.length +
      p.maglevDeletes.length +
      p.matchDeletes.length +
      p.revNatDeletes.length +
      p.backendDeletes.length;
    // New and active backends before anything points at them; ones going inactive after
    // the slots and tables have moved off them, so no selection meets them half-way.
    const backends = [...p.backendWrites];
    const leaving = backends.filter(([, b]) => b.state !== BackendStateCode.active);
    batched(
      backends.filter(([, b]) => b.state === BackendStateCode.active),
      (c) => m.backends.updateBatch(c),
    );
    batched(p.revNatWrites, (c) => m.revNat.updateBatch(c));
    batched(
      p.matchAdds.map((k) => [k, 1] as const),
      (c) => m.affinityMatch.updateBatch(c),
    );
    batched(p.activeSlotWrites, (c) => m.services.updateBatch(c));
    for (const { key, table } of p.maglevSwaps) this.#swapMaglev(key, table);
    // A deleted service's master goes first, so no program finds it while its slots go.
    batched(p.masterDeletes, (c) => deleteAll(m.services, c));
    batched(p.masterWrites, (c) => m.services.updateBatch(c));
    batched(p.restSlotWrites, (c) => m.services.updateBatch(c));
    batched(leaving, (c) => m.backends.updateBatch(c));
    batched(p.slotDeletes, (c) => deleteAll(m.services, c));
    batched(p.maglevDeletes, (c) => deleteAll(m.maglev, c));
    batched(p.matchDeletes, (c) => deleteAll(m.affinityMatch, c));
    batched(p.revNatDeletes, (c) => deleteAll(m.revNat, c));
    batched(p.backendDeletes, (c) => deleteAll(m.backends, c));
    for (const id of p.releasedBackendIds) this.#backendIdAlloc.release(id);
    for (const id of p.releasedRevNats) this.#revNatAlloc.release(id);
  }

  /** A new table, filled, then swapped in with one update: lookups see the old or the new one whole. */
  #swapMaglev(key: Decoded<typeof lb4MaglevKey>, table: Uint32Array): void {
    using inner = createMap({
      type: MapType.Array,
      name: 'hypha_lb4_mgl_in',
      key: u32,
      value: u32,
      maxEntries: table.length,
      flags: BPF_F_INNER_MAP,
    });
    const keys = new Uint8Array(table.length * 4);
    const kv = new DataView(keys.buffer);
    for (let i = 0; i < table.length; i++) kv.setUint32(i * 4, i, true);
    inner.updateBatchRaw(
      keys,
      new Uint8Array(table.buffer, table.byteOffset, table.byteLength),
      table.length,
    );
    this.maps.maglev.update(key, inner.fd);
  }

  /** Rebuilds ids, slots and reference counts from the pinned maps (after a restart). */
  #restore(): void {
    const m = this.maps;
    for (const [id, value] of m.backends.lookupBatch()) {
      this.#backends.set(id, { value, refs: 0 });
      this.#backendIds.set(backendAddrId(value.address, value.port, value.proto), id);
      this.#backendIdAlloc.claim(id);
    }
    const entries = m.services.lookupBatch();
    const byFrontend = new Map<string, { f: Frontend; scopes: Map<number, ScopeState> }>();
    // Slots carry their service's rev-NAT index: a number to find it by, not a key string.
    const byRevNat = new Map<number, { f: Frontend; scopes: Map<number, ScopeState> }>();
    for (const [k, v] of entries) {
      if (k.backend_slot !== 0) continue;
      const protocol = protoName(k.proto);
      if (typeof protocol === 'number') continue;
      const f = { ip: k.address, port: k.dport, protocol };
      const id = frontendId(f);
      let e = byFrontend.get(id);
      if (!e) {
        e = { f, scopes: new Map() };
        byFrontend.set(id, e);
        byRevNat.set(v.rev_nat_index, e);
      }
      e.scopes.set(k.scope, { scope: k.scope, master: v, slots: new Array(v.count + v.qcount).fill(0) });
    }
    for (const [k, v] of entries) {
      if (k.backend_slot === 0) continue;
      const e = byRevNat.get(v.rev_nat_index);
      if (!e || e.f.ip !== k.address || e.f.port !== k.dport) continue;
      const s = e.scopes.get(k.scope);
      if (s && k.backend_slot <= s.slots.length) s.slots[k.backend_slot - 1] = v.backend_id;
    }
    const matches = new Map<number, Set<number>>();
    for (const [k] of m.affinityMatch.lookupBatch()) {
      const s = matches.get(k.rev_nat_index) ?? new Set<number>();
      matches.set(k.rev_nat_index, s);
      s.add(k.backend_id);
    }
    const maglev = new Set(m.maglev.lookupBatch().map(([k]) => `${k.rev_nat_index}/${k.scope}`));
    for (const [id, e] of byFrontend) {
      const scopes = [...e.scopes.values()].sort((a, b) => a.scope - b.scope);
      const revNat = scopes[0]!.master.rev_nat_index;
      for (const s of scopes) {
        if (maglev.has(`${revNat}/${s.scope}`) && this.#maglevSizeOk(revNat, s.scope))
          s.maglevOf = s.slots
            .slice(0, s.master.count)
            .sort((a, b) => a - b)
            .join(',');
      }
      const backends = new Set(scopes.flatMap((s) => s.slots).filter((b) => this.#backends.has(b)));
      for (const b of backends) this.#backends.get(b)!.refs++;
      this.#revNatAlloc.claim(revNat);
      this.#services.set(id, {
        frontend: e.f,
        revNat,
        scopes,
        backends,
        affinity: matches.get(revNat) ?? new Set(),
      });
    }
    // Backends no service points at are left by a change that failed half-way (a full
    // map): nothing can select them, and they take room the next change needs.
    const orphans = [...this.#backends].filter(([, b]) => b.refs === 0).map(([id]) => id);
    deleteAll(m.backends, orphans);
    for (const id of orphans) {
      const v = this.#backends.get(id)!.value;
      this.#backends.delete(id);
      this.#backendIds.delete(backendAddrId(v.address, v.port, v.proto));
      this.#backendIdAlloc.release(id);
    }
  }

  #maglevSizeOk(revNat: number, scope: number): boolean {
    const id = this.maps.maglev.lookup({ rev_nat_index: revNat, scope, pad: [0, 0, 0] });
    if (id === undefined) return false;
    using inner = openMapById(id, { key: u32, value: u32 });
    return inner.maxEntries === this.maglevTableSize;
  }

  /** Leaves programs attached (pinned links) and maps pinned: the agent's restart path. */
  close(): void {
    this.maps.close();
    this.#coll.close();
  }

  /** Detaches from every cgroup and removes the load balancer's pins (the shared events ring stays). */
  destroy(): void {
    this.detach();
    this.#coll.close();
    for (const name of Object.values(MAP_NAMES)) unpin(join(this.pinDir, name));
    unpin(join(this.pinDir, 'sock-links'));
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A slot names its backend (and service); the master alone carries the rest. */
function slotValue(backendId: number, revNat: number): Lb4Service {
  return {
    backend_id: backendId,
    affinity_timeout: 0,
    count: 0,
    qcount: 0,
    rev_nat_index: revNat,
    flags: 0,
    flags2: 0,
    algorithm: 0,
    pad: 0,
  };
}

function sameService(a: Lb4Service, b: Lb4Service): boolean {
  return (
    a.backend_id === b.backend_id &&
    a.affinity_timeout === b.affinity_timeout &&
    a.count === b.count &&
    a.qcount === b.qcount &&
    a.rev_nat_index === b.rev_nat_index &&
    a.flags === b.flags &&
    a.flags2 === b.flags2 &&
    a.algorithm === b.algorithm
  );
}

/** Batch delete that tolerates keys already gone (a crash between writes leaves some). */
function deleteAll<K>(map: BpfMap<K, unknown>, keys: readonly K[]): void {
  if (keys.length === 0) return;
  try {
    map.deleteBatch(keys);
  } catch (err) {
    if (!(err instanceof BpfError && err.errno === 2)) throw err;
    for (const k of keys) map.delete(k);
  }
}
