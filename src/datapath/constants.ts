/** Datapath numbers and their names, as Cilium names them (Hubble prints these). */

export const DROP_REASONS: Record<number, string> = {
  130: 'INVALID_SOURCE_MAC',
  131: 'INVALID_DESTINATION_MAC',
  132: 'INVALID_SOURCE_IP',
  133: 'POLICY_DENIED',
  134: 'INVALID_PACKET_DROPPED',
  135: 'CT_TRUNCATED_OR_INVALID_HEADER',
  137: 'CT_UNKNOWN_L4_PROTOCOL',
  139: 'UNSUPPORTED_L3_PROTOCOL',
  142: 'UNKNOWN_L4_PROTOCOL',
  155: 'CT_MAP_INSERTION_FAILED',
  157: 'IP_FRAGMENTATION_NOT_SUPPORTED',
  158: 'SERVICE_BACKEND_NOT_FOUND',
  165: 'NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION',
  178: 'SOCKET_LOOKUP_FAILED',
  179: 'SOCKET_ASSIGN_FAILED',
  180: 'PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL',
  181: 'POLICY_DENY',
  189: 'AUTH_REQUIRED',
};

/** Cilium's human descriptions (`drop_reason_desc` in Hubble). */
export function dropReasonName(code: number): string {
  return DROP_REASONS[code] ?? `UNKNOWN_REASON_${code}`;
}

export const EventType = { Drop: 1, Trace: 4, PolicyVerdict: 5 } as const;
export const ObservationPoint = { ToEndpoint: 0, ToProxy: 1, FromEndpoint: 5 } as const;
export const CtState = { New: 0, Established: 1, Reply: 2, Related: 3 } as const;
export const EventVerdict = { Forwarded: 1, Dropped: 2, Redirected: 4 } as const;
/** A policy-verdict record that stands for the trace event at observation point `subtype` too. */
export const EVENT_F_TRACE = 1;
export const DIR_INGRESS = 0;
export const DIR_EGRESS = 1;

export const EP_ENFORCE_INGRESS = 1;
export const EP_ENFORCE_EGRESS = 2;
export const POLICY_DENY = 1;
export const POLICY_REDIRECT = 2;
export const POLICY_AUTH = 4;
export const CT_SCOPE_EGRESS = 1;
export const CT_SCOPE_INGRESS = 2;
export const MARK_MAGIC_TO_PROXY = 0x0200;
