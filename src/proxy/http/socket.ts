/**
 * The two socket options Node.js has no API for, set through libc before Node takes the
 * descriptor over:
 *   IP_TRANSPARENT on the proxy's listener: connections the datapath assigned to it keep
 *     their original destination as the local address, and answering from an address
 *     that is not the node's needs the option (without it the SYN-ACK has no route).
 *   SO_MARK on the proxy's connections to the destination: the datapath reads who the
 *     client was from the mark (see bpf/include/proxy.h); the egress proxy's are bound
 *     transparently to the client's own address and port as well.
 * Both need CAP_NET_ADMIN.
 */
import { createRequire } from 'node:module';
import { isIPv4, Socket } from 'node:net';
import type koffiTypes from 'koffi';

const require = createRequire(import.meta.url);
const koffi = require('koffi') as typeof koffiTypes;
const libc = koffi.load('libc.so.6');

const socketFn = libc.func('int socket(int domain, int type, int protocol)') as (
  d: number,
  t: number,
  p: number,
) => number;
const setsockoptFn = libc.func(
  'int setsockopt(int fd, int level, int name, _In_ uint8_t *value, uint32_t len)',
) as (fd: number, level: number, name: number, value: Uint8Array, len: number) => number;
const bindFn = libc.func('int bind(int fd, _In_ uint8_t *addr, uint32_t len)') as (
  fd: number,
  addr: Uint8Array,
  len: number,
) => number;
const closeFn = libc.func('int close(int fd)') as (fd: number) => number;
const strerror = libc.func('const char *strerror(int errnum)') as (e: number) => string;

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SOL_IP = 0;
const SO_REUSEADDR = 2;
const SO_REUSEPORT = 15;
const SO_MARK = 36;
const IP_TRANSPARENT = 19;

export class SocketOptionError extends Error {
  constructor(
    what: string,
    readonly errno: number,
  ) {
    super(`${what}: ${strerror(errno)} (errno ${errno})`);
    this.name = 'SocketOptionError';
  }
}

function int32(v: number): Uint8Array {
  return new Uint8Array(new Uint32Array([v >>> 0]).buffer);
}

function tcpSocket(what: string): number {
  const fd = socketFn(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SocketOptionError(`${what}: socket`, koffi.errno());
  return fd;
}

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  if (setsockoptFn(fd, level, name, int32(value), 4) < 0) {
    const e = koffi.errno();
    closeFn(fd);
    throw new SocketOptionError(what, e);
  }
}

/**
 * A bound (not yet listening) IPv4 TCP socket with IP_TRANSPARENT: hand its descriptor to
 * `server.listen({ fd })`, which owns it from then on. With `reusePort`, several processes
 * listen on the one address (a SO_REUSEPORT group): the kernel picks one per connection,
 * also for connections the datapath assigned to the group with bpf_sk_assign.
 */
export function transparentListener(host: string, port: number, reusePort = false): number {
  if (!isIPv4(host)) throw new TypeError(`transparentListener: ${host} is not an IPv4 address`);
  const what = `listener ${host}:${port}`;
  const fd = tcpSocket(what);
  setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, `${what}: SO_REUSEADDR`);
  if (reusePort) setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, `${what}: SO_REUSEPORT`);
  setInt(fd, SOL_IP, IP_TRANSPARENT, 1, `${what}: IP_TRANSPARENT`);
  bindTo(fd, host, port, what);
  return fd;
}

function bindTo(fd: number, ip: string, port: number, what: string): void {
  const sa = new Uint8Array(16);
  const dv = new DataView(sa.buffer);
  dv.setUint16(0, AF_INET, true);
  dv.setUint16(2, port, false);
  sa.set(ip.split('.').map(Number), 4);
  if (bindFn(fd, sa, sa.length) < 0) {
    const e = koffi.errno();
    closeFn(fd);
    throw new SocketOptionError(`${what}: bind ${ip}:${port}`, e);
  }
}

/**
 * An unconnected TCP socket whose packets carry `mark`; call `connect()` on it. With
 * `source`, it is bound there first, transparently (the address need not be the node's;
 * the port may be another connection's too, the 4-tuples differ).
 */
export function markedSocket(mark: number, source?: { ip: string; port: number }): Socket {
  const fd = tcpSocket('upstream');
  setInt(fd, SOL_SOCKET, SO_MARK, mark, `upstream: SO_MARK ${mark.toString(16)}`);
  if (source) {
    if (!isIPv4(source.ip)) {
      closeFn(fd);
      throw new TypeError(`markedSocket: ${source.ip} is not an IPv4 address`);
    }
    setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, 'upstream: SO_REUSEADDR');
    setInt(fd, SOL_IP, IP_TRANSPARENT, 1, 'upstream: IP_TRANSPARENT');
    bindTo(fd, source.ip, source.port, 'upstream');
  }
  try {
    // manualStart: nothing to read before connect(); connect() starts reading.
    return new Socket({ fd, readable: true, writable: true, manualStart: true } as ConstructorParameters<
      typeof Socket
    >[0]);
  } catch (err) {
    closeFn(fd);
    throw err;
  }
}
