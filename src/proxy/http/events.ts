/**
 * L7 events from the HTTP proxy to the agent, packed. Two per request (the request and
 * its response) cross the IPC channel as JSON; as objects with header lists they cost the
 * proxy's event loop a millisecond or more per batch under load, which shows up as its p99.
 * Packed, an event is a flat array of primitives (headers one string) and the agent, not
 * the proxy, rebuilds the L7Event.
 */
import type { L7Event } from '../../hubble/l7.js';

/** One packed event: the fields of an L7Event, flat (the proxy's main.ts packs them). */
export type PackedEvent = [
  time: number,
  flags: number,
  endpointId: number,
  srcIp: string,
  srcPort: number,
  srcIdentity: number,
  dstIp: string,
  dstPort: number,
  dstIdentity: number,
  code: number,
  method: string,
  url: string,
  protocol: string,
  latencyNs: number,
  policy: string,
  reason: string,
  headers: string,
];

/** Proxy -> agent. */
export interface L7EventsMessage {
  type: 'l7';
  packed: PackedEvent[];
}

/** flags: bits of a packed event. */
export const F_RESPONSE = 1;
export const F_DROPPED = 2;
export const F_ERROR = 4;
export const F_EGRESS = 8;

/** Header names and values never hold a newline (the parser refuses them): one string, split on \n. */
export function packHeaders(h: readonly { key: string; value: string }[]): string {
  let s = '';
  for (let i = 0; i < h.length; i++)
    s += i ? `\n${h[i]!.key}\n${h[i]!.value}` : `${h[i]!.key}\n${h[i]!.value}`;
  return s;
}

/** Dotted-quad IPv4 (no leading zeros), checked without a regular expression: twice per record. */
function isIPv4(s: string): boolean {
  let dots = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return false;
      digits = 0;
      n = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && n === 0) return false;
      n = n * 10 + (c - 48);
      if (++digits > 3 || n > 255) return false;
    } else return false;
  }
  return dots === 3 && digits > 0;
}

/** "" or kind/namespace/name (the namespace may be empty). */
function isPolicyName(s: string): boolean {
  const a = s.indexOf('/');
  return s === '' || (a > 0 && s.indexOf('/', a + 1) > a);
}

const uint =
  (max: number) =>
  (v: unknown): boolean =>
    typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
const str = (v: unknown): boolean => typeof v === 'string';
const ipv4 = (v: unknown): boolean => typeof v === 'string' && isIPv4(v);

/** Each field of a packed event with its check, in order (as validateL7Event checks an L7Event). */
const PACKED_FIELDS: readonly [string, (v: unknown) => boolean][] = [
  ['time', (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0],
  ['flags', uint(15)],
  ['endpointId', uint(0xffff)],
  ['source.ip', ipv4],
  ['source.port', uint(65535)],
  ['source.identity', uint(0xffffffff)],
  ['destination.ip', ipv4],
  ['destination.port', uint(65535)],
  ['destination.identity', uint(0xffffffff)],
  ['http.code', uint(999)],
  ['http.method', str],
  ['http.url', str],
  ['http.protocol', str],
  ['latencyNs', (v) => v === -1 || (typeof v === 'number' && Number.isFinite(v) && v >= 0)],
  ['policy', (v) => typeof v === 'string' && isPolicyName(v)],
  ['reason', str],
  ['headers', str],
];

/**
 * Checks a packed event as validateL7Event checks the event it stands for, without making
 * it: the agent stores packed events and makes flows of them only when read. Throws a
 * TypeError naming the field.
 */
export function checkPacked(p: unknown): PackedEvent {
  if (!Array.isArray(p) || p.length !== PACKED_FIELDS.length) throw new TypeError('not a packed L7 event');
  for (let i = 0; i < PACKED_FIELDS.length; i++) {
    const [field, ok] = PACKED_FIELDS[i]!;
    if (!ok(p[i])) throw new TypeError(`packed L7 event: ${field} ${JSON.stringify(p[i])} is not valid`);
  }
  return p as PackedEvent;
}

/** The event a packed one stands for; throws a TypeError on something that is not one. */
export function unpackEvent(p: unknown): L7Event {
  if (!Array.isArray(p) || p.length !== 17) throw new TypeError('not a packed L7 event');
  const [
    time,
    flags,
    ep,
    sip,
    sport,
    sid,
    dip,
    dport,
    did,
    code,
    method,
    url,
    protocol,
    latency,
    policy,
    reason,
    hdrs,
  ] = p as PackedEvent;
  const parts = typeof hdrs === 'string' && hdrs ? hdrs.split('\n') : [];
  const headers: { key: string; value: string }[] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) headers.push({ key: parts[i]!, value: parts[i + 1]! });
  const e: L7Event = {
    time,
    kind: 'http',
    type: flags & F_RESPONSE ? 'response' : 'request',
    verdict: flags & F_DROPPED ? 'DROPPED' : flags & F_ERROR ? 'ERROR' : 'FORWARDED',
    trafficDirection: flags & F_EGRESS ? 'EGRESS' : 'INGRESS',
    endpointId: ep,
    source: { ip: sip, port: sport, identity: sid },
    destination: { ip: dip, port: dport, identity: did },
    http: { code, method, url, protocol, headers },
  };
  if (latency >= 0) e.latencyNs = latency;
  if (policy) {
    const [kind = '', namespace = '', ...name] = policy.split('/');
    e.policy = { kind, namespace, name: name.join('/') };
  }
  if (reason) e.reason = reason;
  return e;
}
