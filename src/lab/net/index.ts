/**
 * Network namespaces and links for tests and the lab, over iproute2.
 *
 * ```ts
 * await using net = new NetScope();
 * const [a, b] = await net.namespaces(2);
 * await a.addVeth('eth0', { peer: 'eth0', peerNs: b });
 * ```
 */
export { type BatchRunOptions, NetBatch } from './batch.js';
export type { AddressOptions, LinkSettings, NsLike, RouteSpec, VethSpec } from './commands.js';
export { NetError, type NetErrorDetails } from './errors.js';
export type { ExecOptions, ExecResult } from './exec.js';
export { MAX_IFNAME_LENGTH, NAME_PREFIX, uniqueName } from './names.js';
export { type Address, type Link, NETNS_RUN_DIR, NetNs, type NetResource, type Route } from './netns.js';
export { NetScope } from './scope.js';
