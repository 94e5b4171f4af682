/** Running `ip` and other commands: async with captured output, and sync for exit-time cleanup. */
import { spawn, spawnSync } from 'node:child_process';
import { NetError } from './errors.js';

export interface ExecOptions {
  /** Written to the command's stdin. */
  readonly input?: string;
  /** Killed with SIGKILL after this long. */
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly signal?: AbortSignal;
  /** Throw a NetError when the command exits non-zero (default false: return the result). */
  readonly check?: boolean;
}

export interface ExecResult {
  /** Exit status, or null when killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function execFile(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new TypeError('execFile: empty argv');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env,
      cwd: opts.cwd,
      signal: opts.signal,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    // EPIPE when the command exits without reading stdin is not our failure.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
    const timer =
      opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(
        new NetError(`\`${argv.join(' ')}\` could not run: ${e.message}`, { command: argv }, { cause: e }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = {
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      };
      if (opts.check && code !== 0) reject(NetError.commandFailed(cmd, argv, result));
      else resolve(result);
    });
  });
}

/** `ip [-n ns] args...`; returns stdout, throws NetError naming `what` on failure. */
export async function ip(
  what: string,
  ns: string | undefined,
  args: readonly string[],
  input?: string,
): Promise<string> {
  const argv = ns === undefined ? ['ip', ...args] : ['ip', '-n', ns, ...args];
  const result = await execFile(argv, input === undefined ? {} : { input });
  if (result.code !== 0) throw NetError.commandFailed(what, argv, result);
  return result.stdout;
}

/** `ip -j ...` parsed; an empty answer is an empty list. */
export async function ipJson<T>(what: string, ns: string | undefined, args: readonly string[]): Promise<T[]> {
  const out = await ip(what, ns, ['-j', ...args]);
  if (out.trim() === '') return [];
  const parsed: unknown = JSON.parse(out);
  return parsed as T[];
}

/**
 * Runs lines through one `ip -batch -`. Without `force`, ip stops at the first failing line;
 * the error's `line` (1-based) tells how many lines took effect.
 */
export async function ipBatch(
  what: string,
  ns: string | undefined,
  lines: readonly string[],
  force = false,
): Promise<void> {
  if (lines.length === 0) return;
  const argv = ['ip', ...(ns === undefined ? [] : ['-n', ns]), ...(force ? ['-force'] : []), '-batch', '-'];
  const result = await execFile(argv, { input: lines.join('\n') + '\n' });
  if (result.code === 0) return;
  const failedLine = Number(/Command failed -:(\d+)/.exec(result.stderr)?.[1] ?? 0);
  const line = lines[failedLine - 1];
  const err = NetError.commandFailed(
    line === undefined ? what : `${what}: line ${failedLine} "${line}"`,
    argv,
    result,
    line === undefined ? undefined : failedLine,
  );
  throw err;
}

/** Synchronous batch for exit handlers, where nothing async runs any more. Errors are ignored. */
export function ipBatchSync(ns: string | undefined, lines: readonly string[]): void {
  if (lines.length === 0) return;
  const argv = [...(ns === undefined ? [] : ['-n', ns]), '-force', '-batch', '-'];
  spawnSync('ip', argv, { input: lines.join('\n') + '\n', stdio: ['pipe', 'ignore', 'ignore'] });
}

/** Runs `fn` over `items` with at most `limit` in flight; rejects with the first error after all settle. */
export async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (e) {
        errors.push(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
}
