/**
 * L7 events: what the HTTP and DNS proxies report about each request and response they
 * handle, in the agent's terms. The flow builder turns one into a Hubble L7 flow (Type L7,
 * event_type 129, `l7` as flow.proto has it), as Hubble's L7 parser turns Cilium's proxy
 * access-log records into flows.
 */
import { isIP } from 'node:net';
import { ValidationError } from '../errors.js';

export interface L7Event {
  /** Wall clock, ms since epoch (fractional allowed). */
  time: number;
  kind: 'http' | 'dns';
  type: 'request' | 'response';
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  trafficDirection: 'INGRESS' | 'EGRESS';
  /** The local endpoint whose policy put the traffic through the proxy. */
  endpointId: number;
  /**
   * Source and destination as the message travels, as Hubble has them: a request goes from
   * client to server, a response from server to client (and is printed with `<-`).
   */
  source: { ip: string; port: number; identity: number };
  destination: { ip: string; port: number; identity: number };
  latencyNs?: number;
  http?: {
    code: number;
    method: string;
    url: string;
    protocol: string;
    headers: { key: string; value: string }[];
  };
  dns?: { query: string; ips: string[]; ttl: number; qtypes: string[]; rrtypes: string[]; rcode: number };
  /** The policy that allowed or denied (as the L3/L4 flows' allowed_by/denied_by carry it). */
  policy?: { kind: string; namespace: string; name: string };
  /** Why, for DROPPED/ERROR (e.g. "Access denied", a parse error). */
  reason?: string;
}

/** DNS response codes as Hubble names them (its metrics' `rcode` label and summaries). */
export const DNS_RCODE_NAMES: Readonly<Record<number, string>> = {
  0: 'No Error',
  1: 'Format Error',
  2: 'Server Failure',
  3: 'Non-Existent Domain',
  4: 'Not Implemented',
  5: 'Query Refused',
  6: 'Name Exists when it should not',
  7: 'RR Set Exists when it should not',
  8: 'RR Set that should exist does not',
  9: 'Not Authorized',
  10: 'Name not contained in zone',
  11: 'DSO-TYPE Not Implemented',
  16: 'Bad OPT Version',
  17: 'Key not recognized',
  18: 'Signature out of time window',
  19: 'Bad TKEY Mode',
  20: 'Duplicate key name',
  21: 'Algorithm not supported',
  22: 'Bad Truncation',
  23: 'Bad/missing Server Cookie',
};

const KINDS = ['http', 'dns'];
const TYPES = ['request', 'response'];
const VERDICTS = ['FORWARDED', 'DROPPED', 'ERROR'];
const DIRECTIONS = ['INGRESS', 'EGRESS'];

/**
 * Checks an L7 event before it becomes a flow: a proxy's bug must show up as an error
 * naming the field, not as a flow with holes. Throws a ValidationError.
 */
export function validateL7Event(e: L7Event): void {
  const fail = (field: string, reason: string): never => {
    throw new ValidationError('L7Event', field, reason);
  };
  const o = e as unknown as Record<string, unknown>;
  if (typeof o !== 'object' || o === null) fail('', 'must be an object');
  if (typeof e.time !== 'number' || !Number.isFinite(e.time) || e.time < 0)
    fail('time', `${String(e.time)} is not ms since the epoch`);
  const oneOf = (field: string, v: unknown, allowed: string[]) => {
    if (typeof v !== 'string' || !allowed.includes(v))
      fail(field, `${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
  };
  oneOf('kind', e.kind, KINDS);
  oneOf('type', e.type, TYPES);
  oneOf('verdict', e.verdict, VERDICTS);
  oneOf('trafficDirection', e.trafficDirection, DIRECTIONS);
  if (!Number.isInteger(e.endpointId) || e.endpointId < 0 || e.endpointId > 0xffff)
    fail('endpointId', `${String(e.endpointId)} is not an endpoint ID`);
  for (const side of ['source', 'destination'] as const) {
    const p = e[side];
    if (typeof p !== 'object' || p === null) fail(side, 'is required');
    if (typeof p.ip !== 'string' || isIP(p.ip) === 0)
      fail(`${side}.ip`, `${JSON.stringify(p.ip)} is not an IP address`);
    if (!Number.isInteger(p.port) || p.port < 0 || p.port > 65535)
      fail(`${side}.port`, `${String(p.port)} is not a port`);
    if (!Number.isInteger(p.identity) || p.identity < 0 || p.identity > 0xffffffff)
      fail(`${side}.identity`, `${String(p.identity)} is not an identity`);
  }
  if (isIP(e.source.ip) !== isIP(e.destination.ip))
    fail('destination.ip', `${e.destination.ip} is not of the same family as ${e.source.ip}`);
  if (e.latencyNs !== undefined && (!Number.isFinite(e.latencyNs) || e.latencyNs < 0))
    fail('latencyNs', `${String(e.latencyNs)} is not a duration`);
  if (e.kind === 'http' && e.http !== undefined) {
    const h = e.http;
    if (!Number.isInteger(h.code) || h.code < 0 || h.code > 999)
      fail('http.code', `${String(h.code)} is not a status`);
    for (const k of ['method', 'url', 'protocol'] as const)
      if (typeof h[k] !== 'string') fail(`http.${k}`, 'must be a string');
    if (!Array.isArray(h.headers)) fail('http.headers', 'must be a list');
    h.headers.forEach((x, i) => {
      if (typeof x?.key !== 'string' || typeof x.value !== 'string')
        fail(`http.headers[${i}]`, 'must be {key, value} strings');
    });
  }
  if (e.kind === 'dns' && e.dns !== undefined) {
    const d = e.dns;
    if (typeof d.query !== 'string') fail('dns.query', 'must be a string');
    if (!Number.isInteger(d.ttl) || d.ttl < 0 || d.ttl > 0xffffffff)
      fail('dns.ttl', `${String(d.ttl)} is not a TTL`);
    if (!Number.isInteger(d.rcode) || d.rcode < 0 || d.rcode > 0xffff)
      fail('dns.rcode', `${String(d.rcode)} is not an rcode`);
    for (const k of ['ips', 'qtypes', 'rrtypes'] as const) {
      if (!Array.isArray(d[k])) fail(`dns.${k}`, 'must be a list');
      d[k].forEach((x, i) => {
        if (typeof x !== 'string') fail(`dns.${k}[${i}]`, 'must be a string');
      });
    }
    d.ips.forEach((ip, i) => {
      if (isIP(ip) === 0) fail(`dns.ips[${i}]`, `${JSON.stringify(ip)} is not an IP address`);
    });
  }
  if (e.kind === 'http' && e.dns !== undefined) fail('dns', 'set on an http event');
  if (e.kind === 'dns' && e.http !== undefined) fail('http', 'set on a dns event');
  if (e.policy !== undefined) {
    for (const k of ['kind', 'namespace', 'name'] as const)
      if (typeof e.policy[k] !== 'string') fail(`policy.${k}`, 'must be a string');
    if (!e.policy.kind || !e.policy.name) fail('policy', 'needs a kind and a name');
  }
  if (e.reason !== undefined && typeof e.reason !== 'string') fail('reason', 'must be a string');
  if (e.verdict === 'FORWARDED' && !(e.kind === 'http' ? e.http : e.dns))
    fail(e.kind, `a forwarded ${e.kind} ${e.type} must carry its ${e.kind} record`);
}

/** A query name as DNS carries it: fully qualified, with the trailing dot. */
export function fqdn(name: string): string {
  return name === '' || name.endsWith('.') ? name : `${name}.`;
}

/** Hubble's summary of an HTTP message: `HTTP/1.1 GET http://…`, `HTTP/1.1 200 3ms (GET http://…)`. */
export function httpSummary(type: L7Event['type'], h: NonNullable<L7Event['http']>, latencyNs = 0): string {
  const request = `${h.method} ${h.url}`;
  if (type === 'request') return `${h.protocol} ${request}`;
  return `${h.protocol} ${h.code} ${Math.floor(latencyNs / 1e6)}ms (${request})`;
}

/** Hubble's summary of a DNS message seen by the proxy. */
export function dnsSummary(type: L7Event['type'], d: NonNullable<L7Event['dns']>): string {
  const qtypes = d.qtypes.join(',');
  const query = fqdn(d.query);
  if (type === 'request') return `DNS Query ${query} ${qtypes}`;
  const answer =
    d.rcode !== 0
      ? `RCode: ${DNS_RCODE_NAMES[d.rcode] ?? `Unknown(${d.rcode})`}`
      : d.ips.length
        ? JSON.stringify(d.ips.join(','))
        : '';
  return `DNS Answer ${answer} TTL: ${d.ttl} (Proxy ${query} ${qtypes})`;
}
