/** Names: validation of interface, namespace and address arguments, and unique `hy` names. */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { ValidationError } from '../../errors.js';

/** Everything this library creates where others live (namespaces, root-namespace links) starts with this. */
export const NAME_PREFIX = 'hy';
/** IFNAMSIZ is 16 including the terminating NUL. */
export const MAX_IFNAME_LENGTH = 15;
/** Namespace names become files under /run/netns; keep them short enough to read in `ip netns`. */
export const MAX_NETNS_NAME_LENGTH = 64;

// Stricter than the kernel (which accepts anything but '/', ':' and whitespace) so that every
// name is safe as a single token in an `ip -batch` line and in a sysctl key.
const NAME_CHARS = /^[A-Za-z0-9_.-]+$/;

// pid in base 36 plus random characters: unique among concurrent processes, and a rerun
// with a recycled pid does not collide with a leftover of a crashed run.
const processTag =
  process.pid.toString(36) + (randomBytes(2).readUInt16LE(0) % 1296).toString(36).padStart(2, '0');
let counter = 0;

/**
 * A fresh `hy`-prefixed name that fits an interface name (15 characters):
 * `hy` + prefix + pid and random tag + a per-process counter. A prefix of up to 4 characters
 * always fits.
 */
export function uniqueName(prefix = ''): string {
  if (!/^[a-z0-9]*$/.test(prefix)) {
    throw new ValidationError('uniqueName', 'prefix', `"${prefix}" must be lower-case letters and digits`);
  }
  const name = NAME_PREFIX + prefix + processTag + (counter++).toString(36);
  if (name.length > MAX_IFNAME_LENGTH) {
    throw new ValidationError(
      'uniqueName',
      'prefix',
      `"${prefix}" is too long: "${name}" exceeds ${MAX_IFNAME_LENGTH} characters`,
    );
  }
  return name;
}

/** Throws unless `name` is a valid interface name. */
export function checkLinkName(name: string, field = 'name'): void {
  if (name.length === 0 || name.length > MAX_IFNAME_LENGTH) {
    throw new ValidationError(
      'link',
      field,
      `"${name}" must be 1 to ${MAX_IFNAME_LENGTH} characters (IFNAMSIZ), has ${name.length}`,
    );
  }
  if (!NAME_CHARS.test(name) || name === '.' || name === '..') {
    throw new ValidationError('link', field, `"${name}" may contain only letters, digits, '_', '.' and '-'`);
  }
}

/** Throws unless `name` is a valid, `hy`-prefixed namespace name. */
export function checkNetnsName(name: string): void {
  if (!name.startsWith(NAME_PREFIX)) {
    throw new ValidationError('netns', 'name', `"${name}" must start with "${NAME_PREFIX}"`);
  }
  if (name.length > MAX_NETNS_NAME_LENGTH) {
    throw new ValidationError(
      'netns',
      'name',
      `"${name}" is longer than ${MAX_NETNS_NAME_LENGTH} characters`,
    );
  }
  if (!NAME_CHARS.test(name)) {
    throw new ValidationError(
      'netns',
      'name',
      `"${name}" may contain only letters, digits, '_', '.' and '-'`,
    );
  }
}

/** Links this library may create or change in the root namespace: only its own. */
export function checkRootLinkName(name: string, field = 'name'): void {
  checkLinkName(name, field);
  if (!name.startsWith(NAME_PREFIX)) {
    throw new ValidationError(
      'link',
      field,
      `"${name}" is in the root namespace and not "${NAME_PREFIX}"-prefixed; refusing to touch the machine's own links`,
    );
  }
}

/** Returns the IP family (4 or 6) of an address, or throws. */
export function checkIp(address: string, field: string): 4 | 6 {
  const family = isIP(address);
  if (family === 0) throw new ValidationError('address', field, `"${address}" is not an IP address`);
  return family as 4 | 6;
}

/** Returns the family of `addr/len`, or throws. */
export function checkCidr(cidr: string, field: string): 4 | 6 {
  const slash = cidr.indexOf('/');
  if (slash < 0)
    throw new ValidationError('address', field, `"${cidr}" needs a prefix length (e.g. 10.0.0.1/24)`);
  const family = checkIp(cidr.slice(0, slash), field);
  const len = cidr.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(len) || Number(len) > max) {
    throw new ValidationError('address', field, `"${cidr}": prefix length must be 0 to ${max}`);
  }
  return family;
}

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
export function checkMac(mac: string, field = 'mac'): void {
  if (!MAC.test(mac))
    throw new ValidationError('link', field, `"${mac}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
}

export function checkMtu(mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new ValidationError('link', 'mtu', `${mtu} is not an MTU between 68 and 65535`);
  }
}

/** sysctl keys in dotted form; '/' stands for a '.' inside an interface name, as sysctl(8) does. */
export function checkSysctl(key: string, value: string): void {
  if (!/^[a-z0-9_]+(\.[A-Za-z0-9_/-]+)+$/.test(key)) {
    throw new ValidationError('sysctl', 'key', `"${key}" is not a sysctl key like net.ipv4.ip_forward`);
  }
  if (!/^[A-Za-z0-9_.:-]+$/.test(value)) {
    throw new ValidationError('sysctl', key, `value "${value}" must be a single word`);
  }
}
