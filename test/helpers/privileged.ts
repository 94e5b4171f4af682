/**
 * Privileged tests: skipped outside CI when this process cannot manage network namespaces,
 * failed instead when HYPHA_REQUIRE_PRIVILEGED=1 (CI must never skip them silently).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, type SuiteContext, type TestContext, test } from 'node:test';

/** True in CI: a privileged test that cannot run is a failure. */
export const privilegedRequired = process.env.HYPHA_REQUIRE_PRIVILEGED === '1';

const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;

let problem: string | null | undefined;

/** Why privileged tests cannot run here, or null when they can. Probed once per process. */
export function privilegeProblem(): string | null {
  if (problem !== undefined) return problem;
  problem = probe();
  return problem;
}

function probe(): string | null {
  if (process.getuid?.() !== 0) return 'not running as root';
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  const caps = BigInt(`0x${capEff ?? '0'}`);
  for (const [bit, name] of [
    [CAP_NET_ADMIN, 'CAP_NET_ADMIN'],
    [CAP_SYS_ADMIN, 'CAP_SYS_ADMIN'],
  ] as const) {
    if ((caps & (1n << BigInt(bit))) === 0n) return `missing ${name}`;
  }
  // Capabilities can be present while namespaces are not (seccomp, read-only /run): try one.
  const name = `hyprobe${process.pid.toString(36)}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.error) return `cannot run ip: ${add.error.message}`;
  if (add.status !== 0) return `cannot create a network namespace: ${add.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', name]);
  return null;
}

function failure(reason: string): Error {
  return new Error(`privileged test cannot run (${reason}), and HYPHA_REQUIRE_PRIVILEGED=1 requires it`);
}

/**
 * Call first in a privileged test (or its `before` hook). Returns true when the test can go
 * on; outside CI, otherwise skips the test and returns false; in CI, throws.
 * A suite's `before` hook cannot skip: use `privilegedSuite` or `{ skip: privilegedSkip() }` there.
 */
export function requirePrivileged(t: TestContext | SuiteContext): boolean {
  const reason = privilegeProblem();
  if (reason === null) return true;
  if (privilegedRequired) throw failure(reason);
  if ('skip' in t) t.skip(reason);
  return false;
}

/** For `describe(name, { skip: privilegedSkip() }, ...)`: the skip reason, or false to run. */
export function privilegedSkip(): string | false {
  const reason = privilegeProblem();
  return reason === null || privilegedRequired ? false : reason;
}

/** A test that needs root and network namespaces. */
export function privilegedTest(name: string, fn: (t: TestContext) => void | Promise<void>): void {
  test(name, async (t) => {
    if (!requirePrivileged(t)) return;
    await fn(t);
  });
}

/** A suite of privileged tests: skipped as a whole outside CI, failing in CI, when not capable. */
export function privilegedSuite(name: string, fn: (s: SuiteContext) => void | Promise<void>): void {
  const skip = privilegedSkip();
  describe(name, { skip }, async (s) => {
    const reason = privilegeProblem();
    if (reason !== null && privilegedRequired) {
      test('privileges', () => {
        throw failure(reason);
      });
      return;
    }
    await fn(s);
  });
}
