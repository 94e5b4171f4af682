/**
 * The Observer API's wire side: the .proto files of `src/hubble/proto` loaded with
 * proto-loader (proto field names, enums as names, 64-bit integers as decimal strings,
 * unset fields left out), the shapes of the objects it encodes and decodes, and the
 * conversions between those and Hubble's JSON shapes (`flow.ts`, `filter.ts`): the two
 * differ only in timestamps (RFC 3339 strings versus `{seconds, nanos}`) and wrapper
 * types (a bare value versus `{value}`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  makeClientConstructor,
  type requestCallback,
  type ServiceDefinition,
  status,
} from '@grpc/grpc-js';
import { type AnyDefinition, loadSync, type MessageTypeDefinition } from '@grpc/proto-loader';
import { ValidationError } from '../../errors.js';
import type { FlowFilter, GetFlowsRequest } from '../filter.js';
import { type Flow, formatTimestamp, parseTimestamp } from '../flow.js';
import { type FieldDesc, MESSAGES } from '../schema.js';

// ---------------------------------------------------------------- loading

/** `src/hubble/proto`, found from `dist/src/hubble/grpc` (built) or `src/hubble/grpc`. */
export function protoDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '../../../../src/hubble/proto'), join(here, '../proto')];
  const dir = candidates.find((d) => existsSync(join(d, 'observer/observer.proto')));
  if (!dir) throw new Error(`observer.proto not found (looked in ${candidates.join(', ')})`);
  return dir;
}

/** Hypha's version (package.json), semver-shaped for Hubble's clients: `0.1.0-hypha`. */
export function hyphaVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(protoDir(), '../../../package.json'), 'utf8')) as {
      version?: string;
    };
    return `${pkg.version ?? '0.0.0'}-hypha`;
  } catch {
    return '0.0.0-hypha';
  }
}

/** proto-loader's options for every Hypha client and server: objects in flow.ts's shape. */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
} as const;

let loaded: Record<string, AnyDefinition> | undefined;

function definitions(): Record<string, AnyDefinition> {
  loaded ??= loadSync(['observer/observer.proto', 'peer/peer.proto', 'grpc/health/v1/health.proto'], {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir()],
  });
  return loaded;
}

/**
 * A service of the loaded files, e.g. `observer.Observer`. Its servers' requests are
 * checked as they are decoded: bytes that are not a message, or fields the message does
 * not have, are remembered against the request (`requestProblem`) so that the handler
 * answers INVALID_ARGUMENT naming them, instead of grpc-js failing the call as INTERNAL
 * or an unknown filter field being dropped silently (which would widen the answer).
 */
export function serviceDefinition(name: string): ServiceDefinition {
  const d = definitions()[name];
  if (!d || 'format' in d) throw new Error(`${name} is not a service of the Observer API's protos`);
  const service = d as ServiceDefinition;
  const checked: Record<string, ServiceDefinition[string]> = {};
  for (const [method, def] of Object.entries(service)) {
    const type = (def as { requestType?: { type?: Descriptor } }).requestType?.type;
    const full = type ? `${name.slice(0, name.lastIndexOf('.'))}.${type.name}` : undefined;
    checked[method] = {
      ...def,
      requestDeserialize: (buf: Buffer) => {
        const unknown: Problem[] = [];
        try {
          if (full) scanFields(buf, full, '', unknown, 0);
        } catch (err) {
          return withProblem(
            {},
            { field: '', reason: `not a ${full ?? 'request'} message: ${errorText(err)}` },
          );
        }
        let req: object;
        try {
          req = def.requestDeserialize(buf) as object;
        } catch (err) {
          return withProblem(
            {},
            { field: '', reason: `not a ${full ?? 'request'} message: ${errorText(err)}` },
          );
        }
        return unknown[0] ? withProblem(req, unknown[0]) : req;
      },
    };
  }
  return checked as ServiceDefinition;
}

// ---------------------------------------------------------------- request checks

interface FieldDescriptor {
  name: string;
  number: number;
  type: string;
  typeName?: string;
}

interface Descriptor {
  name: string;
  field?: FieldDescriptor[];
  nestedType?: Descriptor[];
  reservedRange?: { start: number; end: number }[];
}

/** What is wrong with a request, as a field path (within the request) and a reason. */
export interface Problem {
  field: string;
  reason: string;
}

const problems = new WeakMap<object, Problem>();

function withProblem(req: object, p: Problem): object {
  problems.set(req, p);
  return req;
}

/** Why a decoded request cannot be served as sent; undefined when it can. */
export function requestProblem(req: object): Problem | undefined {
  return problems.get(req);
}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** A message's descriptor by full name, nested messages included (`a.B.C`). */
function descriptor(full: string): Descriptor | undefined {
  const d = definitions()[full];
  if (d && 'format' in d) return (d as unknown as { type: Descriptor }).type;
  const dot = full.lastIndexOf('.');
  if (dot < 0) return undefined;
  return descriptor(full.slice(0, dot))?.nestedType?.find((n) => n.name === full.slice(dot + 1));
}

/** A field's message type as protobuf resolves names: innermost scope first. */
function resolveIn(scope: string, typeName: string): string | undefined {
  const name = typeName.replace(/^\./, '');
  if (typeName.startsWith('.')) return descriptor(name) ? name : undefined;
  for (let s = scope; ; ) {
    const full = s ? `${s}.${name}` : name;
    if (descriptor(full)) return full;
    if (!s) return undefined;
    const dot = s.lastIndexOf('.');
    s = dot < 0 ? '' : s.slice(0, dot);
  }
}

const MAX_DEPTH = 32;

function varint(buf: Uint8Array, at: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const b = buf[i]!;
    v += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return [v, i + 1];
  }
  throw new Error(`truncated varint at byte ${at}`);
}

/**
 * Walks a message's wire bytes and records fields its descriptor does not declare
 * (reserved numbers are known, just unused), descending into message fields. Throws on
 * bytes that are not a message.
 */
function scanFields(buf: Uint8Array, message: string, path: string, out: Problem[], depth: number): void {
  if (depth > MAX_DEPTH) throw new Error('messages nested too deeply');
  const d = descriptor(message);
  if (!d) return;
  const counts = new Map<number, number>();
  let at = 0;
  while (at < buf.length) {
    const [key, next] = varint(buf, at);
    at = next;
    const number = Math.floor(key / 8);
    const wire = key & 7;
    if (number === 0) throw new Error('field number 0');
    const field = d.field?.find((f) => f.number === number);
    let body: Uint8Array | undefined;
    switch (wire) {
      case 0:
        at = varint(buf, at)[1];
        break;
      case 1:
        at += 8;
        break;
      case 5:
        at += 4;
        break;
      case 2: {
        const [len, start] = varint(buf, at);
        at = start + len;
        body = buf.subarray(start, at);
        break;
      }
      default:
        throw new Error(`wire type ${wire} of field ${number} is not supported`);
    }
    if (at > buf.length) throw new Error(`field ${number} runs past the end`);
    const index = counts.get(number) ?? 0;
    counts.set(number, index + 1);
    if (!field) {
      if (!d.reservedRange?.some((r) => number >= r.start && number <= r.end))
        out.push({
          field: path || d.name,
          reason: `unknown field number ${number} (this API does not know it)`,
        });
      continue;
    }
    if (field.type !== 'TYPE_MESSAGE' || !field.typeName || body === undefined) continue;
    const type = resolveIn(message, field.typeName);
    if (!type || type.startsWith('google.protobuf.')) continue;
    const repeated = (field as { label?: string }).label === 'LABEL_REPEATED';
    const sub = `${path ? `${path}.` : ''}${field.name}${repeated ? `[${index}]` : ''}`;
    scanFields(body, type, sub, out, depth + 1);
  }
}

function messageDefinition(name: string): MessageTypeDefinition<object, object> | undefined {
  const d = definitions()[name];
  return d && 'format' in d && d.format === 'Protocol Buffer 3 DescriptorProto'
    ? (d as MessageTypeDefinition<object, object>)
    : undefined;
}

// ---------------------------------------------------------------- wire shapes

/** google.protobuf.Timestamp as proto-loader gives it (seconds as a decimal string). */
export interface TimestampPB {
  seconds?: string | number;
  nanos?: number;
}

/** A message in proto-loader's object form, before conversion. */
export type PBObject = { [field: string]: unknown };

export interface GetFlowsRequestPB {
  number?: string | number;
  first?: boolean;
  follow?: boolean;
  blacklist?: PBObject[];
  whitelist?: PBObject[];
  since?: TimestampPB;
  until?: TimestampPB;
  field_mask?: { paths?: string[] };
}

export type NodeState =
  | 'UNKNOWN_NODE_STATE'
  | 'NODE_CONNECTED'
  | 'NODE_UNAVAILABLE'
  | 'NODE_GONE'
  | 'NODE_ERROR';

export interface NodeStatusEventPB {
  state_change?: NodeState;
  node_names?: string[];
  message?: string;
}

export interface GetFlowsResponsePB {
  flow?: PBObject;
  node_status?: NodeStatusEventPB;
  lost_events?: PBObject;
  node_name?: string;
  time?: TimestampPB;
  /** Which member of the oneof is set (proto-loader's `oneofs`); ignored when encoding. */
  response_types?: 'flow' | 'node_status' | 'lost_events';
}

export interface ServerStatusResponsePB {
  num_flows?: string;
  max_flows?: string;
  seen_flows?: string;
  uptime_ns?: string;
  num_connected_nodes?: { value?: number };
  num_unavailable_nodes?: { value?: number };
  unavailable_nodes?: string[];
  version?: string;
  flows_rate?: number;
}

export interface NodePB {
  name?: string;
  version?: string;
  address?: string;
  state?: NodeState;
  tls?: { enabled?: boolean; server_name?: string };
  uptime_ns?: string;
  num_flows?: string;
  max_flows?: string;
  seen_flows?: string;
}

export interface NamespacePB {
  cluster?: string;
  namespace?: string;
}

export interface GetNodesResponsePB {
  nodes?: NodePB[];
}

export interface GetNamespacesResponsePB {
  namespaces?: NamespacePB[];
}

export interface ChangeNotificationPB {
  name?: string;
  address?: string;
  type?: 'UNKNOWN' | 'PEER_ADDED' | 'PEER_DELETED' | 'PEER_UPDATED';
  tls?: { server_name?: string };
}

export type Empty = Record<string, never>;

// ---------------------------------------------------------------- clients

/** observer.Observer's client methods as proto-loader's definition makes them. */
export interface ObserverClient extends Client {
  GetFlows(req: GetFlowsRequestPB, options?: CallOptions): ClientReadableStream<GetFlowsResponsePB>;
  ServerStatus(
    req: Empty,
    options: CallOptions,
    callback: requestCallback<ServerStatusResponsePB>,
  ): ClientUnaryCall;
  GetNodes(req: Empty, options: CallOptions, callback: requestCallback<GetNodesResponsePB>): ClientUnaryCall;
  GetNamespaces(
    req: Empty,
    options: CallOptions,
    callback: requestCallback<GetNamespacesResponsePB>,
  ): ClientUnaryCall;
}

/** A client of an Observer API at `address` (`host:port` or `unix:///path`). */
export function observerClient(
  address: string,
  creds: ChannelCredentials = credentials.createInsecure(),
  options?: ChannelOptions,
): ObserverClient {
  const Ctor = makeClientConstructor(serviceDefinition('observer.Observer'), 'observer.Observer');
  // grpc-js adds the methods at run time from the service definition; ObserverClient
  // states their types.
  return new Ctor(address, creds, options) as unknown as ObserverClient;
}

// ---------------------------------------------------------------- errors

/** What a handler passes to a callback or emits on a stream to end a call with a status. */
export interface StatusError {
  code: status;
  details: string;
}

export function statusError(code: status, details: string): StatusError {
  return { code, details };
}

/** A ValidationError is the client's fault; anything else is ours. */
export function toStatusError(err: unknown): StatusError {
  if (err instanceof ValidationError) return statusError(status.INVALID_ARGUMENT, err.message);
  return statusError(status.INTERNAL, err instanceof Error ? err.message : String(err));
}

// ---------------------------------------------------------------- time

const NS = 1_000_000_000n;
/** Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

export function nsToTimestamp(ns: bigint): TimestampPB {
  let seconds = ns / NS;
  let nanos = ns % NS;
  if (nanos < 0n) {
    nanos += NS;
    seconds -= 1n;
  }
  return { seconds: String(seconds), nanos: Number(nanos) };
}

/** Nanoseconds since the epoch; a ValidationError for a Timestamp outside its range. */
export function timestampToNs(ts: TimestampPB, object: string, field: string): bigint {
  const raw = ts.seconds ?? 0;
  const nanos = ts.nanos ?? 0;
  let seconds: bigint;
  try {
    seconds = BigInt(raw);
  } catch (err) {
    throw new ValidationError(object, field, `seconds "${raw}" is not an integer`, { cause: err });
  }
  if (seconds < MIN_SECONDS || seconds > MAX_SECONDS)
    throw new ValidationError(object, field, `seconds ${seconds} is out of range`);
  if (!Number.isInteger(nanos) || nanos < 0 || nanos >= 1e9)
    throw new ValidationError(object, field, `nanos ${nanos} is out of range`);
  return seconds * NS + BigInt(nanos);
}

// ---------------------------------------------------------------- JSON shape -> wire

function fieldToPB(f: FieldDesc, v: unknown): unknown {
  switch (f.kind) {
    case 'timestamp': {
      const ns = typeof v === 'string' ? parseTimestamp(v) : undefined;
      return ns === undefined ? undefined : nsToTimestamp(ns);
    }
    case 'boolValue':
    case 'int32Value':
    case 'uint32Value':
      return { value: v };
    case 'message':
      return typeof v === 'object' && v !== null ? toPB(f.message!, v) : undefined;
    default:
      return v;
  }
}

/**
 * A message of `schema.ts` in its JSON shape as proto-loader encodes it. Keys the schema
 * does not know are left out, as `canonical` leaves them out of protojson.
 */
export function toPB(message: string, v: object): PBObject {
  const fields = MESSAGES[message];
  if (!fields) throw new Error(`no schema for message ${message}`);
  const obj = v as Record<string, unknown>;
  const out: PBObject = {};
  for (const f of fields) {
    const x = obj[f.name];
    if (x === undefined || x === null) continue;
    if (f.repeated) {
      if (Array.isArray(x)) out[f.name] = x.map((i) => fieldToPB(f, i)).filter((i) => i !== undefined);
      continue;
    }
    const y = fieldToPB(f, x);
    if (y !== undefined) out[f.name] = y;
  }
  return out;
}

// ---------------------------------------------------------------- wire -> JSON shape

/**
 * A FlowFilter as the client sent it, checked where proto-loader cannot: enum numbers
 * this API does not know arrive as numbers, not names.
 */
function filterFromPB(pb: PBObject, where: string): FlowFilter {
  for (const f of MESSAGES.FlowFilter ?? []) {
    if (f.kind !== 'enum') continue;
    const vs = pb[f.name];
    if (!Array.isArray(vs)) continue;
    vs.forEach((v, i) => {
      if (typeof v !== 'string' || f.values?.[v] === undefined)
        throw new ValidationError(where, `${f.name}[${i}]`, `unknown enum value ${String(v)}`);
    });
  }
  const traceIds = pb.ip_trace_id;
  if (Array.isArray(traceIds) && traceIds.length > 0)
    throw new ValidationError(where, 'ip_trace_id', 'flows carry no IP trace IDs');
  // Past the enum check the object has FlowFilter's shape: proto-loader decoded it with
  // proto field names, and every other field's kind is the same in both.
  return pb as FlowFilter;
}

/** A decoded GetFlowsRequest as filter.ts's GetFlowsRequest; a ValidationError names the bad field. */
export function requestFromPB(pb: GetFlowsRequestPB): GetFlowsRequest {
  const object = 'GetFlowsRequest';
  const problem = requestProblem(pb);
  if (problem) throw new ValidationError(object, problem.field || '(message)', problem.reason);
  const number = Number(pb.number ?? 0);
  if (!Number.isFinite(number) || number < 0)
    throw new ValidationError(object, 'number', `${String(pb.number)} is not a count`);
  const time = (field: 'since' | 'until'): string | undefined => {
    const ts = pb[field];
    return ts === undefined ? undefined : formatTimestamp(timestampToNs(ts, object, field));
  };
  const since = time('since');
  const until = time('until');
  return {
    number,
    first: pb.first ?? false,
    follow: pb.follow ?? false,
    whitelist: (pb.whitelist ?? []).map((f, i) => filterFromPB(f, `whitelist[${i}]`)),
    blacklist: (pb.blacklist ?? []).map((f, i) => filterFromPB(f, `blacklist[${i}]`)),
    ...(since !== undefined ? { since } : {}),
    ...(until !== undefined ? { until } : {}),
  };
}

/** filter.ts's GetFlowsRequest on the wire: the client side of `requestFromPB`. */
export function requestToPB(req: GetFlowsRequest): GetFlowsRequestPB {
  const time = (t: string | undefined) => {
    const ns = t === undefined ? undefined : parseTimestamp(t);
    return ns === undefined ? undefined : nsToTimestamp(ns);
  };
  const since = time(req.since);
  const until = time(req.until);
  return {
    number: String(req.number),
    first: req.first,
    follow: req.follow,
    // FlowFilter's JSON shape uses the proto field names: it is the wire object already.
    whitelist: req.whitelist as PBObject[],
    blacklist: req.blacklist as PBObject[],
    ...(since ? { since } : {}),
    ...(until ? { until } : {}),
  };
}

// ---------------------------------------------------------------- field masks

type MaskTree = { [field: string]: MaskTree | true };

function fieldsOf(message: string): { name: string; type?: string; typeName?: string }[] | undefined {
  const d = messageDefinition(message);
  const type = d?.type as { field?: { name: string; type?: string; typeName?: string }[] } | undefined;
  return type?.field;
}

/** proto-loader's type names are relative to the referring package, or fully qualified. */
function resolveType(pkg: string, typeName: string): string {
  const name = typeName.replace(/^\./, '');
  return messageDefinition(`${pkg}.${name}`) ? `${pkg}.${name}` : name;
}

/**
 * A GetFlowsRequest's field_mask as a function keeping only those paths of a flow, as
 * Hubble's server does; undefined when the mask is empty. Every path must name fields of
 * flow.Flow, else a ValidationError.
 */
export function compileFieldMask(paths: readonly string[] | undefined): ((flow: Flow) => Flow) | undefined {
  if (!paths || paths.length === 0) return undefined;
  const tree: MaskTree = {};
  paths.forEach((path, i) => {
    const fail = (reason: string): never => {
      throw new ValidationError('GetFlowsRequest', `field_mask.paths[${i}]`, `"${path}": ${reason}`);
    };
    const parts = path.split('.');
    let message = 'flow.Flow';
    let node = tree;
    for (const [j, part] of parts.entries()) {
      const field =
        fieldsOf(message)?.find((f) => f.name === part) ?? fail(`${message} has no field "${part}"`);
      if (j === parts.length - 1) {
        node[part] = true;
        break;
      }
      if (field.type !== 'TYPE_MESSAGE' || !field.typeName) fail(`"${part}" is not a message`);
      message = resolveType(message.slice(0, message.lastIndexOf('.')), field.typeName!);
      let next = node[part];
      if (next === true) break; // an earlier path keeps the whole field
      if (!next) {
        next = {};
        node[part] = next;
      }
      node = next;
    }
  });
  return (flow) => pick(flow as Record<string, unknown>, tree) as Flow;
}

function pick(v: Record<string, unknown>, tree: MaskTree): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, sub] of Object.entries(tree)) {
    const x = v[k];
    if (x === undefined) continue;
    if (sub === true) out[k] = x;
    else if (typeof x === 'object' && x !== null && !Array.isArray(x)) {
      const picked = pick(x as Record<string, unknown>, sub);
      if (Object.keys(picked).length > 0) out[k] = picked;
    }
  }
  return out;
}
