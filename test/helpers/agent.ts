/** Starting a real `hypha agent` process in a node's network namespace, for tests and benchmarks. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './kernel.js';

export interface AgentProcessOptions {
  /** The node's network namespace (its name under /var/run/netns); also the node name. */
  netns: string;
  podCidr: string;
  stateDir: string;
  socket: string;
  pinDir: string;
  manifests: string;
  stderr?: 'inherit' | 'ignore';
}

/**
 * Starts the agent and waits for its API socket. nsenter, not `ip netns exec`: the latter
 * remounts /sys, which hides the host's bpffs from the agent.
 */
export async function startAgentProcess(o: AgentProcessOptions): Promise<ChildProcess> {
  rmSync(o.socket, { force: true });
  const agent = spawn(
    'nsenter',
    [
      `--net=/var/run/netns/${o.netns}`,
      '--',
      join(repoRoot, 'bin/hypha'),
      'agent',
      '--node',
      o.netns,
      '--pod-cidr',
      o.podCidr,
      '--state-dir',
      o.stateDir,
      '--socket',
      o.socket,
      '--pin-dir',
      o.pinDir,
      '--manifests',
      o.manifests,
    ],
    { stdio: ['ignore', 'ignore', o.stderr ?? 'inherit'] },
  );
  for (let i = 0; i < 200 && !existsSync(o.socket) && agent.exitCode === null; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!existsSync(o.socket)) {
    agent.kill('SIGKILL');
    throw new Error(`hypha agent for ${o.netns} did not open ${o.socket}`);
  }
  return agent;
}
