import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { NotSupportedError } from '../errors.js';

const BPF_FS_MAGIC = 0xcafe4a11;

/** Whether a path lies on a bpffs mount. */
export function isBpffs(path: string): boolean {
  try {
    return statfsSync(path).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** Makes `dir` (and parents) on bpffs; a clear error if it would not be on bpffs. */
export function ensurePinDir(dir: string): void {
  // The nearest existing ancestor tells which filesystem the directory will be on.
  let probe = dir;
  while (probe !== '/' && !existsSync(probe)) probe = dirname(probe);
  if (!isBpffs(probe)) {
    throw new NotSupportedError(
      `pin directory ${dir} is not on bpffs: mount it with 'mount -t bpf bpf /sys/fs/bpf' (setup.sh does) and pin below it`,
    );
  }
  mkdirSync(dir, { recursive: true });
}

/** Removes pins: a pinned object goes when its last pin and fd are gone. */
export function unpin(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

/** The cgroup v2 root on this machine (unified or hybrid hierarchy). */
export function cgroup2Root(): string {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
  for (const line of mounts) {
    const [, mountpoint, fstype] = line.split(' ');
    if (fstype === 'cgroup2' && mountpoint) return mountpoint;
  }
  throw new NotSupportedError('no cgroup v2 mount found in /proc/self/mounts');
}
