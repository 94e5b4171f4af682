/**
 * A pod's sandbox: its network namespace, plus a mount and UTS namespace held open by a
 * pause process, as the pause container does in Kubernetes. The pause process bind-mounts
 * the pod's resolv.conf and hosts over /etc's and sets the hostname; every container,
 * probe and exec then enters all three namespaces with nsenter, so they see the same files
 * and name and share `localhost`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { NetError } from '../net/index.js';
import { leftovers } from './leftovers.js';

/** Kills the process if this process dies first (a parent-death signal survives exec). */
const ORPHAN_GUARD = ['setpriv', '--pdeathsig', 'KILL', '--'];

const PAUSE_SCRIPT = `set -e
[ -z "$1" ] || mount --bind "$1" /etc/resolv.conf
mount --bind "$2" /etc/hosts
echo "$3" > /proc/sys/kernel/hostname
echo ready
exec sleep infinity >/dev/null 2>&1`;

const START_TIMEOUT_MS = 10_000;

export interface SandboxOptions {
  /** The pod's network namespace, a path such as /var/run/netns/NAME. */
  readonly netnsPath: string;
  readonly hostname: string;
  /** Files to bind over /etc/hosts and (unless undefined: the node's) /etc/resolv.conf. */
  readonly hostsFile: string;
  readonly resolvConfFile: string | undefined;
  /** A cgroup v2 directory every process of the pod joins first (the node's, for its socket hooks). */
  readonly cgroup?: string | undefined;
}

/** Joins the cgroup in $0, then runs the rest: the process is in it before its first connect(). */
const JOIN_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"';

export class Sandbox {
  private constructor(
    readonly netnsPath: string,
    private readonly pause: ChildProcess,
    private readonly pid: number,
    private readonly cgroup: string | undefined,
  ) {}

  static async start(o: SandboxOptions): Promise<Sandbox> {
    const argv = [
      'nsenter',
      `--net=${o.netnsPath}`,
      '--',
      'unshare',
      '--mount',
      '--uts',
      '--',
      'sh',
      '-c',
      PAUSE_SCRIPT,
      'pause',
      o.resolvConfFile ?? '',
      o.hostsFile,
      o.hostname,
    ];
    const pause = spawnGroup(argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    pause.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    pause.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    const started = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), START_TIMEOUT_MS);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        pause.stdout?.off('data', check);
        pause.off('exit', exited);
        resolve(ok);
      };
      const check = () => out.includes('ready\n') && done(true);
      const exited = () => done(false);
      pause.stdout?.on('data', check);
      pause.once('exit', exited);
      pause.once('error', exited);
    });
    if (!started || pause.pid === undefined) {
      await stopGroup(pause, 0);
      throw NetError.commandFailed(`start the sandbox of ${o.netnsPath}`, argv, {
        code: pause.exitCode,
        signal: pause.signalCode,
        stderr: err || (started ? '' : 'no answer'),
      });
    }
    pause.stdout?.resume();
    pause.stderr?.resume();
    return new Sandbox(o.netnsPath, pause, pause.pid, o.cgroup);
  }

  /** The argv that runs `argv` inside the pod's namespaces, in `workingDir` (default `/`). */
  enter(argv: readonly string[], workingDir = '/'): string[] {
    return [
      ...(this.cgroup ? ['sh', '-c', JOIN_CGROUP, this.cgroup] : []),
      'nsenter',
      `--net=${this.netnsPath}`,
      `--mount=/proc/${this.pid}/ns/mnt`,
      `--uts=/proc/${this.pid}/ns/uts`,
      `--wdns=${workingDir}`,
      '--',
      ...argv,
    ];
  }

  /** Starts a container's main process in its own process group. */
  spawn(
    argv: readonly string[],
    o: { env: NodeJS.ProcessEnv; workingDir?: string; stdout: number },
  ): ChildProcess {
    return spawnGroup([...ORPHAN_GUARD, ...this.enter(argv, o.workingDir)], {
      env: o.env,
      stdio: ['ignore', o.stdout, o.stdout],
    });
  }

  /** True while the pause process holds the namespaces. */
  get alive(): boolean {
    return this.pause.exitCode === null && this.pause.signalCode === null;
  }

  async stop(): Promise<void> {
    await stopGroup(this.pause, 0);
  }
}

function spawnGroup(
  argv: readonly string[],
  o: { env?: NodeJS.ProcessEnv; stdio: ['ignore', 'pipe' | number, 'pipe' | number] },
): ChildProcess {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new TypeError('spawnGroup: empty argv');
  const child = spawn(cmd, args, { ...o, detached: true });
  const pid = child.pid;
  if (pid !== undefined) {
    leftovers.addGroup(pid);
    child.once('exit', () => leftovers.deleteGroup(pid));
  }
  // A spawn failure (ENOENT) arrives as 'error', then 'exit' may never come: callers watch both.
  child.once('error', () => {});
  return child;
}

/** True once the process has exited (or could never start). */
export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null || child.pid === undefined;
}

/**
 * SIGTERM to the child's whole process group, SIGKILL after `graceMs`; resolves when the
 * child has exited. A grace of 0 kills at once.
 */
export async function stopGroup(child: ChildProcess, graceMs: number): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (graceMs <= 0) signalGroup(pid, 'SIGKILL');
  else {
    signalGroup(pid, 'SIGTERM');
    const timer = setTimeout(() => signalGroup(pid, 'SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
  }
  await gone;
}

/**
 * Signals the process group led by `pgid`. Called with SIGKILL when a container's main
 * process exits, so that what it left running goes with it, as when a container's init dies.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // The group is already empty.
  }
}
