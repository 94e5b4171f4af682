import { errorMessage } from '../errors.js';
import type { Command } from './command.js';
import { commands } from './commands/index.js';
import { runCommand } from './run.js';

function findCommand(argv: readonly string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const c of commands) {
    if (c.path.length > argv.length) continue;
    if (!c.path.every((w, i) => argv[i] === w)) continue;
    if (!best || c.path.length > best.path.length) best = c;
  }
  return best ? { command: best, rest: argv.slice(best.path.length) } : undefined;
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
  return runCommand(found.command, found.rest);
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
