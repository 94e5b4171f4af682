/**
 * Runs one command with its arguments: parses its flags strictly (a bad one is a usage
 * error naming it, exit 2), aborts its signal on SIGINT/SIGTERM, and turns its errors into
 * a message and an exit code. Shared by the CLI and the light entry of supervised children.
 */
import { parseArgs } from 'node:util';
import { errorMessage, UsageError } from '../errors.js';
import type { Command, OptionSpec, OptionValues } from './command.js';

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', description: 'show help' };

export function commandHelp(c: Command): string {
  const lines = [`Usage: hypha ${c.path.join(' ')}${c.args ? ` ${c.args}` : ''} [flags]`, '', c.summary, ''];
  const opts = Object.entries({ ...c.options, help: HELP_OPTION });
  if (opts.length) lines.push('Flags:');
  for (const [name, o] of opts) {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` <${o.value ?? 'value'}>` : ''}`;
    lines.push(`  ${flag.padEnd(34)} ${o.description}`);
  }
  return lines.join('\n') + '\n';
}

export async function runCommand(command: Command, rest: string[]): Promise<number> {
  const { stdout, stderr } = process;
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // A command with its own flag grammar (hubble's, for observe) gets its arguments as they are.
    if (command.rawArgs) {
      if (rest.includes('--help') || rest.includes('-h')) {
        stdout.write(commandHelp(command));
        return 0;
      }
      return (await command.run({ values: {}, positionals: rest, stdout, stderr, signal: ac.signal })) ?? 0;
    }
    const parsed = parseArgs({
      args: rest,
      options: { ...command.options, help: HELP_OPTION } as NonNullable<
        Parameters<typeof parseArgs>[0]
      >['options'],
      allowPositionals: true,
      strict: true,
    });
    const values = parsed.values as OptionValues;
    const positionals = parsed.positionals;
    if (values.help) {
      stdout.write(commandHelp(command));
      return 0;
    }
    const code = await command.run({ values, positionals, stdout, stderr, signal: ac.signal });
    return code ?? 0;
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      stderr.write(`hypha ${command.path.join(' ')}: ${errorMessage(err)}\n\n${commandHelp(command)}`);
      return 2;
    }
    stderr.write(`hypha ${command.path.join(' ')}: ${errorMessage(err)}\n`);
    if (process.env.HYPHA_DEBUG && err instanceof Error && err.stack) stderr.write(err.stack + '\n');
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
