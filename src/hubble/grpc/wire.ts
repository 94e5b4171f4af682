/**
 * The Observer API's wire objects (proto-loader's shape) back to Hubble's JSON shape
 * (`flow.ts`): timestamps as RFC 3339, wrapper types as bare values, oneof markers and
 * fields the schema does not know left out. The UI keeps flows in the JSON shape so that
 * the filters of `filter.ts` and the printer's helpers apply to them unchanged.
 */
import { type Flow, formatTimestamp, type LostEvent } from '../flow.js';
import { type FieldDesc, MESSAGES } from '../schema.js';
import type { GetFlowsResponsePB, NodeState, TimestampPB } from './proto.js';

/** Nanoseconds since the epoch of a wire Timestamp; undefined when malformed. */
export function timestampNs(ts: TimestampPB | undefined): bigint | undefined {
  if (!ts) return undefined;
  try {
    return BigInt(ts.seconds ?? 0) * 1_000_000_000n + BigInt(ts.nanos ?? 0);
  } catch {
    return undefined;
  }
}

function fieldFromPB(f: FieldDesc, v: unknown): unknown {
  switch (f.kind) {
    case 'timestamp': {
      const ns = typeof v === 'object' && v !== null ? timestampNs(v as TimestampPB) : undefined;
      return ns === undefined ? undefined : formatTimestamp(ns);
    }
    case 'boolValue':
      return typeof v === 'object' && v !== null ? ((v as { value?: boolean }).value ?? false) : undefined;
    case 'int32Value':
    case 'uint32Value':
      return typeof v === 'object' && v !== null ? ((v as { value?: number }).value ?? 0) : undefined;
    case 'message':
      return typeof v === 'object' && v !== null ? fromPB(f.message!, v) : undefined;
    case 'enum':
      // An enum number this build does not know arrives as a number: keep its name if any.
      if (typeof v === 'number') {
        const name = Object.entries(f.values ?? {}).find(([, n]) => n === v)?.[0];
        return name ?? v;
      }
      return v;
    case 'uint64':
      return String(v);
    default:
      return v;
  }
}

/** A message of `schema.ts` from proto-loader's object form to its JSON shape. */
export function fromPB(message: string, pb: object): Record<string, unknown> {
  const fields = MESSAGES[message];
  if (!fields) throw new Error(`no schema for message ${message}`);
  const obj = pb as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const x = obj[f.name];
    if (x === undefined || x === null) continue;
    if (f.repeated) {
      if (!Array.isArray(x) || x.length === 0) continue;
      out[f.name] = x.map((i) => fieldFromPB(f, i)).filter((i) => i !== undefined);
      continue;
    }
    const y = fieldFromPB(f, x);
    if (y !== undefined) out[f.name] = y;
  }
  return out;
}

/** One GetFlowsResponse as the UI consumes it. */
export type RelayEvent =
  | { kind: 'flow'; flow: Flow; nodeName?: string }
  | { kind: 'lost'; lost: LostEvent; nodeName?: string }
  | { kind: 'nodes'; state: NodeState; nodes: string[]; message?: string };

export function eventFromPB(r: GetFlowsResponsePB): RelayEvent | undefined {
  const nodeName = r.node_name || undefined;
  if (r.flow) {
    const flow = fromPB('Flow', r.flow) as Flow;
    // The relay names the node on the response; an agent also puts it on the flow.
    if (!flow.node_name && nodeName) flow.node_name = nodeName;
    return { kind: 'flow', flow, ...(nodeName ? { nodeName } : {}) };
  }
  if (r.lost_events)
    return { kind: 'lost', lost: fromPB('LostEvent', r.lost_events), ...(nodeName ? { nodeName } : {}) };
  if (r.node_status) {
    const s = r.node_status;
    return {
      kind: 'nodes',
      state: s.state_change ?? 'UNKNOWN_NODE_STATE',
      nodes: s.node_names ?? [],
      ...(s.message ? { message: s.message } : {}),
    };
  }
  return undefined;
}
