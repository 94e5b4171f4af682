/** Helpers for tests that load BPF objects. */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isBpffs } from '../../src/bpf/index.js';
import { privilegedRequired, privilegeProblem } from './privileged.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (tests run from dist/test/...). */
export const repoRoot = join(here, '../../..');

/** A BPF object built by `make` from test/bpf/*.bpf.c. */
export function testObject(name: string): string {
  return join(repoRoot, 'dist/test/bpf', `${name}.bpf.o`);
}

/** Open file descriptors of this process, to catch leaks around SDK calls. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Runs fn and fails if it leaves file descriptors open. */
export async function withoutFdLeak<T>(fn: () => T | Promise<T>): Promise<T> {
  const before = openFds();
  const result = await fn();
  const after = openFds();
  if (after !== before) throw new Error(`leaked ${after - before} file descriptor(s)`);
  return result;
}

/**
 * For `describe(name, { skip: skipUnlessPrivileged() }, ...)` around tests that load BPF:
 * the privileges of privileged.ts plus bpffs. False to run, else the reason to skip;
 * under HYPHA_REQUIRE_PRIVILEGED=1 (CI) a missing privilege is an error, never a skip.
 */
export function skipUnlessPrivileged(): string | false {
  const reason =
    privilegeProblem() ?? (isBpffs('/sys/fs/bpf') ? null : 'bpffs is not mounted on /sys/fs/bpf');
  if (reason === null) return false;
  if (privilegedRequired) {
    throw new Error(`privileged tests must run here (HYPHA_REQUIRE_PRIVILEGED=1), but: ${reason}`);
  }
  return reason;
}
