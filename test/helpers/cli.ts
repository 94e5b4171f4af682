/** A `hypha` command run in this process, as the CLI runs it, with its output captured. */
import { PassThrough } from 'node:stream';
import type { Command, OptionValues } from '../../src/cli/command.js';

/**
 * Runs the command at `path` (e.g. 'fqdn cache list') from `commands` with parsed flag
 * `values` or, for commands that parse their own, `positionals`; stdout and stderr together.
 */
export async function runCommand(
  commands: readonly Command[],
  path: string,
  o: { values?: OptionValues; positionals?: string[] } = {},
): Promise<{ code: number; out: string }> {
  const command = commands.find((c) => c.path.join(' ') === path);
  if (!command) throw new Error(`no command "${path}"`);
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const code = await command.run({
    values: o.values ?? {},
    positionals: o.positionals ?? [],
    stdout: out,
    stderr: out,
    signal: new AbortController().signal,
  });
  return { code: code ?? 0, out: Buffer.concat(chunks).toString() };
}
