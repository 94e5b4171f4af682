import type { Writable } from 'node:stream';
import { UsageError } from '../errors.js';

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
  /** The command parses its own arguments (given as `positionals`); `options` only document them. */
  rawArgs?: boolean;
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

/** `-o table|json`, shared by every command that prints data. */
export const OUTPUT_OPTION: OptionSpec = {
  type: 'string',
  short: 'o',
  value: 'format',
  description: 'output: table (default) or json',
};

/** The agent's API socket. */
export const SOCKET_OPTION: OptionSpec = {
  type: 'string',
  value: 'path',
  description: 'agent API socket (default /var/run/hypha/<node>/agent.sock, or HYPHA_AGENT_SOCKET)',
};

/** Whether `-o json` was asked for; anything but table or json is a usage error. */
export function wantsJson(values: OptionValues): boolean {
  const o = (values.output as string | undefined) ?? 'table';
  if (o !== 'table' && o !== 'json') throw new UsageError(`--output: "${o}" is not table or json`);
  return o === 'json';
}
