/**
 * One container of a pod: its process (restarted with the kubelet's back-off when the
 * restart policy says so), its readiness, and the state a ContainerStatus reports.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { constants } from 'node:os';
import { execFile } from '../net/exec.js';
import type { ContainerDef, PodDef } from './pod.js';
import { watchReadiness } from './probe.js';
import { exited, type Sandbox, signalGroup, stopGroup } from './sandbox.js';
import { type ContainerState, type ContainerStatus, timestamp } from './status.js';

export interface ContainerOptions {
  readonly pod: PodDef;
  readonly nodeName: string;
  readonly hostIp: string | undefined;
  readonly logFile: string;
  /** The stand-in for an image's entrypoint: `node serve.js CONFIG`. */
  readonly builtin: { readonly node: string; readonly script: string };
  /** Restart delays: the first restart is immediate, then `baseMs` doubling up to `maxMs`. */
  readonly backoff: { readonly baseMs: number; readonly maxMs: number };
  /** Called on every change of state, readiness or restart count. */
  readonly changed: () => void;
}

type Terminated = {
  readonly kind: 'terminated';
  readonly id: string;
  readonly exitCode: number;
  readonly signal: number | undefined;
  readonly reason: string;
  readonly message: string | undefined;
  readonly startedAt: Date;
  readonly finishedAt: Date;
};

type State =
  | { readonly kind: 'waiting'; readonly reason: string; readonly message: string | undefined }
  | { readonly kind: 'running'; readonly id: string; readonly startedAt: Date }
  | Terminated;

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class ContainerRunner {
  #state: State = { kind: 'waiting', reason: 'ContainerCreating', message: undefined };
  #last: Terminated | undefined;
  #restarts = 0;
  /** Consecutive exits, for the back-off. */
  #failures = 0;
  #ready = false;
  #child: ChildProcess | undefined;
  #probes: AbortController | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopping = false;
  #where: { sandbox: Sandbox; podIp: string } | undefined;

  constructor(
    readonly def: ContainerDef,
    private readonly o: ContainerOptions,
  ) {}

  get name(): string {
    return this.def.name;
  }

  /** Has run at least once. */
  get started(): boolean {
    return this.#state.kind !== 'waiting' || this.#last !== undefined;
  }

  /** Exited for good: the restart policy will not start it again. */
  get finished(): Terminated | undefined {
    return this.#state.kind === 'terminated' ? this.#state : undefined;
  }

  get ready(): boolean {
    return this.#ready;
  }

  /** Why the container cannot be created yet (shown while it waits). */
  set creationProblem(message: string | undefined) {
    if (this.#state.kind === 'waiting' && this.#state.reason === 'ContainerCreating') {
      this.#state = { kind: 'waiting', reason: 'ContainerCreating', message };
    }
  }

  /** Starts the container in the pod's sandbox. */
  run(sandbox: Sandbox, podIp: string): void {
    this.#where = { sandbox, podIp };
    this.#start();
  }

  /** The container's environment: PATH, HOSTNAME, then `env` with $(VAR) references and fieldRefs resolved. */
  env(): Record<string, string> {
    const pod = this.o.pod;
    const env: Record<string, string> = { PATH: DEFAULT_PATH, HOSTNAME: pod.hostname, HOME: '/root' };
    for (const e of this.def.env)
      env[e.name] = 'value' in e ? expand(e.value, env) : this.#field(e.fieldPath);
    return env;
  }

  /** Stops the process: SIGTERM to its process group, SIGKILL after `graceMs`. It is not restarted. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    this.#probes?.abort();
    if (this.#child !== undefined) await stopGroup(this.#child, graceMs);
  }

  status(): ContainerStatus {
    const current = this.#state.kind === 'waiting' ? this.#last : this.#state;
    return {
      name: this.def.name,
      state: toK8s(this.#state),
      lastState: this.#last === undefined ? {} : toK8s(this.#last),
      ready: this.#ready,
      restartCount: this.#restarts,
      image: this.def.image,
      imageID: '',
      ...(current === undefined ? {} : { containerID: `hypha://${current.id}` }),
      started: this.#state.kind === 'running',
    };
  }

  #start(): void {
    const where = this.#where;
    if (this.#stopping || where === undefined) return;
    const id = randomBytes(32).toString('hex');
    const env = this.env();
    const argv = this.def.argv?.map((a) => expand(a, env)) ?? this.#builtin();
    const log = openSync(this.o.logFile, 'a');
    let child: ChildProcess;
    try {
      child = where.sandbox.spawn(argv, {
        env,
        stdout: log,
        ...(this.def.workingDir === undefined ? {} : { workingDir: this.def.workingDir }),
      });
    } finally {
      closeSync(log);
    }
    const startedAt = new Date();
    this.#child = child;
    this.#state = { kind: 'running', id, startedAt };
    child.once('exit', (code, signal) => this.#exited(child, id, startedAt, code, signal, undefined));
    child.once('error', (err) => exited(child) && this.#exited(child, id, startedAt, null, null, err));
    const probes = new AbortController();
    this.#probes = probes;
    // Probes run as the kubelet runs them: in the container, with its environment.
    const run = (a: readonly string[], timeoutMs: number) =>
      execFile(where.sandbox.enter(a, this.def.workingDir), { env, timeoutMs });
    void watchReadiness(
      this.def.readiness,
      where.podIp,
      run,
      (ready) => {
        if (probes.signal.aborted || this.#ready === ready) return;
        this.#ready = ready;
        this.o.changed();
      },
      probes.signal,
    );
    this.o.changed();
  }

  #exited(
    child: ChildProcess,
    id: string,
    startedAt: Date,
    code: number | null,
    signal: NodeJS.Signals | null,
    error: Error | undefined,
  ): void {
    if (this.#child !== child) return;
    this.#child = undefined;
    if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
    this.#probes?.abort();
    this.#ready = false;
    const finishedAt = new Date();
    const signum = signal === null ? undefined : constants.signals[signal];
    const exitCode = code ?? 128 + (signum ?? 0);
    const done: Terminated = {
      kind: 'terminated',
      id,
      exitCode,
      signal: signum,
      reason: error !== undefined ? 'StartError' : exitCode === 0 ? 'Completed' : 'Error',
      message: error?.message,
      startedAt,
      finishedAt,
    };
    const policy = this.o.pod.restartPolicy;
    if (this.#stopping || policy === 'Never' || (policy === 'OnFailure' && exitCode === 0)) {
      this.#state = done;
      this.o.changed();
      return;
    }
    const { baseMs, maxMs } = this.o.backoff;
    // As the kubelet does, a container that ran well for a while starts its back-off afresh.
    if (finishedAt.getTime() - startedAt.getTime() > 2 * maxMs) this.#failures = 0;
    this.#failures++;
    const delay = this.#failures === 1 ? 0 : Math.min(baseMs * 2 ** (this.#failures - 2), maxMs);
    this.#last = done;
    const pod = this.o.pod;
    this.#state = {
      kind: 'waiting',
      reason: 'CrashLoopBackOff',
      message: `back-off ${formatDelay(delay)} restarting failed container=${this.def.name} pod=${pod.name}_${pod.namespace}(${pod.uid})`,
    };
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#restarts++;
      this.#start();
    }, delay);
    this.o.changed();
  }

  /** No command: a lab image "runs" the built-in HTTP server on its TCP ports, or just sleeps. */
  #builtin(): string[] {
    const ports = this.def.ports.filter((p) => p.protocol === 'TCP').map((p) => p.port);
    if (ports.length === 0) return ['sleep', 'infinity'];
    const pod = this.o.pod;
    const config = { pod: pod.name, namespace: pod.namespace, container: this.def.name, ports };
    return [this.o.builtin.node, this.o.builtin.script, JSON.stringify(config)];
  }

  #field(path: string): string {
    const pod = this.o.pod;
    const ip = this.#where?.podIp ?? '';
    switch (path) {
      case 'metadata.name':
        return pod.name;
      case 'metadata.namespace':
        return pod.namespace;
      case 'metadata.uid':
        return pod.uid;
      case 'spec.nodeName':
        return this.o.nodeName;
      case 'spec.serviceAccountName':
        return 'default';
      case 'status.podIP':
      case 'status.podIPs':
        return ip;
      case 'status.hostIP':
      case 'status.hostIPs':
        return this.o.hostIp ?? '';
    }
    const label = /^metadata\.labels\['([^']+)'\]$/.exec(path)?.[1];
    return label === undefined ? '' : (pod.labels[label] ?? '');
  }
}

/** Kubernetes' $(VAR) expansion: defined variables are replaced, `$$` is a literal `$`, the rest is kept. */
export function expand(text: string, env: Readonly<Record<string, string>>): string {
  return text.replace(/\$\$|\$\(([^)]*)\)/g, (match, name: string | undefined) => {
    if (name === undefined) return '$';
    return Object.hasOwn(env, name) ? (env[name] as string) : match;
  });
}

function toK8s(s: State): ContainerState {
  switch (s.kind) {
    case 'waiting':
      return { waiting: { reason: s.reason, ...(s.message === undefined ? {} : { message: s.message }) } };
    case 'running':
      return { running: { startedAt: timestamp(s.startedAt) } };
    case 'terminated':
      return {
        terminated: {
          exitCode: s.exitCode,
          ...(s.signal === undefined ? {} : { signal: s.signal }),
          reason: s.reason,
          ...(s.message === undefined ? {} : { message: s.message }),
          startedAt: timestamp(s.startedAt),
          finishedAt: timestamp(s.finishedAt),
          containerID: `hypha://${s.id}`,
        },
      };
  }
}

function formatDelay(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}
