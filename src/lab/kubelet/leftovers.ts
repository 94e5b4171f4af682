/**
 * The last line of cleanup: if the process exits without `PodRuntime.close()`, the
 * container process groups it started are killed and the pod namespaces it made are
 * deleted, synchronously, from the `exit` handler.
 */
import { spawnSync } from 'node:child_process';

const groups = new Set<number>();
const namespaces = new Set<string>();
let installed = false;

function cleanup(): void {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {}
  }
  if (namespaces.size > 0) {
    const input = [...namespaces].map((n) => `netns del ${n}\n`).join('');
    spawnSync('ip', ['-force', '-batch', '-'], { input, stdio: ['pipe', 'ignore', 'ignore'] });
  }
  groups.clear();
  namespaces.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanup);
}

export const leftovers = {
  /** A process group (a detached child's pid) to kill at exit. */
  addGroup(pgid: number): void {
    install();
    groups.add(pgid);
  },
  deleteGroup(pgid: number): void {
    groups.delete(pgid);
  },
  addNetns(name: string): void {
    install();
    namespaces.add(name);
  },
  deleteNetns(name: string): void {
    namespaces.delete(name);
  },
};
