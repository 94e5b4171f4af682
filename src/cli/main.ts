import { parseArgs } from 'node:util';
import { errorMessage, UsageError } from '../errors.js';
import type { Command, OptionSpec, OptionValues } from './command.js';
import { commands } from './commands/index.js';

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', description: 'show help' };

function findCommand(argv: readonly string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const c of commands) {
    if (c.path.length > argv.length) continue;
    if (!c.path.every((w, i) => argv[i] === w)) continue;
    if (!best || c.path.length > best.path.length) best = c;
  }
  return best ? { command: best, rest: argv.slice(best.path.length) } : undefined;
}

function commandHelp(c: Command): string {
  const lines = [`Usage: hypha ${c.path.join(' ')}${c.args ? ` ${c.args}` : ''} [flags]`, '', c.summary, ''];
  const opts = Object.entries({ ...c.options, help: HELP_OPTION });
  if (opts.length) lines.push('Flags:');
  for (const [name, o] of opts) {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` <${o.value ?? 'value'}>` : ''}`;
    lines.push(`  ${flag.padEnd(34)} ${o.description}`);
  }
  return lines.join('\n') + '\n';
}

function mainHelp(prefix: readonly string[] = []): string {
  const matching = commands.filter((c) => prefix.every((w, i) => c.path[i] === w));
  const width = Math.max(0, ...matching.map((c) => c.path.join(' ').length));
  const rows = [...matching]
    .sort((a, b) => a.path.join(' ').localeCompare(b.path.join(' ')))
    .map((c) => `  ${c.path.join(' ').padEnd(width)}   ${c.summary}`);
  return [
    'Hypha: eBPF networking, security and observability for Kubernetes.',
    '',
    `Usage: hypha ${prefix.length ? prefix.join(' ') + ' ' : ''}<command> [flags]`,
    '',
    'Commands:',
    ...rows,
    '',
    "Run 'hypha <command> --help' for a command's flags.",
    '',
  ].join('\n');
}

export async function main(argv: readonly string[]): Promise<number> {
  const { stdout, stderr } = process;
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    stdout.write(mainHelp());
    return 0;
  }
  const found = findCommand(argv);
  if (!found) {
    // A known group without a subcommand ("hypha bpf") lists that group.
    const group = argv.filter((a) => !a.startsWith('-'));
    for (let n = group.length; n > 0; n--) {
      const prefix = group.slice(0, n);
      if (commands.some((c) => prefix.every((w, i) => c.path[i] === w))) {
        stdout.write(mainHelp(prefix));
        return argv.includes('--help') || argv.includes('-h') ? 0 : 2;
      }
    }
    stderr.write(`hypha: unknown command "${argv.join(' ')}"\n\n${mainHelp()}`);
    return 2;
  }
  const { command, rest } = found;
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

// `hypha observe -o json | head -5`: when the reader goes away, stop quietly as a pipeline expects.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`hypha: ${errorMessage(err)}\n`);
    process.exitCode = 1;
  },
);
