/**
 * The node's datapath: the endpoint programs of dist/bpf/lxc.o, their maps pinned under
 * the node's bpffs directory, and typed operations on them. A restarted agent calls
 * `open` again: pinned maps are reused (their state survives) and programs are swapped
 * in place on the veths, so established traffic keeps flowing.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  attachTc,
  type BpfMap,
  type Collection,
  decode,
  loadCollection,
  MapType,
  openPinnedMap,
  type PerCpuMap,
  type RecordBatch,
  RingBufReader,
  u32,
  u64,
  unpin,
} from '../bpf/index.js';
import { ValidationError } from '../errors.js';
import type { PolicyEntry } from '../policy/index.js';
import {
  CT_SCOPE_EGRESS,
  EP_ENFORCE_EGRESS,
  EP_ENFORCE_INGRESS,
  EVENT_F_TRACE,
  EventType,
  POLICY_AUTH,
  POLICY_DENY,
  POLICY_REDIRECT,
} from './constants.js';
import {
  authInfo,
  authKey,
  ctEntry,
  ctKey4,
  EVENT_CAPTURE_LEN,
  endpointInfo,
  endpointKey,
  eventHdr,
  ipcacheInfo,
  ipcacheKey4,
  metricsKey,
  metricsValue,
  policyEntry,
  policyKey,
} from './layout.js';
import { type MetricsTotal, metricsTotals } from './pinned.js';

type Decoded<C> = C extends { decode(d: DataView, o: number): infer T } ? T : never;
export type EndpointInfo = Decoded<typeof endpointInfo>;
export type CtKey = Decoded<typeof ctKey4>;
export type CtEntry = Decoded<typeof ctEntry>;
export type EventHeader = Decoded<typeof eventHdr>;

/** One event as the agent reports it; the record's `flags` are the decoder's business. */
export interface DatapathEvent extends Omit<EventHeader, 'flags'> {
  /** The first bytes of the packet (Ethernet frame). */
  packet: Uint8Array;
}

export function defaultObjectPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return join(here, '../../bpf/lxc.o'); // dist/src/datapath -> dist/bpf
}

export interface EndpointSpec {
  id: number;
  ip4: string;
  identity: number;
  /** Host-side veth and the namespace it is in (the node's; undefined: this process's). */
  hostIfname: string;
  hostIfindex: number;
  netns?: string;
  enforceIngress: boolean;
  enforceEgress: boolean;
}

/** The policy map key of an entry: the prefix covers endpoint, direction and identity, then protocol and port. */
export function policyKeyOf(
  endpoint: number,
  e: Pick<PolicyEntry, 'direction' | 'identity' | 'protocol' | 'port' | 'portPrefixLen'>,
) {
  const prefixlen = 64 + (e.protocol === 0 ? 0 : e.portPrefixLen === 0 ? 8 : 16 + e.portPrefixLen);
  return {
    prefixlen,
    endpoint,
    egress: e.direction === 'egress' ? 1 : 0,
    pad1: 0,
    identity: e.identity,
    protocol: e.protocol,
    pad2: 0,
    dport: e.port,
  };
}

/** The proxies' ports; HTTP has one per direction (the listener tells the proxy whose policy applies). */
export interface ProxyPorts {
  http?: number;
  /** For ingress redirects (default: `http`). */
  httpIngress?: number;
  dns?: number;
}

function proxyPortOf(e: PolicyEntry, ports: ProxyPorts): number {
  if (e.proxy === 'dns') return ports.dns ?? 0;
  return (e.direction === 'ingress' ? (ports.httpIngress ?? ports.http) : ports.http) ?? 0;
}

export function policyValueOf(e: PolicyEntry, proxyPorts: ProxyPorts) {
  const key = policyKeyOf(0, e);
  return {
    cookie: e.cookie,
    proxy_port: e.verdict === 'redirect' ? proxyPortOf(e, proxyPorts) : 0,
    flags:
      e.verdict === 'deny'
        ? POLICY_DENY
        : e.verdict === 'redirect'
          ? POLICY_REDIRECT
          : e.verdict === 'auth'
            ? POLICY_AUTH
            : 0,
    auth_type: e.authType ?? 0,
    prefixlen: key.prefixlen,
    pad: [0, 0, 0],
  };
}

/**
 * hypha_metrics was a per-CPU hash before it became a per-CPU array; libbpf refuses to reuse
 * a pin whose type differs. It holds counters only, so an old one is dropped, not migrated.
 */
function unpinOutdatedMetrics(pinDir: string): void {
  const path = join(pinDir, 'hypha_metrics');
  if (!existsSync(path)) return;
  let type: number;
  {
    using m = openPinnedMap(path, { key: metricsKey, value: metricsValue });
    type = m.type;
  }
  if (type !== MapType.PerCpuArray) unpin(path);
}

export interface DatapathOptions {
  /** bpffs directory for this node's maps, e.g. /sys/fs/bpf/hypha/<node>. */
  pinDir: string;
  objectPath?: string;
  /** Conntrack lifetimes and report interval, seconds. */
  ct?: { tcp?: number; syn?: number; closing?: number; other?: number; reportInterval?: number };
  /**
   * The DNS proxy's local address and port: pod DNS under a dns rule is translated to it
   * (bpf/include/dnsproxy.h). Without it such DNS is dropped, never let through.
   */
  dnsProxy?: { ip: string; port: number };
}

/** A DNS proxy address and port as dnsproxy.h's constants hold them (network order). */
function dnsProxyConstants(p: { ip: string; port: number }): Record<string, Uint8Array> {
  const octets = p.ip.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255))
    throw new ValidationError('datapath', 'dnsProxy.ip', `"${p.ip}" is not an IPv4 address`);
  if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535)
    throw new ValidationError('datapath', 'dnsProxy.port', `${p.port} is not a port`);
  return {
    dnsproxy_addr4: Uint8Array.from(octets),
    dnsproxy_port: Uint8Array.from([p.port >> 8, p.port & 0xff]),
  };
}

export class Datapath implements Disposable {
  readonly pinDir: string;
  readonly #coll: Collection;
  readonly endpoints: BpfMap<{ ifindex: number }, EndpointInfo>;
  readonly ipcache: BpfMap<Decoded<typeof ipcacheKey4>, Decoded<typeof ipcacheInfo>>;
  readonly policy: BpfMap<Decoded<typeof policyKey>, Decoded<typeof policyEntry>>;
  readonly ct: BpfMap<CtKey, CtEntry>;
  readonly auth: BpfMap<Decoded<typeof authKey>, Decoded<typeof authInfo>>;
  readonly metrics: PerCpuMap<number, Decoded<typeof metricsValue>>;
  /** The proxies' ports, written into redirect entries (a redirect to port 0 is dropped). */
  readonly proxyPorts: ProxyPorts = {};
  readonly #links = new Map<number, ReturnType<typeof attachTc>[]>();

  private constructor(coll: Collection, pinDir: string) {
    this.#coll = coll;
    this.pinDir = pinDir;
    this.endpoints = coll.map('hypha_endpoints', { key: endpointKey, value: endpointInfo });
    this.ipcache = coll.map('hypha_ipcache4', { key: ipcacheKey4, value: ipcacheInfo });
    this.policy = coll.map('hypha_policy', { key: policyKey, value: policyEntry });
    this.ct = coll.map('hypha_ct4', { key: ctKey4, value: ctEntry });
    this.auth = coll.map('hypha_auth', { key: authKey, value: authInfo });
    this.metrics = coll.map('hypha_metrics', { key: metricsKey, value: metricsValue }, true);
    this.#eventsLost = coll.map('hypha_events_lost', { key: u32, value: u64 }, true);
  }

  readonly #eventsLost: PerCpuMap<number, bigint>;

  /** Events the datapath could not put in the ring (it was full), since the map was created. */
  eventsLost(): number {
    return Number(this.#eventsLost.sum(0));
  }

  /** Loads the programs, reusing maps already pinned under pinDir. */
  static open(o: DatapathOptions): Datapath {
    const object = o.objectPath ?? defaultObjectPath();
    if (!existsSync(object)) throw new Error(`datapath object ${object} is missing: run npm run build`);
    const constants: Record<string, number | Uint8Array> = {};
    if (o.ct?.tcp !== undefined) constants.ct_lifetime_tcp = o.ct.tcp;
    if (o.ct?.syn !== undefined) constants.ct_lifetime_syn = o.ct.syn;
    if (o.ct?.closing !== undefined) constants.ct_lifetime_closing = o.ct.closing;
    if (o.ct?.other !== undefined) constants.ct_lifetime_other = o.ct.other;
    if (o.ct?.reportInterval !== undefined) constants.ct_report_interval = o.ct.reportInterval;
    if (o.dnsProxy) Object.assign(constants, dnsProxyConstants(o.dnsProxy));
    unpinOutdatedMetrics(o.pinDir);
    const coll = loadCollection(object, { pinPath: o.pinDir, constants });
    try {
      const dp = new Datapath(coll, o.pinDir);
      if (o.dnsProxy) dp.proxyPorts.dns = o.dnsProxy.port;
      return dp;
    } catch (err) {
      coll.close();
      throw err;
    }
  }

  /** Writes the endpoint's entry, then attaches (or swaps in place) both programs on its veth. */
  attachEndpoint(ep: EndpointSpec): void {
    this.endpoints.update(
      { ifindex: ep.hostIfindex },
      {
        ip4: ep.ip4,
        identity: ep.identity,
        id: ep.id,
        flags: (ep.enforceIngress ? EP_ENFORCE_INGRESS : 0) | (ep.enforceEgress ? EP_ENFORCE_EGRESS : 0),
        pad: 0,
        mac: [0, 0, 0, 0, 0, 0],
        pad2: [0, 0],
      },
    );
    const base = { interface: ep.hostIfname, ...(ep.netns ? { netns: ep.netns } : {}), replace: true };
    const links = [
      attachTc({ ...base, direction: 'ingress', program: this.#coll.program('from_container') }),
      attachTc({ ...base, direction: 'egress', program: this.#coll.program('to_container') }),
    ];
    for (const l of this.#links.get(ep.id) ?? []) l.disconnect();
    this.#links.set(ep.id, links);
  }

  /** Updates enforcement flags or identity without touching the programs. */
  updateEndpoint(
    ifindex: number,
    change: Partial<Pick<EndpointSpec, 'identity' | 'enforceIngress' | 'enforceEgress'>>,
  ): void {
    const cur = this.endpoints.get({ ifindex });
    let flags = cur.flags;
    if (change.enforceIngress !== undefined)
      flags = change.enforceIngress ? flags | EP_ENFORCE_INGRESS : flags & ~EP_ENFORCE_INGRESS;
    if (change.enforceEgress !== undefined)
      flags = change.enforceEgress ? flags | EP_ENFORCE_EGRESS : flags & ~EP_ENFORCE_EGRESS;
    this.endpoints.update({ ifindex }, { ...cur, flags, identity: change.identity ?? cur.identity });
  }

  /** Detaches the programs and forgets the endpoint and its policy entries. */
  detachEndpoint(id: number, ifindex: number): void {
    for (const l of this.#links.get(id) ?? []) l.close();
    this.#links.delete(id);
    this.endpoints.delete({ ifindex });
    for (const [k] of this.policyEntries(id)) this.policy.delete(k);
  }

  /** Applies a policy diff: removed entries first, then added (so a changed entry ends up new). */
  applyPolicy(
    endpoint: number,
    diff: { added: PolicyEntry[]; removed: PolicyEntry[] },
    proxyPorts: ProxyPorts = this.proxyPorts,
  ): void {
    for (const e of diff.removed) this.policy.delete(policyKeyOf(endpoint, e));
    if (diff.added.length === 0) return;
    // LPM tries have no batch update in this kernel; single updates stay a few µs each.
    for (const e of diff.added) this.policy.update(policyKeyOf(endpoint, e), policyValueOf(e, proxyPorts));
  }

  /** The policy map entries of one endpoint (or all). */
  policyEntries(endpoint?: number): [Decoded<typeof policyKey>, Decoded<typeof policyEntry>][] {
    return [...this.policy.entries()].filter(([k]) => endpoint === undefined || k.endpoint === endpoint);
  }

  upsertIpcache(cidr: string, identity: number, tunnelEndpoint = '0.0.0.0'): void {
    const [ip, len] = cidr.split('/');
    const prefixLen = Number(len ?? 32);
    this.ipcache.update(
      { prefixlen: prefixLen, ip4: ip! },
      { identity, tunnel_endpoint: tunnelEndpoint, flags: 0, pad: [0, 0, 0] },
    );
  }

  deleteIpcache(cidr: string): boolean {
    const [ip, len] = cidr.split('/');
    const prefixLen = Number(len ?? 32);
    return this.ipcache.delete({ prefixlen: prefixLen, ip4: ip! });
  }

  ipcacheEntries(): { cidr: string; identity: number; tunnelEndpoint: string }[] {
    return [...this.ipcache.entries()].map(([k, v]) => ({
      cidr: `${k.ip4}/${k.prefixlen}`,
      identity: v.identity,
      tunnelEndpoint: v.tunnel_endpoint,
    }));
  }

  /** Conntrack entries, with lifetimes remaining relative to now (monotonic clock). */
  ctEntries(): { key: CtKey; entry: CtEntry; scope: 'egress' | 'ingress' }[] {
    return this.ct
      .lookupBatch()
      .map(([key, entry]) => ({ key, entry, scope: key.scope === CT_SCOPE_EGRESS ? 'egress' : 'ingress' }));
  }

  /** Packets and bytes by drop reason (0 = forwarded) and direction, summed over CPUs. */
  metricsTotals(): MetricsTotal[] {
    return metricsTotals(this.metrics);
  }

  /**
   * A reader of the events ring; decode batches with `decodeEvents`. Forwarded traffic
   * wakes the reader only every EVENT_WAKEUP_BYTES (events.h), so a quiet ring is read when
   * a wait times out: the timeout bounds how late a flow reaches `observe --follow`.
   */
  eventReader(): RingBufReader {
    return new RingBufReader(this.#coll.rawMap('hypha_events'), { pollMs: 50 });
  }

  /** Leaves programs attached and maps pinned (the agent's restart path). */
  close(): void {
    for (const links of this.#links.values()) for (const l of links) l.disconnect();
    this.#links.clear();
    this.#coll.close();
  }

  /** Detaches everything this instance attached and removes the pins. */
  destroy(): void {
    for (const links of this.#links.values()) for (const l of links) l.close();
    this.#links.clear();
    this.#coll.close();
    unpin(this.pinDir);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Byte offsets of event_hdr's fields, from the codec the layout test checks against BTF. */
const EV = Object.fromEntries(eventHdr.fields.map((f) => [f.name, f.offset])) as Record<
  keyof EventHeader,
  number
>;

/**
 * The events of a batch of ring records. A record is sized to its capture; a new
 * connection's record (EVENT_F_TRACE) stands for its policy verdict and its trace event,
 * and becomes both, the verdict first. This runs for every record the datapath writes, so
 * it reads the header field by field into one object shape (70 ns a record; a generic
 * struct decode and object spreads took 1.9 µs), and copies the batch once: packets are
 * views into that copy.
 */
export function decodeEvents(batch: RecordBatch): DatapathEvent[] {
  const out: DatapathEvent[] = [];
  if (batch.length === 0) return out;
  const copy = batch.buffer.slice(0, batch.length);
  const d = new DataView(copy.buffer);
  batch.forEach((_view, off, len) => {
    if (len < eventHdr.size) return;
    const capLen = Math.min(d.getUint16(off + EV.cap_len, true), EVENT_CAPTURE_LEN, len - eventHdr.size);
    const packet = copy.subarray(off + eventHdr.size, off + eventHdr.size + capLen);
    const type = d.getUint8(off + EV.type);
    const trace = type === EventType.PolicyVerdict && (d.getUint8(off + EV.flags) & EVENT_F_TRACE) !== 0;
    out.push(decodeEvent(d, off, type, trace ? 0 : d.getUint8(off + EV.subtype), packet));
    if (trace) out.push(decodeEvent(d, off, EventType.Trace, d.getUint8(off + EV.subtype), packet));
  });
  return out;
}

function decodeEvent(
  d: DataView,
  o: number,
  type: number,
  subtype: number,
  packet: Uint8Array,
): DatapathEvent {
  return {
    ts_ns: d.getBigUint64(o + EV.ts_ns, true),
    type,
    subtype,
    source: d.getUint16(o + EV.source, true),
    src_identity: d.getUint32(o + EV.src_identity, true),
    dst_identity: d.getUint32(o + EV.dst_identity, true),
    ifindex: d.getUint32(o + EV.ifindex, true),
    cookie: d.getUint32(o + EV.cookie, true),
    orig_len: d.getUint32(o + EV.orig_len, true),
    cap_len: d.getUint16(o + EV.cap_len, true),
    verdict: d.getUint8(o + EV.verdict),
    direction: d.getUint8(o + EV.direction),
    ct_state: d.getUint8(o + EV.ct_state),
    proxy_port: d.getUint16(o + EV.proxy_port, false),
    packet,
  };
}

export { decode };
