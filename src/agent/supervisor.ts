/**
 * Child processes the agent keeps running: the L7 proxies. A proxy runs apart from the
 * agent so that its crash never takes down datapath management; the supervisor restarts
 * it with a growing back-off and tells its owner when it is up (so state can be pushed
 * again) and when it is down (so traffic that needs it can be refused).
 *
 * The child runs one `hypha` command on the same Node.js, from the light entry that loads
 * only that command's module (src/cli/child.ts), or a native executable, with an IPC
 * channel (Node.js's: JSON lines on the descriptor NODE_CHANNEL_FD names): it sends
 * `{ type: 'ready' }` once it serves, and any other message is handed to `onMessage`.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/src/agent/supervisor.js -> dist/src/cli/child.js */
const CHILD_MAIN = join(dirname(fileURLToPath(import.meta.url)), '../cli/child.js');

export interface ChildOptions {
  /** For logs: "http-proxy". */
  name: string;
  /** Arguments after `hypha`, e.g. ['proxy', 'http', '--port', '10080']. */
  args: string[];
  /** The CLI module that has the command (e.g. 'proxy-http'), the only one the child loads. */
  module: string;
  /** Runs this executable with `args` instead (no Node.js), e.g. dist/native/hypha-http-proxy. */
  executable?: string;
  /** The child said it serves; push it its state now (again, after a restart). */
  onReady?(send: (msg: unknown) => boolean): void;
  onMessage?(msg: unknown): void;
  /** The child is gone; a restart is scheduled unless the supervisor is closing. */
  onDown?(reason: string): void;
  log?(line: string): void;
  /** First restart delay (ms); doubles per consecutive failure up to `maxBackoffMs`. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

export class Supervisor {
  readonly #o: ChildOptions;
  #child: ChildProcess | undefined;
  #ready = false;
  #closing = false;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #restarts = 0;

  constructor(options: ChildOptions) {
    this.#o = options;
  }

  /** Whether the child is running and has said it is ready. */
  get ready(): boolean {
    return this.#ready;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get restarts(): number {
    return this.#restarts;
  }

  start(): void {
    if (this.#child || this.#closing) return;
    const stdio = ['ignore', 'inherit', 'inherit', 'ipc'] as const;
    const child = this.#o.executable
      ? spawn(this.#o.executable, this.#o.args, { stdio: [...stdio] })
      : fork(CHILD_MAIN, [this.#o.module, ...this.#o.args], { stdio: [...stdio] });
    this.#child = child;
    // The child must not keep its owner alive: an agent that fails or stops exits, and the
    // child follows when the channel closes.
    child.unref();
    child.channel?.unref();
    child.on('message', (msg: unknown) => {
      if ((msg as { type?: unknown } | null)?.type === 'ready') {
        this.#ready = true;
        this.#failures = 0;
        this.#o.onReady?.((m) => this.send(m));
        return;
      }
      this.#o.onMessage?.(msg);
    });
    child.on('error', (err) => this.#o.log?.(`${this.#o.name}: ${err.message}`));
    child.on('exit', (code, signal) => {
      if (this.#child !== child) return;
      this.#child = undefined;
      this.#ready = false;
      const reason = signal ? `killed by ${signal}` : `exited with ${code}`;
      this.#o.onDown?.(reason);
      if (this.#closing) return;
      const base = this.#o.backoffMs ?? 100;
      const delay = Math.min(this.#o.maxBackoffMs ?? 5_000, base * 2 ** Math.min(this.#failures, 10));
      this.#failures++;
      this.#o.log?.(`${this.#o.name} ${reason}; restarting in ${delay} ms`);
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#restarts++;
        this.start();
      }, delay);
      this.#timer.unref();
    });
  }

  /** Sends a message if the child is up; false when it is not (the next onReady resends state). */
  send(msg: unknown): boolean {
    const c = this.#child;
    if (!c?.connected) return false;
    try {
      return c.send(msg as object);
    } catch {
      return false;
    }
  }

  /** Stops the child (SIGTERM, then SIGKILL after `graceMs`) and any pending restart. */
  async close(graceMs = 2_000): Promise<void> {
    this.#closing = true;
    if (this.#timer) clearTimeout(this.#timer);
    const c = this.#child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => c.kill('SIGKILL'), graceMs);
      c.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      c.kill('SIGTERM');
    });
  }
}
