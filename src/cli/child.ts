/**
 * The entry of the agent's supervised children (the L7 proxies): `child.js <module> <args>`
 * loads that one command module, not the whole CLI, so each proxy process carries only
 * what it runs (about 30 MB less per process than `hypha proxy ...`). Same flags, same
 * errors and exit codes as the `hypha` command.
 */
import { errorMessage } from '../errors.js';
import type { Command } from './command.js';
import { runCommand } from './run.js';

const MODULES: Record<string, () => Promise<readonly Command[]>> = {
  'proxy-http': async () => (await import('./commands/proxy-http.js')).proxyHttpCommands,
  'proxy-dns': async () => (await import('./commands/proxy-dns.js')).proxyDnsCommands,
};

async function child(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  const load = name ? MODULES[name] : undefined;
  if (!load) {
    process.stderr.write(
      `hypha child: unknown module "${name ?? ''}" (${Object.keys(MODULES).join(', ')})\n`,
    );
    return 2;
  }
  const commands = await load();
  const command = commands.find((c) => c.path.every((w, i) => rest[i] === w));
  if (!command) {
    process.stderr.write(`hypha child: ${name} has no command "${rest.join(' ')}"\n`);
    return 2;
  }
  return runCommand(command, rest.slice(command.path.length));
}

// Once the command is over the process ends: the agent's IPC channel, left open, would
// keep it alive (a stopped proxy that still looks up to its supervisor).
child(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`hypha: ${errorMessage(err)}\n`);
      process.exitCode = 1;
    },
  )
  .finally(() => {
    if (process.connected) process.disconnect();
  });
