import { mkdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
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

/** Makes `dir` (and parents) under a bpffs mount; a clear error if bpffs is not mounted there. */
export function ensurePinDir(dir: string): void {
  const root = dir.split('/').slice(0, 4).join('/'); // /sys/fs/bpf
  if (!isBpffs(root)) {
    throw new NotSupportedError(
      `${root} is not a bpffs mount: mount it with 'mount -t bpf bpf ${root}' (setup.sh does)`,
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
