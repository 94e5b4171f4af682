/** Failures of the namespace and link library. */

export interface NetErrorDetails {
  /** The argv that failed, e.g. `['ip', '-n', 'hyab', 'addr', 'add', ...]`. */
  readonly command?: readonly string[];
  readonly stderr?: string;
  /** Exit status, or null when the command was killed by a signal. */
  readonly code?: number | null;
  /** For a failed `ip -batch`: the 1-based line that failed; earlier lines took effect. */
  readonly line?: number;
}

/** An `ip` (or other) command failed, or cleanup left something behind. */
export class NetError extends Error {
  override name = 'NetError';
  readonly command: readonly string[] | undefined;
  readonly stderr: string;
  readonly code: number | null;
  readonly line: number | undefined;

  constructor(message: string, details: NetErrorDetails = {}, options?: ErrorOptions) {
    super(message, options);
    this.command = details.command;
    this.stderr = details.stderr ?? '';
    this.code = details.code ?? null;
    this.line = details.line;
  }

  /** `what: \`argv\` exited with N: stderr` */
  static commandFailed(
    what: string,
    command: readonly string[],
    result: { code: number | null; signal?: string | null; stderr: string },
    line?: number,
  ): NetError {
    const status =
      result.code === null ? `was killed by ${result.signal ?? 'a signal'}` : `exited with ${result.code}`;
    const stderr = result.stderr.trim();
    return new NetError(`${what}: \`${command.join(' ')}\` ${status}${stderr ? `: ${stderr}` : ''}`, {
      command,
      stderr: result.stderr,
      code: result.code,
      ...(line === undefined ? {} : { line }),
    });
  }
}
