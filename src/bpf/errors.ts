import { constants } from 'node:os';
import { NotSupportedError } from '../errors.js';
import { errno as lastErrno, lib, takeLibbpfLog } from './ffi.js';

const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);
}

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

/**
 * A failed BPF operation: `what` names the object and the operation
 * (`map hypha_ct4: update`), `errno` the kernel's answer.
 */
export class BpfError extends Error {
  override name = 'BpfError';
  readonly errno: number;
  readonly code: string;
  constructor(what: string, errno: number, detail?: string, options?: ErrorOptions) {
    const e = Math.abs(errno);
    super(`${what}: ${errnoName(e)} (${lib.strerror(e)})${detail ? `: ${detail}` : ''}`, options);
    this.errno = e;
    this.code = errnoName(e);
  }
}

/** The verifier rejected a program; `log` holds its lines, the reason at the end. */
export class VerifierError extends BpfError {
  override name = 'VerifierError';
  constructor(
    what: string,
    errno: number,
    readonly program: string,
    readonly log: string[],
  ) {
    const tail = log.slice(-12).join('\n  ');
    super(what, errno, `verifier rejected program ${program}:\n  ${tail}`);
  }
}

export { NotSupportedError };

/** Throws a BpfError for a negative libbpf return code (libbpf 1.x returns -errno). */
export function check(ret: number, what: string): number {
  if (ret < 0) throw new BpfError(what, -ret, libbpfDetail());
  return ret;
}

/** Throws for a NULL pointer from libbpf, which then sets errno. */
export function checkPtr<T extends bigint | null>(ptr: T, what: string): NonNullable<T> {
  if (ptr === null || ptr === 0n) throw new BpfError(what, lastErrno() || 22, libbpfDetail());
  return ptr as NonNullable<T>;
}

/** For raw syscall wrappers that return -1 and set errno. */
export function checkFd(ret: number, what: string): number {
  if (ret < 0) throw new BpfError(what, ret === -1 ? lastErrno() : -ret, libbpfDetail());
  return ret;
}

function libbpfDetail(): string | undefined {
  const log = takeLibbpfLog()
    .split('\n')
    .map((l) => l.replace(/^libbpf: /, '').trim())
    .filter(Boolean);
  return log.length ? log.slice(-3).join('; ') : undefined;
}
