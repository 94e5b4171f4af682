/**
 * Readiness: probes run inside the pod's namespaces (the lab's kubelet has no route of its
 * own to the pod), each a short process: bash's /dev/tcp for TCP, curl for HTTP(S), the
 * command itself for exec.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecResult } from '../net/index.js';
import type { ProbeAction, Readiness } from './pod.js';

/** Runs argv in the container (its namespaces and environment), killing it after `timeoutMs`. */
export type RunInContainer = (argv: readonly string[], timeoutMs: number) => Promise<ExecResult>;

/** Waits between port checks before a container first answers: quick at first, then 1 s. */
const PORT_POLL_MS = { first: 50, max: 1000 };
const PORT_TIMEOUT_MS = 1000;

/** One probe; true on success. A probe that cannot run counts as a failure, like one that times out. */
export async function probeOnce(
  action: ProbeAction,
  podIp: string,
  run: RunInContainer,
  timeoutMs: number,
): Promise<boolean> {
  let argv: string[];
  switch (action.kind) {
    case 'tcp':
      argv = ['bash', '-c', 'exec 3<>"/dev/tcp/$0/$1"', action.host ?? podIp, String(action.port)];
      break;
    case 'http': {
      const host = action.host ?? podIp;
      const url = `${action.scheme}://${host.includes(':') ? `[${host}]` : host}:${action.port}${action.path}`;
      argv = ['curl', '-sk', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', String(timeoutMs / 1000)];
      for (const h of action.headers) argv.push('-H', `${h.name}: ${h.value}`);
      argv.push('-A', 'kube-probe/1.33', url);
      const r = await run(argv, timeoutMs + 1000).catch(() => undefined);
      const status = Number(r?.stdout.trim());
      return status >= 200 && status < 400;
    }
    case 'exec':
      argv = [...action.command];
      break;
  }
  const r = await run(argv, timeoutMs).catch(() => undefined);
  return r?.code === 0;
}

/**
 * Drives a container's readiness from its start until `signal` aborts (the container
 * exited or is being stopped), calling `set` on each change.
 */
export async function watchReadiness(
  readiness: Readiness,
  podIp: string,
  run: RunInContainer,
  set: (ready: boolean) => void,
  signal: AbortSignal,
): Promise<void> {
  try {
    switch (readiness.kind) {
      case 'running':
        set(true);
        return;
      case 'ports': {
        // Ready once every port accepts a connection; from then on only an exit unreadies it.
        let wait = PORT_POLL_MS.first;
        for (;;) {
          const results = await Promise.all(
            readiness.ports.map((port) =>
              probeOnce({ kind: 'tcp', host: undefined, port }, podIp, run, PORT_TIMEOUT_MS),
            ),
          );
          if (signal.aborted) return;
          if (results.every(Boolean)) {
            set(true);
            return;
          }
          await sleep(wait, undefined, { signal });
          wait = Math.min(wait * 2, PORT_POLL_MS.max);
        }
      }
      case 'probe': {
        const t = readiness.timing;
        let ready = false;
        let streak = 0;
        await sleep(t.initialDelayMs, undefined, { signal });
        for (;;) {
          const ok = await probeOnce(readiness.action, podIp, run, t.timeoutMs);
          if (signal.aborted) return;
          // A streak counts consecutive results that disagree with the current state.
          streak = ok !== ready ? streak + 1 : 0;
          if (streak >= (ready ? t.failureThreshold : t.successThreshold)) {
            ready = ok;
            streak = 0;
            set(ready);
          }
          await sleep(t.periodMs, undefined, { signal });
        }
      }
    }
  } catch (err) {
    if (signal.aborted) return;
    throw err;
  }
}
