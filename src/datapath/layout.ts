/**
 * Codecs for every map key and value in bpf/include, field by field in the C order
 * (test/datapath/layout.test.ts checks each against the object's BTF).
 */
import { array, be16, type Codec, ipv4, struct, u8, u16, u32, u64 } from '../bpf/index.js';

const mac = array(u8, 6);

export const endpointKey = struct({ ifindex: u32 });
export const endpointInfo = struct({
  ip4: ipv4,
  identity: u32,
  id: u16,
  flags: u8,
  pad: u8,
  mac,
  pad2: array(u8, 2),
});

export const ipcacheKey4 = struct({ prefixlen: u32, ip4: ipv4 });
export const ipcacheInfo = struct({ identity: u32, tunnel_endpoint: ipv4, flags: u8, pad: array(u8, 3) });

export const policyKey = struct({
  prefixlen: u32,
  endpoint: u16,
  egress: u8,
  pad1: u8,
  identity: u32,
  protocol: u8,
  pad2: u8,
  dport: be16,
});
export const policyEntry = struct({
  cookie: u32,
  proxy_port: be16,
  flags: u8,
  auth_type: u8,
  prefixlen: u8,
  pad: array(u8, 3),
});

export const authKey = struct({
  local_identity: u32,
  remote_identity: u32,
  remote_node: u16,
  auth_type: u8,
  pad: u8,
});
export const authInfo = struct({ expiration_ns: u64 });

export const ctKey4 = struct({
  saddr: ipv4,
  daddr: ipv4,
  sport: be16,
  dport: be16,
  proto: u8,
  scope: u8,
  pad: array(u8, 2),
});
export const ctEntry = struct({
  expires_ns: u64,
  last_report_ns: u64,
  tx_packets: u64,
  tx_bytes: u64,
  rx_packets: u64,
  rx_bytes: u64,
  src_identity: u32,
  dst_identity: u32,
  cookie: u32,
  proxy_port: be16,
  flags: u8,
  pad: u8,
});

/** hypha_dnsproxy4 (bpf/include/dnsproxy.h): a pod's side of an exchange with the DNS proxy. */
export const dnsproxyKey4 = struct({ addr: ipv4, port: be16, proto: u8, pad: u8 });
export const dnsproxyEntry4 = struct({
  orig_daddr: ipv4,
  orig_dport: be16,
  endpoint: u16,
  dst_identity: u32,
});

/** hypha_metrics is an array: the key is METRICS_INDEX(reason, direction). */
export const metricsKey = u32;
export const metricsValue = struct({ packets: u64, bytes: u64 });

export const eventHdr = struct({
  ts_ns: u64,
  type: u8,
  subtype: u8,
  source: u16,
  src_identity: u32,
  dst_identity: u32,
  ifindex: u32,
  cookie: u32,
  orig_len: u32,
  cap_len: u16,
  verdict: u8,
  direction: u8,
  ct_state: u8,
  flags: u8,
  proxy_port: be16,
});

export const EVENT_CAPTURE_LEN = 128;

/** Every struct the layout test checks, by C name. */
export const LAYOUTS: Record<string, Codec<unknown> & { fields: readonly { name: string }[] }> = {
  endpoint_key: endpointKey,
  endpoint_info: endpointInfo,
  ipcache_key4: ipcacheKey4,
  ipcache_info: ipcacheInfo,
  policy_key: policyKey,
  policy_entry: policyEntry,
  auth_key: authKey,
  auth_info: authInfo,
  ct_key4: ctKey4,
  ct_entry: ctEntry,
  metrics_value: metricsValue,
  dnsproxy_key4: dnsproxyKey4,
  dnsproxy_entry4: dnsproxyEntry4,
  event_hdr: eventHdr,
};
