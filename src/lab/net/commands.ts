/**
 * Pure builders from typed specs to `ip` argv, shared by the one-at-a-time methods of `NetNs`
 * and by `NetBatch`. Every argument is validated here, so each argv is also a safe
 * `ip -batch` line, and the root namespace is guarded: only `hy` links, no default routes.
 */
import { ValidationError } from '../../errors.js';
import {
  checkCidr,
  checkIp,
  checkLinkName,
  checkMac,
  checkMtu,
  checkNetnsName,
  checkRootLinkName,
  checkSysctl,
  NAME_PREFIX,
} from './names.js';

/** A namespace: its name, a handle with a name, or undefined for the root namespace. */
export type NsLike = string | { readonly name: string | undefined } | undefined;

export function nsName(ns: NsLike): string | undefined {
  return typeof ns === 'object' ? ns.name : ns;
}

/** One `ip` invocation: run as `ip [-n ns] args` or as a line of `ip [-n ns] -batch -`. */
export interface IpCommand {
  readonly ns: string | undefined;
  readonly args: readonly string[];
  /** What it does, for error messages. */
  readonly what: string;
}

export interface VethSpec {
  /** Name of this end. */
  readonly name: string;
  /** Namespace of this end; root when omitted. */
  readonly ns?: NsLike;
  readonly peer: string;
  /** Namespace of the peer; root when omitted. */
  readonly peerNs?: NsLike;
  readonly mtu?: number;
  readonly mac?: string;
  readonly peerMac?: string;
}

export interface LinkSettings {
  /** Administrative state. */
  readonly up?: boolean;
  readonly mtu?: number;
  readonly mac?: string;
  /** Enslave to a bridge, or `null` to release. */
  readonly master?: string | null;
}

export interface RouteSpec {
  /** `default` or a prefix such as `10.1.0.0/16` or `2001:db8::/64`. */
  readonly to: string;
  readonly via?: string;
  readonly dev?: string;
  /** Accept a gateway that is not on any connected subnet (routes into a veth with a /32). */
  readonly onlink?: boolean;
  readonly src?: string;
  readonly metric?: number;
  readonly table?: number;
  /** Family of a `default` route without `via`; otherwise inferred. Default 4. */
  readonly family?: 4 | 6;
}

export interface AddressOptions {
  /** Skip IPv6 duplicate address detection so the address is usable at once (default true). */
  readonly nodad?: boolean;
}

const ROOT_NETNS = (): string => `/proc/${process.pid}/ns/net`;

function linkName(ns: string | undefined, name: string, field = 'name'): void {
  if (ns === undefined) checkRootLinkName(name, field);
  else checkLinkName(name, field);
}

function where(ns: string | undefined): string {
  return ns === undefined ? 'root namespace' : `netns ${ns}`;
}

export function netnsAdd(name: string): IpCommand {
  checkNetnsName(name);
  return { ns: undefined, args: ['netns', 'add', name], what: `create netns ${name}` };
}

export function netnsDel(name: string): IpCommand {
  checkNetnsName(name);
  return { ns: undefined, args: ['netns', 'del', name], what: `delete netns ${name}` };
}

/** Created from the root namespace with `netns` on both ends, so no per-namespace step is needed. */
export function vethAdd(spec: VethSpec): IpCommand {
  const ns = nsName(spec.ns);
  const peerNs = nsName(spec.peerNs);
  linkName(ns, spec.name);
  linkName(peerNs, spec.peer, 'peer');
  if (ns !== undefined) checkNetnsName(ns);
  if (peerNs !== undefined) checkNetnsName(peerNs);
  const common = (mac: string | undefined, field: string): string[] => {
    const a: string[] = [];
    if (spec.mtu !== undefined) {
      checkMtu(spec.mtu);
      a.push('mtu', String(spec.mtu));
    }
    if (mac !== undefined) {
      checkMac(mac, field);
      a.push('address', mac);
    }
    return a;
  };
  return {
    ns: undefined,
    args: [
      'link',
      'add',
      'name',
      spec.name,
      ...(ns === undefined ? [] : ['netns', ns]),
      ...common(spec.mac, 'mac'),
      'type',
      'veth',
      'peer',
      'name',
      spec.peer,
      ...(peerNs === undefined ? [] : ['netns', peerNs]),
      ...common(spec.peerMac, 'peerMac'),
    ],
    what: `create veth ${spec.name} (${where(ns)}) <-> ${spec.peer} (${where(peerNs)})`,
  };
}

export function bridgeAdd(
  ns: string | undefined,
  name: string,
  opts: { mtu?: number; mac?: string } = {},
): IpCommand {
  linkName(ns, name);
  const args = ['link', 'add', 'name', name, 'type', 'bridge'];
  if (opts.mtu !== undefined) {
    checkMtu(opts.mtu);
    args.push('mtu', String(opts.mtu));
  }
  if (opts.mac !== undefined) {
    checkMac(opts.mac);
    args.push('address', opts.mac);
  }
  return { ns, args, what: `create bridge ${name} in ${where(ns)}` };
}

export function linkSet(ns: string | undefined, name: string, settings: LinkSettings): IpCommand {
  linkName(ns, name);
  const args = ['link', 'set', 'dev', name];
  if (settings.mtu !== undefined) {
    checkMtu(settings.mtu);
    args.push('mtu', String(settings.mtu));
  }
  if (settings.mac !== undefined) {
    checkMac(settings.mac);
    args.push('address', settings.mac);
  }
  if (settings.master === null) args.push('nomaster');
  else if (settings.master !== undefined) {
    linkName(ns, settings.master, 'master');
    args.push('master', settings.master);
  }
  if (settings.up !== undefined) args.push(settings.up ? 'up' : 'down');
  if (args.length === 4) throw new ValidationError('link', name, 'nothing to set');
  return { ns, args, what: `set link ${name} in ${where(ns)}` };
}

export function linkMove(
  from: string | undefined,
  name: string,
  to: string | undefined,
  newName?: string,
): IpCommand {
  linkName(from, name);
  if (newName !== undefined) linkName(to, newName, 'newName');
  else linkName(to, name);
  if (to !== undefined) checkNetnsName(to);
  // A path names our own namespace even when pid 1 lives elsewhere (containers).
  const args = ['link', 'set', 'dev', name, 'netns', to ?? ROOT_NETNS()];
  if (newName !== undefined) args.push('name', newName);
  return { ns: from, args, what: `move link ${name} from ${where(from)} to ${where(to)}` };
}

export function linkDel(ns: string | undefined, name: string): IpCommand {
  linkName(ns, name);
  return { ns, args: ['link', 'del', 'dev', name], what: `delete link ${name} in ${where(ns)}` };
}

function addr(
  op: 'add' | 'del',
  ns: string | undefined,
  dev: string,
  cidr: string,
  opts: AddressOptions,
): IpCommand {
  linkName(ns, dev, 'dev');
  const family = checkCidr(cidr, 'address');
  const args = ['addr', op, cidr, 'dev', dev];
  if (op === 'add' && family === 6 && opts.nodad !== false) args.push('nodad');
  return { ns, args, what: `${op === 'add' ? 'add' : 'delete'} address ${cidr} on ${dev} in ${where(ns)}` };
}

export function addrAdd(
  ns: string | undefined,
  dev: string,
  cidr: string,
  opts: AddressOptions = {},
): IpCommand {
  return addr('add', ns, dev, cidr, opts);
}

export function addrDel(ns: string | undefined, dev: string, cidr: string): IpCommand {
  return addr('del', ns, dev, cidr, {});
}

export function route(op: 'add' | 'replace' | 'del', ns: string | undefined, spec: RouteSpec): IpCommand {
  const viaFamily = spec.via === undefined ? undefined : checkIp(spec.via, 'via');
  let dst = spec.to;
  if (dst === 'default') {
    // An explicit prefix carries the family, which `-6` cannot do inside a batch line.
    dst = (viaFamily ?? spec.family ?? 4) === 6 ? '::/0' : '0.0.0.0/0';
  } else if (dst.includes('/')) checkCidr(dst, 'to');
  else checkIp(dst, 'to');
  if (ns === undefined) {
    // Routes in the machine's own namespace may only point into our links, never replace its way out.
    if (spec.dev === undefined)
      throw new ValidationError('route', 'dev', `a root-namespace route needs a ${NAME_PREFIX} dev`);
    if (dst.endsWith('/0'))
      throw new ValidationError('route', 'to', 'refusing a default route in the root namespace');
  }
  const args = ['route', op, dst];
  if (spec.via !== undefined) args.push('via', spec.via);
  if (spec.dev !== undefined) {
    linkName(ns, spec.dev, 'dev');
    args.push('dev', spec.dev);
  }
  if (spec.onlink) args.push('onlink');
  if (spec.src !== undefined) {
    checkIp(spec.src, 'src');
    args.push('src', spec.src);
  }
  if (spec.metric !== undefined) args.push('metric', String(Math.trunc(spec.metric)));
  if (spec.table !== undefined) args.push('table', String(Math.trunc(spec.table)));
  return { ns, args, what: `${op} route ${spec.to} in ${where(ns)}` };
}

/** sysctl inside a namespace, via `ip netns exec` (works as an `ip -batch` line too). */
export function sysctlSet(ns: string, key: string, value: string | number): IpCommand {
  checkNetnsName(ns);
  const v = String(value);
  checkSysctl(key, v);
  return {
    ns,
    args: ['netns', 'exec', ns, 'sysctl', '-qw', `${key}=${v}`],
    what: `set ${key}=${v} in netns ${ns}`,
  };
}

/** Root-namespace sysctls are the machine's; only those of our own `hy` interfaces may change. */
export function checkRootSysctl(key: string, value: string): void {
  checkSysctl(key, value);
  if (!key.split('.').some((part) => part.startsWith(NAME_PREFIX))) {
    throw new ValidationError(
      'sysctl',
      key,
      `refusing to change a root-namespace sysctl that is not of a ${NAME_PREFIX} link`,
    );
  }
}

/**
 * Lines deleting several links at once: each is put in a fresh random link group, then the
 * group is deleted in one request, so the kernel unregisters them together and waits for
 * one RCU grace period instead of one per link (about 20 ms each).
 */
export function linkDelMany(names: readonly string[]): string[] {
  if (names.length < 2) return names.map((n) => `link del dev ${n}`);
  // Never 0, the default group every other link is in.
  const group = 1 + Math.floor(Math.random() * 0x7ffffffe);
  return [...names.map((n) => `link set dev ${n} group ${group}`), `link del group ${group}`];
}
