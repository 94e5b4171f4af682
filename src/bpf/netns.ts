import { closeSync, openSync } from 'node:fs';
import { BpfError } from './errors.js';
import { errno, koffi } from './ffi.js';

const libc = koffi.load('libc.so.6');
const setns = libc.func('int setns(int fd, int nstype)') as (fd: number, type: number) => number;
const CLONE_NEWNET = 0x40000000;

/** A named namespace (`ip netns add NAME`) or a path to a netns file. */
export function netnsPath(ns: string): string {
  return ns.includes('/') ? ns : `/var/run/netns/${ns}`;
}

/**
 * Runs fn with this thread in another network namespace, then returns to the current
 * one. Interface names, tc and XDP attachment resolve in the namespace the calling
 * thread is in; fn must be synchronous (an await would run other code in the wrong
 * namespace).
 */
export function withNetns<T>(ns: string, fn: () => T): T {
  const path = netnsPath(ns);
  let target: number;
  try {
    target = openSync(path, 'r');
  } catch (err) {
    throw new BpfError(`netns ${ns}: open ${path}`, (err as { errno?: number }).errno ?? 2, undefined, {
      cause: err,
    });
  }
  const home = openSync('/proc/thread-self/ns/net', 'r');
  try {
    if (setns(target, CLONE_NEWNET) < 0) throw new BpfError(`netns ${ns}: enter`, errno());
    try {
      return fn();
    } finally {
      returnHome(home, ns);
    }
  } finally {
    closeSync(target);
    closeSync(home);
  }
}

function returnHome(home: number, ns: string): void {
  if (setns(home, CLONE_NEWNET) === 0) return;
  // Staying in the wrong namespace would silently misdirect everything after: stop.
  process.stderr.write(
    `fatal: ${new BpfError(`netns ${ns}: return to the original namespace`, errno()).message}\n`,
  );
  process.abort();
}
