import type { Writable } from 'node:stream';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  default?: string | boolean | string[];
  /** Shown in `--help`; for string options, `<value>` names the argument. */
  description: string;
  value?: string;
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export interface CommandContext {
  values: OptionValues;
  positionals: string[];
  stdout: Writable;
  stderr: Writable;
  /** Aborted on SIGINT/SIGTERM so long-running commands can stop cleanly. */
  signal: AbortSignal;
}

/**
 * One subcommand. `path` is the words after `hypha`; the CLI picks the longest path
 * that prefixes the command line and parses the rest strictly against `options`.
 */
export interface Command {
  path: readonly string[];
  summary: string;
  /** Positional arguments, as shown in usage, e.g. `<endpoint-id>`. */
  args?: string;
  options?: Record<string, OptionSpec>;
  run(ctx: CommandContext): Promise<number | undefined> | number | undefined;
}

/** Writes rows as aligned columns, the way `cilium-dbg` prints its tables. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('   ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}
